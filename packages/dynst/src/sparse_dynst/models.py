"""Small reference forecasters for the synthetic tasks (any ``nn.Module`` works with DynST).

* `GridConvForecaster`: time folded into channels, a stack of circular-padded 2-D
  convolutions (periodic domain), unfolded back to ``(B, T_out, C, H, W)``. A SimVP-lite.
* `GraphForecaster`: per-node temporal encoder (a Linear over the ``T·C`` history), a few
  message-passing rounds with separate weights for the node itself, its in- and out-neighbours
  (so direction can be learned from a symmetric graph), and a per-node decoder to
  ``(B, T_out, N, C)``. A GraphWaveNet-lite without the temporal convolutions.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["GraphForecaster", "GridConvForecaster"]


class GridConvForecaster(nn.Module):
    """2-D ConvNet forecaster on ``(B, T_in, C, H, W)`` → ``(B, T_out, C, H, W)``.

    Args:
        t_in: Input frames.
        t_out: Output frames.
        channels: Channels per frame ``C``.
        hidden: Hidden feature maps.
        layers: Convolutions (≥ 2).
        kernel: Odd kernel size (receptive radius ``layers·(kernel−1)/2``).
    """

    def __init__(
        self,
        t_in: int,
        t_out: int,
        channels: int = 1,
        hidden: int = 16,
        layers: int = 4,
        kernel: int = 3,
    ) -> None:
        super().__init__()
        if layers < 2 or kernel % 2 == 0:
            raise ValueError(f"need layers >= 2 and an odd kernel, got {layers}, {kernel}")
        self.t_out, self.channels = t_out, channels
        pad = kernel // 2
        mods: list[nn.Module] = []
        width = t_in * channels
        for _ in range(layers - 1):
            mods += [nn.Conv2d(width, hidden, kernel, padding=pad, padding_mode="circular")]
            mods += [nn.GELU()]
            width = hidden
        mods.append(
            nn.Conv2d(width, t_out * channels, kernel, padding=pad, padding_mode="circular")
        )
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Forecast ``t_out`` frames."""
        b, t, c, h, w = x.shape
        out = self.net(x.reshape(b, t * c, h, w))
        return out.reshape(b, self.t_out, self.channels, h, w)


class GraphForecaster(nn.Module):
    """Message-passing forecaster on ``(B, T_in, N, C)`` → ``(B, T_out, N, C)``.

    Args:
        adjacency: ``(N, N)`` adjacency (non-negative; normalised by in-degree here).
        t_in: Input frames.
        t_out: Output frames.
        channels: Channels per node ``C``.
        hidden: Hidden width.
        rounds: Message-passing rounds.
    """

    def __init__(
        self,
        adjacency: torch.Tensor,
        t_in: int,
        t_out: int,
        channels: int = 1,
        hidden: int = 32,
        rounds: int = 2,
    ) -> None:
        super().__init__()
        adj = adjacency.detach().to(torch.float32)
        if adj.dim() != 2 or adj.shape[0] != adj.shape[1]:
            raise ValueError(f"adjacency must be (N, N), got {tuple(adj.shape)}")
        self.register_buffer("a_in", adj / adj.sum(1, keepdim=True).clamp_min(1))
        self.register_buffer("a_out", adj.T / adj.T.sum(1, keepdim=True).clamp_min(1))
        self.t_out, self.channels = t_out, channels
        self.encode = nn.Linear(t_in * channels, hidden)
        self.self_w = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(rounds))
        self.in_w = nn.ModuleList(nn.Linear(hidden, hidden, bias=False) for _ in range(rounds))
        self.out_w = nn.ModuleList(nn.Linear(hidden, hidden, bias=False) for _ in range(rounds))
        self.decode = nn.Linear(hidden, t_out * channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Forecast ``t_out`` frames at every node."""
        b, t, n, c = x.shape
        h = torch.relu(self.encode(x.permute(0, 2, 1, 3).reshape(b, n, t * c)))
        for w_self, w_in, w_out in zip(self.self_w, self.in_w, self.out_w, strict=True):
            h = torch.relu(w_self(h) + w_in(self.a_in @ h) + w_out(self.a_out @ h)) + h
        out = self.decode(h).reshape(b, n, self.t_out, self.channels)
        return out.permute(0, 2, 1, 3)

"""The patch-wise INR of NIRVANA and the NeRV-style per-video baseline network.

Paper: Maiya et al., "NIRVANA", CVPR 2023, arXiv 2212.14593, Fig. 2: "several SIREN MLP layers
followed by an upsampling block. It takes patch coordinates as inputs and outputs patches across
a group of G frames" [paper, checked on the project page and the review's figure caption].

`PatchINR` [paper structure, recon sizes]: the centre ``(x, y) ∈ [−1, 1]²`` of each ``p × p``
patch → Fourier positional encoding (``sin/cos(2^k π x)``, k < ``freqs``, plus the raw
coordinates) → ``depth`` SIREN layers (``sin(ω·(Wx + b))``, ω₀ = 30 on the first layer, 1 after,
Sitzmann et al.'s uniform initialisation) → a linear map to ``up_channels × (p/2)²`` features →
3×3 conv to ``3·G·4`` channels → pixel-shuffle ×2 → the ``p × p`` patch of all ``G`` frames
(plus 0.5, so that a zero network outputs mid-grey). Every weight is a plain ``nn.Linear`` /
``nn.Conv2d`` (the sine is a separate module), so `NirvanaQuantization` sees ordinary layers.

`NeRVNet` [recon, after Chen et al., "NeRV", NeurIPS 2021]: frame index ``t/(T−1)`` → Fourier
encoding → GELU MLP → features on an ``(H/4) × (W/4)`` grid → two (3×3 conv → pixel-shuffle ×2)
stages with GELU between → all frames of the video from one network.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sparsecore.validation import check_int

__all__ = ["NeRVNet", "PatchINR", "Sine", "fourier", "patch_coords"]


class Sine(nn.Module):
    """``sin(ω·x)``."""

    def __init__(self, omega: float) -> None:
        super().__init__()
        self.omega = float(omega)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return torch.sin(self.omega * x)


def fourier(x: torch.Tensor, freqs: int) -> torch.Tensor:
    """``[x, sin(2^k π x), cos(2^k π x)]`` for k < ``freqs`` along the last dim."""
    parts = [x]
    for k in range(freqs):
        parts += [torch.sin((2**k) * math.pi * x), torch.cos((2**k) * math.pi * x)]
    return torch.cat(parts, -1)


def patch_coords(height: int, width: int, patch: int) -> torch.Tensor:
    """Centres of the ``(height/p)·(width/p)`` patches in [−1, 1]², row-major, ``(N, 2)``."""
    ny, nx = height // patch, width // patch
    ys = (torch.arange(ny).float() + 0.5) / ny * 2 - 1
    xs = (torch.arange(nx).float() + 0.5) / nx * 2 - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx.flatten(), gy.flatten()], 1)


class PatchINR(nn.Module):
    """Patch coordinates → a ``p × p`` patch of ``G`` frames (module docstring).

    Args:
        group: Frames per group ``G``.
        patch: Patch side ``p`` (even).
        width: SIREN width.
        depth: Number of SIREN layers (>= 1).
        freqs: Fourier frequencies of the coordinate encoding.
        up_channels: Channels before the upsampling conv.
        seed: Initialisation seed.
    """

    def __init__(
        self, group: int = 4, patch: int = 8, width: int = 32, depth: int = 2, freqs: int = 3,
        up_channels: int = 8, seed: int = 0,
    ) -> None:  # fmt: skip
        super().__init__()
        for name, value in (("group", group), ("patch", patch), ("width", width),
                            ("depth", depth), ("up_channels", up_channels)):  # fmt: skip
            check_int(value, name, 1)
        check_int(freqs, "freqs", 0)
        if patch % 2:
            raise ValueError(f"patch must be even, got {patch}")
        self.group, self.patch, self.freqs, self.up = group, patch, freqs, up_channels
        g = torch.Generator().manual_seed(seed)
        layers: list[nn.Module] = []
        fan_in = 2 + 4 * freqs
        for i in range(depth):
            lin = nn.Linear(fan_in, width)
            omega = 30.0 if i == 0 else 1.0
            bound = 1.0 / fan_in if i == 0 else math.sqrt(6.0 / fan_in)
            with torch.no_grad():
                lin.weight.uniform_(-bound, bound, generator=g)
                lin.bias.uniform_(-1.0 / math.sqrt(fan_in), 1.0 / math.sqrt(fan_in), generator=g)
            layers += [lin, Sine(omega)]
            fan_in = width
        self.siren = nn.Sequential(*layers)
        half = patch // 2
        self.head = nn.Linear(width, up_channels * half * half)
        self.conv = nn.Conv2d(up_channels, 3 * group * 4, 3, padding=1)
        for m in (self.head, self.conv):
            with torch.no_grad():
                b = 1.0 / math.sqrt(m.weight[0].numel())
                m.weight.uniform_(-b, b, generator=g)
                m.bias.zero_()
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        """``(N, 2)`` patch centres → ``(N, G, 3, p, p)``."""
        h = self.siren(fourier(coords, self.freqs))
        half = self.patch // 2
        h = self.head(h).view(-1, self.up, half, half)
        out = self.shuffle(self.conv(h))  # (N, 3G, p, p)
        return out.view(-1, self.group, 3, self.patch, self.patch) + 0.5


def assemble(patches: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(N, G, 3, p, p)`` row-major patches → ``(G, 3, height, width)`` frames."""
    _, g, c, p, _ = patches.shape
    ny, nx = height // p, width // p
    x = patches.view(ny, nx, g, c, p, p).permute(2, 3, 0, 4, 1, 5)
    return x.reshape(g, c, ny * p, nx * p)


class NeRVNet(nn.Module):
    """Frame index → a whole frame (NeRV-style baseline, module docstring)."""

    def __init__(
        self, frames: int, size: int = 32, width: int = 64, freqs: int = 6, channels: int = 16,
        seed: int = 0,
    ) -> None:  # fmt: skip
        super().__init__()
        check_int(frames, "frames", 1)
        check_int(width, "width", 1)
        check_int(channels, "channels", 1)
        if size % 4:
            raise ValueError(f"size must be a multiple of 4, got {size}")
        torch.manual_seed(seed)
        self.frames, self.size, self.freqs, self.channels = frames, size, freqs, channels
        q = size // 4
        self.mlp = nn.Sequential(
            nn.Linear(1 + 2 * freqs, width), nn.GELU(), nn.Linear(width, channels * q * q)
        )
        self.up1 = nn.Conv2d(channels, channels * 4 // 2, 3, padding=1)
        self.up2 = nn.Conv2d(channels // 2, 3 * 4, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)
        self.act = nn.GELU()

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """``(T,)`` frame indices → ``(T, 3, size, size)``."""
        x = (t.float() / max(self.frames - 1, 1))[:, None] * 2 - 1
        q = self.size // 4
        h = self.mlp(fourier(x, self.freqs)).view(-1, self.channels, q, q)
        h = self.act(self.shuffle(self.up1(h)))
        return self.shuffle(self.up2(h)) + 0.5

"""HollowNeRF's coarse trainable 3-D saliency grid, ``m = sigmoid(logits)`` in ``[0, 1]``.

Paper: Xie, Gherardi, Pan & Huang, "HollowNeRF: Pruning Hashgrid-Based NeRFs with Trainable
Collision Mitigation", ICCV 2023 (arXiv 2308.10122). No official code and no full text were
found; labels: [issue/summary] = stated by the paper's description and two independent summaries
(as relayed in issue 23), [reconstructed] = our choice where those leave it open.

* The saliency is the sigmoid of a trainable coarse 3-D grid, so it lies in ``[0, 1]``
  [issue/summary]. The trainable tensor is ``values`` (the logits; the masked tensor of the
  method) on ``R**3`` vertices spanning ``[0, 1]^3`` (vertex ``i`` at ``i / (R - 1)``)
  [reconstructed]. The vertex saliency is ``m_v = alive_v · sigmoid(values_v)``; ``alive`` is a
  persistent 0/1 buffer that the method's hard prune sets, because a sigmoid never reaches 0 and
  a masked (zeroed) logit would read as 0.5 [reconstructed]. The buffer lives in the model, so it
  is saved with the ``state_dict`` and broadcast/averaged like any model state.
* ``s(x)`` interpolates ``m`` trilinearly [reconstructed]. ``s(x) = 0`` exactly iff every corner
  with a non-zero trilinear weight is pruned; that is the test used to skip samples.
* Initial logits ``init`` (default 2.0, ``m ≈ 0.88``): the tanh density gate
  (`HashNeRF`) is then nearly open, so an untrained HollowNeRF behaves like the plain hash grid
  [reconstructed].
"""

from __future__ import annotations

import torch
from torch import nn

from sparsecore.validation import check_int, check_number

__all__ = ["SaliencyGrid"]


class SaliencyGrid(nn.Module):
    """Dense ``R x R x R`` grid of saliency logits; ``s(x)`` in ``[0, 1]``, trilinearly read.

    Args:
        resolution: Vertices per axis ``R`` (≥ 2).
        init: Initial logit of every vertex (saliency ``sigmoid(init)``).
    """

    def __init__(self, resolution: int = 16, init: float = 2.0) -> None:
        super().__init__()
        self.resolution = check_int(resolution, "resolution", 2)
        init = check_number(init, "init")
        self.values = nn.Parameter(torch.full((resolution,) * 3, float(init)))
        self.register_buffer("alive", torch.ones((resolution,) * 3))
        corners = torch.tensor([[(c >> 0) & 1, (c >> 1) & 1, (c >> 2) & 1] for c in range(8)])
        self.register_buffer("_corners", corners, persistent=False)

    def vertex_saliency(self) -> torch.Tensor:
        """``m = alive · sigmoid(values)``, shape ``(R, R, R)``, in ``[0, 1]``."""
        return self.alive.to(self.values.dtype) * torch.sigmoid(self.values)

    @torch.no_grad()
    def prune(self, keep: torch.Tensor) -> None:
        """Set ``alive`` to the bool mask ``keep`` (pruned vertices get saliency exactly 0)."""
        if keep.shape != self.values.shape or keep.dtype != torch.bool:
            raise ValueError(f"keep must be a bool tensor of shape {tuple(self.values.shape)}")
        self.alive.copy_(keep.to(self.alive.dtype))

    def corners(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat vertex indices and trilinear weights of the 8 corners of each point.

        Args:
            x: Points ``(N, 3)`` (clamped to ``[0, 1]^3``).

        Returns:
            ``(index, weight)``, both ``(N, 8)``.
        """
        r = self.resolution
        pos = x.clamp(0.0, 1.0) * (r - 1)
        base = torch.floor(pos).clamp(max=r - 2)
        frac = pos - base
        grid = base.to(torch.int64)[:, None, :] + self._corners[None]
        index = grid[..., 0] * r * r + grid[..., 1] * r + grid[..., 2]
        w = torch.where(self._corners[None].bool(), frac[:, None, :], 1 - frac[:, None, :])
        return index, w.prod(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Interpolated saliency ``s(x)`` in ``[0, 1]``, shape ``(N,)``."""
        if x.dim() != 2 or x.shape[-1] != 3:
            raise ValueError(f"x must have shape (N, 3), got {tuple(x.shape)}")
        index, weight = self.corners(x)
        vals = self.vertex_saliency().reshape(-1)[index]
        return (weight.to(vals.dtype) * vals).sum(-1)

    @torch.no_grad()
    def salient_cells(self) -> torch.Tensor:
        """Bool ``(R-1,)*3``: cells where ``s`` is non-zero somewhere (some corner is alive)."""
        nz = self.vertex_saliency() != 0
        cells = torch.zeros((self.resolution - 1,) * 3, dtype=torch.bool, device=nz.device)
        for c in self._corners.tolist():
            cells |= nz[
                c[0] : c[0] + self.resolution - 1,
                c[1] : c[1] + self.resolution - 1,
                c[2] : c[2] + self.resolution - 1,
            ]
        return cells

    def extra_repr(self) -> str:  # noqa: D102
        return f"resolution={self.resolution}"

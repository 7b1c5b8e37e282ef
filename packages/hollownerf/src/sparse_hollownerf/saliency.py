"""HollowNeRF's coarse trainable 3-D saliency grid.

Paper: Xie, Gherardi, Pan & Huang, "HollowNeRF: Pruning Hashgrid-Based NeRFs with Trainable
Collision Mitigation", ICCV 2023 (arXiv 2308.10122). No official code was found.

Choices ([reconstructed] where the paper's text was not available to check):

* The grid stores saliency values directly (not logits) on ``R**3`` vertices spanning
  ``[0, 1]^3`` (vertex ``i`` at ``i / (R - 1)``), read by trilinear interpolation. Values, not
  logits, because the ADMM projection and the final prune need *exact* zeros, and a sigmoid never
  reaches zero [reconstructed].
* Values start at 1, so an untrained HollowNeRF equals the plain hash-grid NeRF (the gate is the
  identity) [reconstructed]. They are otherwise unconstrained reals by default (see
  :class:`~sparse_hollownerf.HollowNeRF` ``clamp`` for why); ``clamp=True`` keeps them in
  ``[0, 1]``.
* ``s(x) = 0`` exactly iff every corner with a non-zero trilinear weight is zero; that is the
  test used to skip hash lookups.
"""

from __future__ import annotations

import torch
from torch import nn

from sparsecore.validation import check_int

__all__ = ["SaliencyGrid"]


class SaliencyGrid(nn.Module):
    """Dense ``R x R x R`` grid of trainable saliency values, trilinearly interpolated.

    Args:
        resolution: Vertices per axis ``R`` (≥ 2).
        init: Initial value of every vertex.
    """

    def __init__(self, resolution: int = 16, init: float = 1.0) -> None:
        super().__init__()
        self.resolution = check_int(resolution, "resolution", 2)
        self.values = nn.Parameter(torch.full((resolution,) * 3, float(init)))
        corners = torch.tensor([[(c >> 0) & 1, (c >> 1) & 1, (c >> 2) & 1] for c in range(8)])
        self.register_buffer("_corners", corners, persistent=False)

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
        """Interpolated saliency ``s(x)``, shape ``(N,)``."""
        if x.dim() != 2 or x.shape[-1] != 3:
            raise ValueError(f"x must have shape (N, 3), got {tuple(x.shape)}")
        index, weight = self.corners(x)
        vals = self.values.reshape(-1)[index]
        return (weight.to(vals.dtype) * vals).sum(-1)

    @torch.no_grad()
    def salient_cells(self) -> torch.Tensor:
        """Bool ``(R-1,)*3``: cells where ``s`` is non-zero somewhere (some corner is non-zero)."""
        nz = self.values != 0
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

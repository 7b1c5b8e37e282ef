"""Parameter accounting of hash tables: which entries can ever be read, and the stored size.

An entry of level ``l`` is *needed* if it is a corner of some level-``l`` cell that overlaps (with
positive volume) the region that is looked up: the unit cube for a plain hash grid, the salient
region ``{x : s(x) ≠ 0}`` (the union of saliency cells with a non-zero corner) for HollowNeRF.
This is computed exactly from geometry, not by sampling: the overlap of axis-aligned cells is
separable, so per axis a boolean matrix says which hash cells overlap which saliency cells, and
``needed_cells[a, b, c] = ∃ (i, j, k) salient with A[a, i] ∧ A[b, j] ∧ A[c, k]``.

Entries that are never needed can be dropped after pruning without changing any rendering: the
stored model is the needed entries plus the non-zero saliency values plus a bitmask of the
saliency grid (from which the needed set is recomputed, so no per-entry index is stored) plus the
MLP. `touched_entries` gives the empirical count for a set of sample points instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from sparse_hollownerf.hashgrid import HashEncoding
from sparse_hollownerf.saliency import SaliencyGrid

__all__ = ["EncodingBudget", "encoding_budget", "needed_entries", "touched_entries"]


def _overlap(encoding: HashEncoding, level: int, n_sal_cells: int | None) -> torch.Tensor:
    """Per-axis overlap of level cells with saliency cells (``(n_cells, n_sal)`` bool)."""
    scale = encoding.scales[level]
    n_cells = math.floor(scale + 0.5) + 1  # cells reachable from x in [0, 1]
    c = torch.arange(n_cells, dtype=torch.float64)
    lo = ((c - 0.5) / scale).clamp(0, 1)
    hi = ((c + 0.5) / scale).clamp(0, 1)
    if n_sal_cells is None:
        return (hi > lo)[:, None]
    j = torch.arange(n_sal_cells, dtype=torch.float64)
    slo, shi = j / n_sal_cells, (j + 1) / n_sal_cells
    return (torch.minimum(hi[:, None], shi[None]) > torch.maximum(lo[:, None], slo[None])) & (
        hi > lo
    )[:, None]


@torch.no_grad()
def needed_entries(
    encoding: HashEncoding, saliency: SaliencyGrid | None = None
) -> list[torch.Tensor]:
    """Per level, a bool over its table rows: rows some looked-up point can read.

    Args:
        encoding: The hash encoding.
        saliency: The gate (``None``: every point of the unit cube is looked up).
    """
    if saliency is None:
        region = torch.ones(1, 1, 1)
        n_sal = None
    else:
        region = saliency.salient_cells().to(torch.float64).cpu()
        n_sal = saliency.resolution - 1
    corners = encoding._corners.cpu()
    out = []
    for level in range(encoding.levels):
        a = _overlap(encoding, level, n_sal).to(torch.float64)
        cells = torch.einsum("ai,bj,ck,ijk->abc", a, a, a, region) > 0
        used = torch.zeros(encoding.sizes[level], dtype=torch.bool)
        idx = cells.nonzero()
        if idx.numel():
            verts = (idx[:, None, :] + corners[None]).reshape(-1, 3).unique(dim=0)
            used[encoding.level_index(verts, level)] = True
        out.append(used)
    return out


@torch.no_grad()
def touched_entries(encoding: HashEncoding, points: torch.Tensor) -> list[torch.Tensor]:
    """Per level, the rows read (with non-zero weight) when encoding ``points (N, 3)``."""
    rows, weights = encoding.corners(points.clamp(0, 1))
    out = []
    for level in range(encoding.levels):
        used = torch.zeros(encoding.sizes[level], dtype=torch.bool)
        r = rows[:, level][weights[:, level] > 0]
        used[r.cpu()] = True
        out.append(used)
    return out


@dataclass(frozen=True)
class EncodingBudget:
    """Stored size of an encoding.

    Attributes:
        table_entries: Rows allocated in the hash tables.
        needed_entries: Rows that can ever be read.
        hash_params: ``needed_entries × F`` (or the kept scalars of a masked table).
        saliency_params: Unpruned saliency vertices (0 without a gate).
        mlp_params: MLP parameters.
        params: ``hash_params + saliency_params`` (the encoding budget compared in benchmarks).
        bytes: fp32 bytes of the stored encoding + MLP, including bitmasks.
    """

    table_entries: int
    needed_entries: int
    hash_params: int
    saliency_params: int
    mlp_params: int
    params: int
    bytes: int


def encoding_budget(model: nn.Module, table_mask: torch.Tensor | None = None) -> EncodingBudget:
    """Budget of a `sparse_hollownerf.HashNeRF` (``table_mask``: kept table scalars).

    A masked table (magnitude pruning) stores its kept scalars plus a bitmask over the whole
    table; a gated table stores its needed rows (recomputable from the saliency bitmask).
    """
    encoding: HashEncoding = model.encoding
    saliency: SaliencyGrid | None = getattr(model, "saliency", None)
    needed = needed_entries(encoding, saliency)
    n_needed = int(sum(int(u.sum()) for u in needed))
    mlp = sum(p.numel() for p in model.mlp.parameters())
    if table_mask is not None:
        flat = torch.cat([u for u in needed])
        kept = table_mask.reshape(flat.numel(), -1)[flat].sum()
        hash_params = int(kept)
        extra_bytes = math.ceil(table_mask.numel() / 8)
    else:
        hash_params = n_needed * encoding.features
        extra_bytes = 0
    sal = 0
    if saliency is not None:
        sal = int((saliency.vertex_saliency() != 0).sum())
        extra_bytes += math.ceil(saliency.values.numel() / 8)
    params = hash_params + sal
    return EncodingBudget(
        sum(encoding.sizes),
        n_needed,
        hash_params,
        sal,
        mlp,
        params,
        4 * (params + mlp) + extra_bytes,
    )

"""An Instant-NGP multiresolution hash encoding in pure PyTorch, with lookups that can be skipped.

Paper: Müller, Evans, Schied & Keller, "Instant Neural Graphics Primitives with a Multiresolution
Hash Encoding", SIGGRAPH 2022 (arXiv 2201.05989); reference implementation: tiny-cuda-nn
(https://github.com/NVlabs/tiny-cuda-nn, ``include/tiny-cuda-nn/encodings/grid.h``), read for the
details below (none of its code is copied).

Choices (all follow tiny-cuda-nn's ``GridEncoding`` unless marked otherwise):

* Level ``l`` has ``scale_l = N_min * b**l - 1`` with ``b = exp((ln N_max - ln N_min) / (L - 1))``
  and ``res_l = ceil(scale_l) + 1`` vertices per axis. A point ``x`` in ``[0, 1]^3`` maps to
  ``pos = x * scale_l + 0.5``; its cell is ``floor(pos)`` and its 8 corners are ``floor(pos) +
  {0, 1}^3``, weighted trilinearly by the fractional part.
* Table rows per level: ``min(next_multiple(res_l**3, 8), T)``. When ``res_l**3 <= T`` the level
  is a dense grid indexed ``(x + y*res + z*res**2) mod size``; otherwise the spatial hash
  ``h(x) = (x*1 XOR y*2654435761 XOR z*805459861) mod 2**32 mod T`` (uint32 wrap-around, as in
  the CUDA code) is used. All levels share one parameter ``table`` of shape ``(sum of sizes, F)``,
  level ``l`` owning rows ``offsets[l]:offsets[l+1]``.
* Initialisation ``U(-1e-4, 1e-4)`` (paper, §4).
* Output: the ``L`` levels' interpolated features concatenated, level-major (``L * F`` values).
* Skipped lookups (for HollowNeRF): `HashEncoding.forward` takes an ``active`` mask. Only
  active points gather table rows; inactive points get exactly zero features and contribute
  nothing to any row's gradient (the gather's backward only scatters into rows it read). This is
  how "points with zero saliency neither read nor update hash entries" is implemented: not by a
  multiplication with zero, which would still read the rows.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sparsecore.validation import check_int

__all__ = ["PRIMES", "HashEncoding", "spatial_hash"]

#: tiny-cuda-nn's ``fast_hash`` primes for the first three dimensions.
PRIMES: tuple[int, int, int] = (1, 2654435761, 805459861)
_U32 = 0xFFFFFFFF


def spatial_hash(coords: torch.Tensor, size: int) -> torch.Tensor:
    """Instant-NGP's spatial hash of integer grid coordinates.

    Args:
        coords: Integer tensor ``(..., 3)`` of non-negative grid coordinates (< 2**16).
        size: Table size ``T`` (``> 0``).

    Returns:
        ``int64`` indices in ``[0, size)``, shape ``coords.shape[:-1]``: the XOR of
        ``coord_i * prime_i`` in uint32 arithmetic, modulo ``size``.
    """
    if coords.shape[-1] != 3 or coords.is_floating_point():
        raise ValueError(
            f"coords must be an integer tensor (..., 3), got {coords.dtype} {tuple(coords.shape)}"
        )
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    c = coords.to(torch.int64)
    h = (c[..., 0] * PRIMES[0]) & _U32
    h = h ^ ((c[..., 1] * PRIMES[1]) & _U32)
    h = h ^ ((c[..., 2] * PRIMES[2]) & _U32)
    return h % size


class HashEncoding(nn.Module):
    """Multiresolution hash encoding of points in ``[0, 1]^3``.

    Args:
        levels: Number of levels ``L``.
        features: Features per entry ``F``.
        table_size: Maximum rows per level ``T``.
        base_resolution: Coarsest resolution ``N_min`` (≥ 2).
        max_resolution: Finest resolution ``N_max`` (≥ ``base_resolution``).
        init_scale: Table entries start uniform in ``[-init_scale, init_scale]``.
        seed: Seed of the initialisation (``None``: torch's global generator).
    """

    def __init__(
        self,
        levels: int = 8,
        features: int = 2,
        table_size: int = 2**12,
        base_resolution: int = 4,
        max_resolution: int = 64,
        init_scale: float = 1e-4,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.levels = check_int(levels, "levels", 1)
        self.features = check_int(features, "features", 1)
        self.table_size = check_int(table_size, "table_size", 1)
        self.base_resolution = check_int(base_resolution, "base_resolution", 2)
        self.max_resolution = check_int(max_resolution, "max_resolution", base_resolution)
        if max_resolution > 2**15:
            raise ValueError(f"max_resolution must be <= 32768, got {max_resolution}")
        if not init_scale >= 0:
            raise ValueError(f"init_scale must be >= 0, got {init_scale}")
        growth = (
            1.0
            if levels == 1
            else math.exp((math.log(max_resolution) - math.log(base_resolution)) / (levels - 1))
        )
        self.growth = growth
        scales, resolutions, sizes, hashed = [], [], [], []
        for level in range(levels):
            scale = base_resolution * growth**level - 1.0
            res = math.ceil(scale) + 1
            dense = res**3
            size = min(-(-dense // 8) * 8, table_size)
            scales.append(scale)
            resolutions.append(res)
            sizes.append(size)
            hashed.append(dense > table_size)
        self.scales = scales
        self.resolutions = resolutions
        self.sizes = sizes
        self.hashed = hashed
        offsets = [0]
        for size in sizes:
            offsets.append(offsets[-1] + size)
        self.register_buffer("offsets", torch.tensor(offsets, dtype=torch.int64), persistent=False)
        self.register_buffer("_scale", torch.tensor(scales, dtype=torch.float32), persistent=False)
        gen = None if seed is None else torch.Generator().manual_seed(seed)
        table = (torch.rand(offsets[-1], features, generator=gen) * 2 - 1) * init_scale
        self.table = nn.Parameter(table)
        corners = torch.tensor(
            [[(c >> 0) & 1, (c >> 1) & 1, (c >> 2) & 1] for c in range(8)], dtype=torch.int64
        )
        self.register_buffer("_corners", corners, persistent=False)
        self.register_buffer("_primes", torch.tensor(PRIMES, dtype=torch.int64), persistent=False)
        strides = [[1, r, r * r] for r in resolutions]
        self.register_buffer("_strides", torch.tensor(strides, dtype=torch.int64), persistent=False)
        self.register_buffer("_sizes", torch.tensor(sizes, dtype=torch.int64), persistent=False)
        self._n_dense = sum(1 for h in hashed if not h)

    @property
    def output_dim(self) -> int:
        """``L * F``."""
        return self.levels * self.features

    def level_index(self, coords: torch.Tensor, level: int) -> torch.Tensor:
        """Row of integer grid vertices ``coords (..., 3)`` within level ``level``'s table.

        Dense levels: ``(x + y*res + z*res**2) mod size``; hashed levels: `spatial_hash`.
        """
        size = self.sizes[level]
        if self.hashed[level]:
            return spatial_hash(coords, size)
        res = self.resolutions[level]
        c = coords.to(torch.int64)
        return (c[..., 0] + c[..., 1] * res + c[..., 2] * res * res) % size

    def corners(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Local table rows and trilinear weights of the 8 corners, for every level.

        Corner ``c`` is the vertex ``floor(pos) + (c & 1, (c >> 1) & 1, (c >> 2) & 1)``.

        Args:
            x: Points ``(N, 3)`` in ``[0, 1]^3``.

        Returns:
            ``(rows, weights)``, both ``(N, L, 8)``: ``rows[n, l, c]`` lies in
            ``[0, sizes[l])``; the weights of a point and level sum to 1.
        """
        pos = x[:, None, :] * self._scale[None, :, None] + 0.5  # (N, L, 3)
        base = torch.floor(pos)
        frac = pos - base
        lo = base.to(torch.int64)
        axis = torch.stack([lo, lo + 1], -1)  # (N, L, 3, 2): per-axis vertex coordinates
        wax = torch.stack([1 - frac, frac], -1)  # (N, L, 3, 2): per-axis weights
        # Separable corners: combine per-axis terms by broadcasting to (N, L, z, y, x).
        weights = wax[:, :, 2, :, None, None] * wax[:, :, 1, None, :, None]
        weights = (weights * wax[:, :, 0, None, None, :]).flatten(2)
        # Levels are dense up to some level and hashed above it (resolution only grows), so each
        # index formula runs only on its own levels.
        nd = self._n_dense
        parts = []
        if nd > 0:
            dx = axis[:, :nd] * self._strides[None, :nd, :, None]
            dense = dx[:, :, 2, :, None, None] + dx[:, :, 1, None, :, None]
            dense = dense + dx[:, :, 0, None, None, :]
            parts.append(dense.flatten(2) % self._sizes[None, :nd, None])
        if nd < self.levels:
            hx = (axis[:, nd:] * self._primes[None, None, :, None]) & _U32
            hashed = hx[:, :, 2, :, None, None] ^ hx[:, :, 1, None, :, None]
            hashed = (hashed ^ hx[:, :, 0, None, None, :]).flatten(2)
            t = self.table_size
            parts.append(hashed & (t - 1) if t & (t - 1) == 0 else hashed % t)
        index = parts[0] if len(parts) == 1 else torch.cat(parts, 1)
        return index, weights

    def forward(self, x: torch.Tensor, active: torch.Tensor | None = None) -> torch.Tensor:
        """Encode points.

        Args:
            x: Points ``(N, 3)``; clamped to ``[0, 1]^3``.
            active: Optional bool ``(N,)``; inactive points are not looked up at all: their
                features are exactly zero and no table row receives gradient from them.

        Returns:
            Features ``(N, L * F)``.
        """
        if x.dim() != 2 or x.shape[-1] != 3:
            raise ValueError(f"x must have shape (N, 3), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
        x = x.clamp(0.0, 1.0)
        if active is None:
            return self._encode(x)
        if active.shape != x.shape[:1] or active.dtype != torch.bool:
            raise ValueError(f"active must be a bool tensor of shape ({x.shape[0]},)")
        out = x.new_zeros(x.shape[0], self.output_dim)
        idx = active.nonzero().squeeze(1)
        if idx.numel() == 0:
            return out
        return out.index_put((idx,), self._encode(x[idx]))

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        rows, weights = self.corners(x)
        global_rows = rows + self.offsets[:-1][None, :, None]
        # (N, L, 8, F); reads only these rows, and backward scatters only into them.
        feats = self.table.index_select(0, global_rows.reshape(-1))
        feats = feats.reshape(*global_rows.shape, self.features)
        out = (weights.to(feats.dtype)[..., None] * feats).sum(2)
        return out.reshape(x.shape[0], self.output_dim)

    def extra_repr(self) -> str:  # noqa: D102
        return (
            f"levels={self.levels}, features={self.features}, table_size={self.table_size}, "
            f"resolutions={self.resolutions}, hashed={self.hashed}"
        )

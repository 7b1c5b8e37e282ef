"""PDP's soft mask, its threshold and the exact hard mask, as pure functions of one tensor.

For a target tensor ``W`` and a number of kept *units* ``keep`` (entries for the unstructured
pattern, output channels for the channel pattern, entries per group of ``m`` for N:M):

* the threshold ``t`` is the midpoint between the smallest kept and the largest pruned unit
  magnitude, ``t = (W_h + W_t) / 2`` (a unit's magnitude is ``|w|``, or the channel's L2 norm);
  ``t`` is computed from detached weights (stop-gradient);
* the soft mask is ``m = σ((s − t²)/τ)`` with ``s = w²`` (or the squared channel norm), which is
  the paper's ``e^{w²/τ} / (e^{w²/τ} + e^{t²/τ})`` written in its numerically stable form;
* the hard mask keeps exactly ``keep`` units by magnitude (ties: lower index first). For distinct
  magnitudes it equals ``m >= 0.5``, i.e. ``|w| > t``; with a tie exactly at the boundary
  ``m = 0.5`` on both sides and only the exact top-k keeps the count.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from sparsecore import (
    NM,
    Channel,
    Pattern,
    Unstructured,
    keep_count,
    select,
    select_global,
    topk_mask,
)

__all__ = [
    "allocate_keep",
    "hard_mask",
    "num_units",
    "soft_mask",
    "threshold",
    "unit_magnitudes",
]


def num_units(shape: torch.Size | tuple[int, ...], pattern: Pattern) -> int:
    """Units ``keep`` counts in a tensor of ``shape``: entries, channels, or ``m`` for N:M."""
    if isinstance(pattern, NM):
        return pattern.m
    if isinstance(pattern, Channel):
        return int(tuple(shape)[pattern.dim])
    return int(torch.Size(shape).numel())


def _squared(weight: torch.Tensor, pattern: Pattern) -> torch.Tensor:
    """Differentiable squared unit magnitudes: ``w²`` or per-channel ``‖w_c‖²``."""
    sq = weight * weight
    if isinstance(pattern, Channel):
        return pattern.reduce(sq)
    return sq


def unit_magnitudes(weight: torch.Tensor, pattern: Pattern) -> torch.Tensor:
    """Detached unit magnitudes: ``|w|`` (any shape), or per-channel L2 norms (1-D)."""
    w = weight.detach()
    if isinstance(pattern, Channel):
        return pattern.reduce(w * w).sqrt()
    return w.abs()


def threshold(magnitudes: torch.Tensor, keep: int, rows: bool = False) -> torch.Tensor:
    """Midpoint between the ``keep``-th and ``(keep + 1)``-th largest of ``magnitudes``.

    Args:
        magnitudes: Unit magnitudes (any shape, ranked as one flat list), or with ``rows=True``
            a 2-D ``(groups, m)`` tensor where each row is ranked on its own (N:M).
        keep: Units kept (per row with ``rows=True``), ``1 <= keep < units``.
        rows: Whether every row gets its own threshold.

    Returns:
        A scalar, or one threshold per row (shape ``(groups, 1)``) with ``rows=True``.
    """
    n = magnitudes.shape[-1] if rows else magnitudes.numel()
    if not 1 <= keep < n:
        raise ValueError(f"keep must lie in [1, {n - 1}], got {keep}")
    if rows:
        ordered = torch.sort(magnitudes, dim=-1, descending=True).values
        return 0.5 * (ordered[:, keep - 1 : keep] + ordered[:, keep : keep + 1])
    flat = magnitudes.reshape(-1)
    pruned = n - keep
    largest_pruned = torch.kthvalue(flat, pruned).values
    smallest_kept = torch.kthvalue(flat, pruned + 1).values
    return 0.5 * (largest_pruned + smallest_kept)


def _temperature(t: torch.Tensor, tau: float, relative: bool) -> torch.Tensor | float:
    if not relative:
        return tau
    return tau * (t * t).clamp_min(torch.finfo(t.dtype).tiny)


def soft_mask(
    weight: torch.Tensor, pattern: Pattern, keep: int, tau: float, relative: bool = False
) -> torch.Tensor:
    """PDP's soft mask of ``weight``, broadcastable to its shape.

    Gradients flow through ``w²`` (and the channel norm), not through ``t``.

    Args:
        weight: The dense weight (requires grad during training).
        pattern: `Unstructured`, `NM` or `Channel`.
        keep: Units kept: entries, channels, or entries per group (N:M).
        tau: Temperature τ > 0.
        relative: Use ``τ · t²`` as the temperature (per threshold), which makes the mask a
            function of ``|w| / t`` only: ``σ(((w/t)² − 1)/τ)``, independent of the weight scale.

    Returns:
        Mask values in ``[0, 1]``; all ones when ``keep`` covers every unit.
    """
    units = num_units(weight.shape, pattern)
    if keep >= units:
        return torch.ones((), dtype=weight.dtype, device=weight.device)
    if isinstance(pattern, NM):
        groups = pattern.groups(weight)
        t = threshold(groups.detach().abs(), keep, rows=True)
        mask = torch.sigmoid((groups * groups - t * t) / _temperature(t, tau, relative))
        return pattern.ungroup(mask, weight.shape)
    t = threshold(unit_magnitudes(weight, pattern), keep)
    mask = torch.sigmoid((_squared(weight, pattern) - t * t) / _temperature(t, tau, relative))
    if isinstance(pattern, Channel):
        return pattern.expand(mask, weight.shape)
    return mask


def hard_mask(weight: torch.Tensor, pattern: Pattern, keep: int) -> torch.Tensor:
    """Exact hard keep-mask: the ``keep`` largest units (per group for N:M), as ``bool``."""
    units = num_units(weight.shape, pattern)
    keep = max(0, min(keep, units))
    if isinstance(pattern, NM):
        if keep in (0, pattern.m):
            return torch.full(weight.shape, keep > 0, dtype=torch.bool, device=weight.device)
        # sparsecore's exact per-group selection at the ramped count (ties: lower index first)
        return select(weight.detach().abs(), 1.0, NM(keep, pattern.m, pattern.dim))
    mags = unit_magnitudes(weight, pattern)
    kept = topk_mask(mags, keep)
    if isinstance(pattern, Channel):
        return pattern.expand(kept, weight.shape).contiguous()
    if not isinstance(pattern, Unstructured):
        raise TypeError(f"PDP: pattern {pattern} is not supported")
    return kept


def allocate_keep(
    magnitudes: Mapping[str, torch.Tensor], density: float, distribution: str = "global"
) -> dict[str, int]:
    """Per-layer kept unit counts at the full target.

    ``"global"`` ranks every unit of every tensor together by magnitude (the paper's one global
    ranking) and keeps exactly ``keep_count(total_units, density)`` units; a tensor left with no
    unit at all then takes over the globally weakest kept unit of a tensor that keeps at least
    two, so that no layer is cut off and the total stays exact. ``"uniform"`` keeps
    ``keep_count(units, density)`` units of every tensor.

    Args:
        magnitudes: Unit magnitudes per tensor (``|w|``, or per-channel norms).
        density: Fraction of units kept, in ``(0, 1]``.
        distribution: ``"global"`` or ``"uniform"``.
    """
    if distribution == "uniform":
        return {n: keep_count(m.numel(), density) for n, m in magnitudes.items()}
    if distribution != "global":
        raise ValueError(f"distribution must be 'global' or 'uniform', got {distribution!r}")
    flat = {n: m.detach().reshape(-1).to(torch.float64) for n, m in magnitudes.items()}
    kept = select_global(flat, density, Unstructured())
    counts = {n: int(k.sum()) for n, k in kept.items()}
    ordered = {n: torch.sort(v, descending=True).values for n, v in flat.items()}
    for name in [n for n, c in counts.items() if c == 0]:
        donors = [n for n, c in counts.items() if c >= 2]
        if not donors:
            break
        weakest = min(donors, key=lambda n: float(ordered[n][counts[n] - 1]))
        counts[weakest] -= 1
        counts[name] = 1
    return counts

"""Pure selection functions: scores in, boolean keep-masks out.

Every function here is deterministic and exact:

* the number of kept entries is exactly `keep_count` of the requested density (or exactly
  ``n`` per group for N:M);
* ties are broken by position: among equal scores, the entry with the lower flat index (in the
  tensor's own order, or in the concatenation order for global selection) is kept first. This is
  what a stable descending sort gives, and what the brute-force references in the tests use.

NaN scores are rejected with a ``ValueError`` naming the tensor; ``-inf``/``+inf`` are allowed
(methods use ``-inf`` to exclude positions).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from sparsecore.patterns import NM, Block, Channel, Head, Pattern, Unstructured
from sparsecore.validation import check_int, check_number

__all__ = [
    "check_density",
    "check_scores",
    "drop_lowest",
    "grow_highest",
    "keep_count",
    "select",
    "select_global",
    "topk_mask",
]


def check_density(density: float, name: str = "density") -> float:
    """Validate a density (fraction kept) in ``(0, 1]`` and return it as a float."""
    return check_number(density, name, 0.0, 1.0, open_low=True)


def keep_count(numel: int, density: float) -> int:
    """Number of units kept out of ``numel`` at ``density``: ``floor(density * numel)``.

    A tiny tolerance absorbs floating-point error (``0.1 * 50`` is 5, not 4), and at least one unit
    is always kept so a layer never vanishes by rounding alone.
    """
    return max(1, min(numel, math.floor(density * numel + 1e-6)))


def check_scores(scores: torch.Tensor, name: str = "scores") -> None:
    """Raise ``ValueError`` if ``scores`` contains NaN, ``TypeError`` if it is not a tensor."""
    if not isinstance(scores, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(scores).__name__}")
    if scores.is_floating_point() and torch.isnan(scores).any():
        raise ValueError(f"{name} contains NaN scores")


def topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the ``k`` highest ``scores`` (ties: lower flat index first).

    Args:
        scores: Any-shaped score tensor (bool scores rank ``True`` above ``False``).
        k: How many entries to keep, ``0 <= k <= scores.numel()``.

    Raises:
        ValueError: ``k`` out of range, or NaN scores (they have no rank).
    """
    check_scores(scores)
    return _topk(scores, k)


def _topk(scores: torch.Tensor, k: int) -> torch.Tensor:
    """`topk_mask` for scores already checked for NaN."""
    flat = scores.detach().reshape(-1)
    numel = flat.numel()
    if not 0 <= k <= numel:
        raise ValueError(f"k must lie in [0, {numel}], got {k}")
    if k in (0, numel):
        return torch.full(scores.shape, k > 0, dtype=torch.bool, device=flat.device)
    if flat.dtype == torch.bool:
        flat = flat.to(torch.uint8)
    # Linear-time selection instead of a full sort (an update of a 78k-weight MLP spent most of
    # its time sorting): the k-th largest value is the threshold, everything above it is kept,
    # and the ties at it are taken by ascending flat index. Same result as a stable sort.
    threshold = torch.kthvalue(flat, numel - k + 1).values
    mask = flat > threshold
    missing = k - int(mask.sum())
    if missing > 0:
        ties = (flat == threshold).nonzero().squeeze(1)
        mask[ties[:missing]] = True
    return mask.reshape(scores.shape)


def _select_nm(scores: torch.Tensor, pattern: NM) -> torch.Tensor:
    groups = pattern.groups(scores.detach())
    order = torch.sort(groups, dim=-1, descending=True, stable=True).indices
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(-1, order[:, : pattern.n], True)
    return pattern.ungroup(keep, scores.shape).contiguous()


def select(
    scores: torch.Tensor,
    density: float,
    pattern: Pattern | None = None,
    name: str = "scores",
) -> torch.Tensor:
    """Keep-mask of one tensor for ``pattern``.

    Args:
        scores: Importance scores, the shape of the target tensor (higher is kept first).
        density: Fraction of units kept, in ``(0, 1]``. Ignored for `NM`, which always keeps
            ``n`` of every ``m``.
        pattern: The structure (default `Unstructured`). Structured patterns aggregate
            scores per unit by summation before ranking.
        name: Tensor name for error messages.

    Returns:
        A ``bool`` tensor of the scores' shape.
    """
    pattern = pattern or Unstructured()
    check_scores(scores, name)
    pattern.check_shape(scores.shape, name)
    if isinstance(pattern, NM):
        return _select_nm(scores, pattern)
    check_density(density)
    if isinstance(pattern, Unstructured):
        return _topk(scores, keep_count(scores.numel(), density))
    if isinstance(pattern, Channel | Block | Head):
        units = pattern.reduce(scores.detach())
        keep_units = topk_mask(units, keep_count(units.numel(), density))
        return pattern.expand(keep_units, scores.shape).contiguous()
    raise TypeError(f"select: pattern {pattern!r} is not supported")


def select_global(
    scores: Mapping[str, torch.Tensor],
    density: float,
    pattern: Pattern | None = None,
    *,
    min_per_tensor: int = 1,
) -> dict[str, torch.Tensor]:
    """Keep-masks for several tensors from one global ranking.

    Exactly ``keep_count(total_units, density)`` units are kept over all tensors together
    (``total_units`` counts entries for unstructured, channels/blocks/heads otherwise). Ties are
    broken by concatenation order (the mapping's iteration order), then position.

    Layer floor: a global ranking can leave a tensor with no unit at all (the whole layer cut
    off, the model's output then constant). By default every tensor keeps at least
    ``min_per_tensor`` of its units (its highest-scored ones; never more than it has with a score
    above ``-inf``, so entries excluded with ``-inf`` are not revived); the rest of the budget
    goes to the global ranking, so the total stays exact. When the unconstrained ranking already
    gives every tensor its floor, the result is exactly the unconstrained one. If the floors
    alone exceed the budget, the tensors with the highest best score get theirs first.
    ``min_per_tensor=0`` is the plain global ranking.

    Args:
        scores: Scores per tensor name.
        density: Fraction kept over all tensors, in ``(0, 1]``.
        pattern: The structure (default `Unstructured`); not `NM`.
        min_per_tensor: Units every tensor keeps at least (``0``: no floor).

    Raises:
        TypeError: For `NM`, which is per-group by definition (use `select`), or a
            non-integer ``min_per_tensor``.
        ValueError: NaN scores, a bad density or a negative ``min_per_tensor``.
    """
    pattern = pattern or Unstructured()
    check_density(density)
    check_int(min_per_tensor, "min_per_tensor", 0)
    if isinstance(pattern, NM):
        raise TypeError("select_global: N:M is a per-group pattern; use select() per tensor")
    if not scores:
        return {}
    units: dict[str, torch.Tensor] = {}
    for name, tensor in scores.items():
        check_scores(tensor, name)
        pattern.check_shape(tensor.shape, name)
        detached = tensor.detach()
        units[name] = detached if isinstance(pattern, Unstructured) else pattern.reduce(detached)
    parts = [u.reshape(-1).to(torch.float64) for u in units.values()]
    flat = torch.cat(parts)
    budget = keep_count(flat.numel(), density)
    keep_flat = _topk(flat, budget)
    if min_per_tensor > 0:
        keep_flat = _apply_floor(flat, parts, keep_flat, budget, min_per_tensor)
    masks: dict[str, torch.Tensor] = {}
    offset = 0
    for name, unit in units.items():
        part = keep_flat[offset : offset + unit.numel()].reshape(unit.shape)
        offset += unit.numel()
        if not isinstance(pattern, Unstructured):
            part = pattern.expand(part, scores[name].shape).contiguous()
        masks[name] = part
    return masks


def _apply_floor(
    flat: torch.Tensor,
    parts: list[torch.Tensor],
    keep_flat: torch.Tensor,
    budget: int,
    floor: int,
) -> torch.Tensor:
    """The global top-``budget`` of ``flat`` with at least ``floor`` units from every part."""
    sizes = [p.numel() for p in parts]
    floors = [min(floor, int((p > -math.inf).sum())) for p in parts]
    counts = [int(k.sum()) for k in torch.split(keep_flat, sizes)]
    if all(c >= f for c, f in zip(counts, floors, strict=True)):
        return keep_flat  # nothing below its floor: the plain ranking
    if sum(floors) > budget:  # floors alone exceed the budget: best tensors first
        order = sorted(range(len(parts)), key=lambda i: -float(parts[i].max()) if sizes[i] else 0)
        left = budget
        for i in order:
            floors[i] = min(floors[i], left)
            left -= floors[i]
    reserved = torch.cat([_topk(p, f) for p, f in zip(parts, floors, strict=True)])
    rest = flat[~reserved]
    picked = _topk(rest, budget - int(reserved.sum()))
    return reserved.masked_scatter(~reserved, picked)


def drop_lowest(scores: torch.Tensor, mask: torch.Tensor, count: int) -> torch.Tensor:
    """Remove the ``count`` lowest-scored *active* entries from ``mask`` (a new bool mask).

    Ties are broken towards dropping the *higher* flat index first, so that the kept set is exactly
    the top ``nnz - count`` of the active scores under `topk_mask`'s rule.
    """
    check_scores(scores)
    mask = mask.to(torch.bool)
    active = int(mask.sum())
    if not 0 <= count <= active:
        raise ValueError(f"count must lie in [0, {active}] (active entries), got {count}")
    # The active scores in ascending position order; the top of them is scattered back in the
    # same order (ties: lower index kept first).
    values = scores.detach().reshape(mask.shape).masked_select(mask)
    return torch.zeros_like(mask).masked_scatter_(mask, _topk(values, active - count))


def grow_highest(scores: torch.Tensor, mask: torch.Tensor, count: int) -> torch.Tensor:
    """Add the ``count`` highest-scored *inactive* entries to ``mask`` (a new bool mask)."""
    check_scores(scores)
    mask = mask.to(torch.bool)
    inactive = ~mask
    available = int(inactive.sum())
    if not 0 <= count <= available:
        raise ValueError(f"count must lie in [0, {available}] (inactive entries), got {count}")
    values = scores.detach().reshape(mask.shape).masked_select(inactive)
    grown = torch.zeros_like(mask).masked_scatter_(inactive, _topk(values, count))
    return grown | mask  # ties: lower index grown first

"""Channel scores of groups, and per-group / global selection with exact counts.

A group's score for channel ``c`` aggregates its members: every *scored* slice (producer output
rows ``out``, consumer input slices ``in``, normalisation scales ``norm_weight``; biases are not
scored, as in Torch-Pruning's default) gives one value per channel (the sum of its element scores
over the entries of that channel), and the group score is the **mean over those slices**
(CHOICE, Torch-Pruning's ``group_reduction="mean"``: a residual group with many members is not
favoured in a global ranking just because it has more of them).

Criteria (`group_scores`):

* ``"l1"``: ``|w|``; ``"l2"``: ``w²`` (Torch-Pruning's ``GroupMagnitudeImportance(p=2)`` before its
  normaliser; the sum of squares per slice, no square root);
* ``"taylor"``: ``|w · g|`` (first-order Taylor, Molchanov et al. arXiv 1906.10771), needs
  gradients;
* ``"bn"``: ``|γ|`` of the group's normalisations (network slimming, Liu et al. arXiv 1708.06519);
  CHOICE: a group without an affine normalisation falls back to ``"l2"`` of its producers' rows;
* ``"fpgm"``: the summed Euclidean distance of each producer filter to the layer's other filters
  (He et al., "Filter Pruning via Geometric Median", arXiv 1811.00250): filters near the
  geometric median are the most replaceable and score lowest. CHOICE: raw filter weights of the
  producers only (Torch-Pruning's variant takes ``|w|^p`` and also scores consumer slices).

Selection (`select_channels`) keeps exactly ``keep_count(size, density)`` channels per group
(``scope="layer"``; optionally rounded down to a multiple of ``round_to``) or
``keep_count(total, density)`` over all groups (``scope="global"``), with the core's deterministic
tie-breaking (`sparsecore.select`). In the global ranking every group keeps at least its best
channel (CHOICE: a group pruned to zero width would cut the network).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from sparsecore.groups.graph import ChannelGroup, ChannelGroups, GroupSlice
from sparsecore.patterns import Channel
from sparsecore.select import check_density, check_scores, keep_count, select_global, topk_mask
from sparsecore.validation import check_choice, check_int

__all__ = [
    "CRITERIA",
    "SCORED_ROLES",
    "aggregate",
    "group_scores",
    "kept_channels",
    "select_channels",
]

#: Roles whose element scores make up a group's channel score.
SCORED_ROLES = ("out", "in", "norm_weight")
CRITERIA = ("l1", "l2", "taylor", "bn", "fpgm")


def _per_channel(s: GroupSlice, tensor: torch.Tensor, size: int) -> torch.Tensor:
    """Sum of ``tensor``'s entries of each channel of slice ``s`` (one value per channel)."""
    moved = tensor.detach().to(torch.float64).movedim(s.dim, 0)
    index = torch.tensor(s.index, device=tensor.device)
    values = moved.index_select(0, index).reshape(len(s.index), -1).sum(1)
    channel = torch.tensor(s.channel, device=tensor.device)
    return torch.zeros(size, dtype=torch.float64, device=tensor.device).index_add_(
        0, channel, values
    )


def _aggregate_one(
    group: ChannelGroup, scores: Mapping[str, torch.Tensor], roles: tuple[str, ...]
) -> torch.Tensor | None:
    parts = [
        _per_channel(s, scores[s.param], group.size)
        for s in group.members(*roles)
        if s.param in scores
    ]
    if not parts:
        return None
    return torch.stack(parts).mean(0)


def aggregate(
    groups: ChannelGroups,
    scores: Mapping[str, torch.Tensor],
    roles: tuple[str, ...] = SCORED_ROLES,
) -> dict[str, torch.Tensor]:
    """Channel scores of every prunable group from element scores of its parameters.

    Args:
        groups: The model's channel groups.
        scores: Element scores by parameter name (shaped like the parameters); slices of
            parameters missing here are left out of the mean.
        roles: The slice roles that count (default `SCORED_ROLES`).

    Returns:
        ``{group name: float64 scores of shape (size,)}`` for the prunable groups.

    Raises:
        ValueError: A prunable group has no scored slice among ``scores``, or scores are NaN.
    """
    out: dict[str, torch.Tensor] = {}
    for group in groups.prunable():
        value = _aggregate_one(group, scores, roles)
        if value is None:
            raise ValueError(f"channel group {group.name!r} has no scored parameter in scores")
        check_scores(value, f"scores of channel group {group.name!r}")
        out[group.name] = value
    return out


def _fpgm(group: ChannelGroup, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
    parts = []
    for s in group.members("out"):
        weight = params[s.param].detach().to(torch.float64)
        rows = weight.index_select(0, torch.tensor(s.index, device=weight.device)).flatten(1)
        filters = torch.zeros(group.size, rows.shape[1], dtype=torch.float64, device=rows.device)
        filters[torch.tensor(s.channel, device=rows.device)] = rows
        parts.append(torch.cdist(filters, filters).sum(1))
    return torch.stack(parts).mean(0)


@torch.no_grad()
def group_scores(
    groups: ChannelGroups,
    model: nn.Module,
    criterion: str = "l2",
    grads: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Channel scores of every prunable group under ``criterion`` (higher is kept first).

    Args:
        groups: The model's channel groups.
        model: The model whose current parameters are scored (masked entries are zero in hard
            mode, so masked channels score low).
        criterion: One of `CRITERIA` (see the module docstring).
        grads: For ``"taylor"``: gradients by parameter name (e.g. from
            `sparsecore.scores.gradients_on`); default: each parameter's ``.grad``.

    Returns:
        ``{group name: float64 scores of shape (size,)}``.

    Raises:
        ValueError: Unknown criterion, or ``"taylor"`` without any gradient.
    """
    check_choice(criterion, "criterion", CRITERIA)
    params = dict(model.named_parameters())
    if criterion == "fpgm":
        return {g.name: _fpgm(g, params) for g in groups.prunable()}
    if criterion in ("l1", "l2", "bn"):
        power = 1 if criterion == "l1" else 2
        elem = {n: p.abs() if power == 1 else p.square() for n, p in params.items()}
        if criterion != "bn":
            return aggregate(groups, elem)
        out = {}
        scales = {n: p.abs() for n, p in params.items()}
        for group in groups.prunable():
            value = _aggregate_one(group, scales, ("norm_weight",))
            out[group.name] = value if value is not None else _aggregate_one(group, elem, ("out",))
        return out
    grads = dict(grads) if grads is not None else {}
    taylor = {}
    for name, p in params.items():
        grad = grads.get(name, p.grad)
        if grad is not None:
            taylor[name] = (p * grad).abs()
    if not taylor:
        raise ValueError("criterion='taylor' needs gradients: pass grads or run backward first")
    return aggregate(groups, taylor)


def kept_channels(size: int, density: float, round_to: int | None = None) -> int:
    """Channels a group of ``size`` keeps at ``density`` in layer scope.

    ``keep_count(size, density)``; with ``round_to``, rounded *down* to a multiple of it (as
    Torch-Pruning's ``round_to`` does), but at least ``round_to`` and at most ``size``.
    """
    k = keep_count(size, density)
    if round_to is None:
        return k
    return min(size, max(round_to, k - k % round_to))


def select_channels(
    scores: Mapping[str, torch.Tensor],
    density: float,
    scope: str = "layer",
    active: Mapping[str, torch.Tensor] | None = None,
    round_to: int | None = None,
) -> dict[str, torch.Tensor]:
    """Keep-masks of channels, per group (``"layer"``) or from one ranking (``"global"``).

    Args:
        scores: Channel scores by group name (1-D).
        density: Fraction of channels kept, in ``(0, 1]``.
        scope: ``"layer"``: exactly ``keep_count(size, density)`` per group; ``"global"``:
            exactly ``keep_count(total, density)`` over all groups, at least one per group.
        active: Currently kept channels by group: inactive ones rank last (masks only shrink
            while the count allows).
        round_to: Layer scope only: kept counts rounded down to a multiple of ``round_to``
            (`kept_channels`). Widths that are multiples of the CPU's vector width (16 fp32 on
            AVX-512) run much faster per MAC (``docs/export.md``).

    Raises:
        ValueError: ``round_to`` with ``scope="global"``, or fewer kept channels than groups.

    Returns:
        ``{group name: bool keep-mask of shape (size,)}``.
    """
    check_density(density)
    check_choice(scope, "scope", ("layer", "global"))
    if round_to is not None:
        check_int(round_to, "round_to", 1)
        if scope != "layer":
            raise ValueError("round_to: only with scope='layer' (one count per group)")
    ranked: dict[str, torch.Tensor] = {}
    for name, value in scores.items():
        check_scores(value, f"scores of channel group {name!r}")
        value = value.detach().to(torch.float64)
        if active is not None:
            value = torch.where(active[name].to(value.device), value, -math.inf)
        ranked[name] = value
    if scope == "layer":
        return {
            n: topk_mask(s, kept_channels(s.numel(), density, round_to)) for n, s in ranked.items()
        }
    total = sum(s.numel() for s in ranked.values())
    if keep_count(total, density) < len(ranked):
        raise ValueError(
            f"density={density} keeps {keep_count(total, density)} channels, fewer than the "
            f"{len(ranked)} groups (each keeps at least one)"
        )
    forced = {}
    for name, value in ranked.items():  # every group's best channel first
        best = topk_mask(value, 1)
        forced[name] = torch.where(best, math.inf, value)
    return select_global(forced, density, Channel())

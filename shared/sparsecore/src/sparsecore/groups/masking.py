"""Masking whole channel groups, and how methods use them.

Masking a channel of a group writes ``False`` into every *masked* slice of it: the producers'
output rows and bias entries and the normalisations' weight **and** bias entries. The channel then
outputs exactly zero (a zero filter, a zero bias, ``BN(0 · x) = 0 · x̂ + 0``, ``ReLU(0) = 0``, and
a residual sum of zeros is zero), so `sparsecore.export.remove_channels` can remove it and
the shrunk model computes exactly what the masked one computed.

CHOICE: the consumers' input slices are part of the group (scores, removal, counting) but are not
masked. Their inputs are exactly zero, so they change neither the output nor their own gradients,
and every masked weight keeps the plain ``Channel(dim=0)`` pattern (whole rows kept or removed),
which reports and validity checks expect. The MaskSet's entry sparsity therefore counts only the
producers' rows; the parameter count of the shrunk model is what measures the saving.

How methods use groups (the rule): the core baselines ``OneShotMagnitude``, ``GMP`` and ``SNIP``
use channel groups when their pattern is ``"channel"`` (``Channel(dim=0)``) **and** their config
sets ``input_shape`` (one example's shape, used to trace the dependency graph at setup). The
targets (``targets`` / ``exclude``) say which layers may lose output channels: a group is pruned
only if all its producers are targets (target weights in no prunable group, such as the
classifier, stay dense). The masks then also cover the groups' biases and
normalisation parameters, and ``sparsity`` is the fraction of *channels* removed per group
(``scope="layer"``) or over all groups (``scope="global"``). Without ``input_shape`` the channel
pattern is per tensor, as before. Other methods mix in `ChannelGroupsSupport` or call
`group_masks` / `select_channels` themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from sparsecore.groups.graph import MASKED_ROLES, ChannelGroups, channel_groups
from sparsecore.groups.scores import aggregate, select_channels
from sparsecore.patterns import Channel
from sparsecore.targets import Target

__all__ = [
    "ChannelGroupsSupport",
    "active_channels",
    "group_masks",
    "prune_channel_groups",
]


def group_masks(
    groups: ChannelGroups,
    keeps: Mapping[str, torch.Tensor],
    current: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """New keep-masks of every parameter that the groups in ``keeps`` mask.

    Args:
        groups: The model's channel groups.
        keeps: Bool channel keep-masks by group name (shape ``(size,)``).
        current: The current masks by parameter name (entries outside the groups' slices are
            copied from them).

    Returns:
        ``{parameter name: bool mask}`` for every masked slice's parameter.

    Raises:
        ValueError: A keep-mask does not fit its group, or a parameter has no current mask.
    """
    out: dict[str, torch.Tensor] = {}
    for name, keep in keeps.items():
        group = groups[name]
        if keep.dtype != torch.bool or tuple(keep.shape) != (group.size,):
            raise ValueError(f"keep-mask of group {name!r} must be bool of shape ({group.size},)")
        for s in group.members(*MASKED_ROLES):
            if s.param not in out:
                if s.param not in current:
                    raise ValueError(f"group {name!r}: parameter {s.param!r} has no mask")
                out[s.param] = current[s.param].clone()
            mask = out[s.param]
            index = torch.tensor(s.index, device=mask.device)
            values = keep.to(mask.device)[torch.tensor(s.channel, device=mask.device)]
            view = [1] * mask.dim()
            view[s.dim] = -1
            shape = list(mask.shape)
            shape[s.dim] = len(s.index)
            mask.index_copy_(s.dim, index, values.reshape(view).expand(shape).contiguous())
    return out


def active_channels(
    groups: ChannelGroups, masks: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Channels currently kept in each prunable group (any entry of its producers' rows kept)."""
    out = {}
    for group in groups.prunable():
        active = torch.zeros(group.size, dtype=torch.bool)
        for s in group.members("out"):
            mask = masks[s.param].movedim(s.dim, 0).reshape(masks[s.param].shape[s.dim], -1)
            rows = mask.any(1).cpu()[torch.tensor(s.index)]
            active[torch.tensor(s.channel)[rows]] = True
        out[group.name] = active
    return out


def prune_channel_groups(
    method: Any,
    groups: ChannelGroups,
    scores: Mapping[str, torch.Tensor],
    sparsity: float,
    scope: str = "layer",
    only_active: bool = True,
    round_to: int | None = None,
) -> dict[str, torch.Tensor]:
    """Set the masks of a set-up method from element scores, one decision per group channel.

    Args:
        method: A set-up method whose MaskSet covers `ChannelGroups.masked_params`.
        groups: The model's channel groups.
        scores: Element scores by parameter name (see `sparsecore.groups.aggregate`).
        sparsity: Fraction of channels removed (per group, or over all groups).
        scope: ``"layer"`` or ``"global"``.
        only_active: Rank currently masked channels last, so masks only shrink.
        round_to: Kept counts rounded down to multiples of it (layer scope, `select_channels`).

    Returns:
        The channel keep-masks by group name.
    """
    masks = method.masks
    current = masks.masks()
    group_score = aggregate(groups, scores)
    active = active_channels(groups, current) if only_active else None
    keeps = select_channels(group_score, 1.0 - sparsity, scope, active, round_to)
    masks.update_all(group_masks(groups, keeps, current))
    return keeps


class ChannelGroupsSupport:
    """Mixin for a ``PruningMethod``: channel groups when ``pattern`` is ``"channel"`` and the
    config sets ``input_shape`` (see the module docstring for the rule).

    After setup ``method.channel_groups`` holds the `ChannelGroups` (``None`` when groups
    are not used); `sparsecore.baselines.prune_by_scores` then selects per group.
    """

    channel_groups: ChannelGroups | None = None

    def companion_targets(self, model: nn.Module, targets: list[Target]) -> list[Target]:
        """Trace the groups and return the biases / norm parameters to mask with the targets.

        Raises:
            ValueError: ``input_shape`` does not fit the model, or no group is prunable.
        """
        self.channel_groups = None
        config = self.config  # type: ignore[attr-defined]
        shape = getattr(config, "input_shape", None)
        if shape is None or not isinstance(config.pattern, Channel):
            return []
        param = next(model.parameters())
        example = torch.zeros((1, *shape), dtype=param.dtype, device=param.device)
        layers = [t.module_name for t in targets if t.param_name == "weight"]
        try:
            groups = channel_groups(model, example, layers)
        except ValueError as err:
            raise ValueError(f"input_shape {tuple(shape)} does not fit the model: {err}") from err
        if not groups.prunable():
            reasons = "; ".join(f"{g.name}: {g.reason}" for g in groups)
            raise ValueError(f"input_shape: no prunable channel group in the model ({reasons})")
        known = {t.name for t in targets}
        extra = []
        for name in groups.masked_params():
            if name not in known:
                module_name, _, param_name = name.rpartition(".")
                extra.append(Target(name, module_name, param_name, Channel()))
        self.channel_groups = groups
        return extra

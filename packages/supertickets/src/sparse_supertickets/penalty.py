"""FLOPs-aware penalties of the searched channel groups (atomic blocks).

From GATECH-EIC/SuperTickets `utils/prune.py` (`get_bn_to_prune` with
``bn_prune_filter: expansion_only``, `cal_bn_l1_loss`): every hidden channel of an
inverted-residual op is an atomic block, scored by the γ of the BatchNorm after its depthwise
conv; the L1 term is ``ρ Σ_i c_i |γ_i|`` with ``c_i = (MACs of op / channels of op)`` divided by
the channel-weighted mean of those values over all ops, so costlier ops (larger kernels, larger
feature maps) are penalised more. ``equal`` is the official network-slimming baseline
(``equal_penalty_skip_expand1``: every ``c_i = 1``).

The searched groups come from the core's channel groups (`sparsecore.groups`): a group is
searched when one of its producers is a depthwise conv (its channels are an op's hidden
channels). A group's MACs per channel are the MACs its layers spend on one channel: the
producers' output rows (expand 1×1, depthwise k×k) plus the consumers' input columns
(project 1×1), measured with forward hooks on one example.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sparsecore.groups import ChannelGroup, ChannelGroups
from sparsecore.tracing import run_model

__all__ = ["SearchedGroup", "channel_normalizer", "penalties", "searched_groups"]

_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class SearchedGroup:
    """One searched op's channel group.

    Attributes:
        group: The core channel group (expand, depthwise, BNs, projection column).
        gamma: Parameter name of the γ penalised and thresholded (the BN after the depthwise).
        macs_per_channel: MACs one channel costs (one example).
    """

    group: ChannelGroup
    gamma: str
    macs_per_channel: float

    @property
    def name(self) -> str:
        """The group's name."""
        return self.group.name


def _is_depthwise(module: nn.Module) -> bool:
    groups = getattr(module, "groups", 1)
    return (
        isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d)
        and groups > 1
        and groups == module.in_channels == module.out_channels
    )


@torch.no_grad()
def searched_groups(model: nn.Module, groups: ChannelGroups, example: Any) -> list[SearchedGroup]:
    """The prunable groups with a depthwise producer, with their γ and MACs per channel.

    Args:
        model: The model.
        groups: Its channel groups (`sparsecore.groups.channel_groups`).
        example: One example input (batch 1) to measure the layers' output sizes.

    Returns:
        The searched groups in model order (empty if the model has no depthwise conv).
    """
    modules = dict(model.named_modules())
    macs: dict[str, float] = {}
    outputs: dict[str, torch.Tensor] = {}  # tensors kept alive, so identity is meaningful
    inputs: list[tuple[str, torch.Tensor]] = []
    handles = []

    def layer_hook(name: str):
        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            macs[name] = out.numel() / out.shape[0] * module.weight[0].numel()
            outputs[name] = out

        return hook

    def norm_hook(name: str):
        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            inputs.append((name, args[0]))

        return hook

    for name, module in modules.items():
        if isinstance(module, _LAYERS):
            handles.append(module.register_forward_hook(layer_hook(name)))
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            handles.append(module.register_forward_hook(norm_hook(name)))
    was_training = model.training
    model.eval()
    try:
        run_model(model, example)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    found = []
    for group in groups.prunable():
        depthwise = [p for p in group.producers if _is_depthwise(modules[p])]
        if not depthwise:
            continue
        out = outputs.get(depthwise[0])
        gamma = next((n for n, t in inputs if out is not None and t is out), None)
        if gamma is None or gamma not in group.norms:
            continue
        cost = sum(macs[p] / modules[p].weight.shape[0] for p in group.producers)
        cost += sum(macs[c] / modules[c].weight.shape[1] for c in group.consumers)
        found.append(SearchedGroup(group, f"{gamma}.weight", float(cost)))
    return found


def channel_normalizer(found: list[SearchedGroup]) -> float:
    """The channel-weighted mean of the MACs per channel (official ``penalty_normalizer``)."""
    total = sum(g.group.size for g in found)
    return sum(g.group.size * g.macs_per_channel for g in found) / (total + 1e-5)


def penalties(
    found: list[SearchedGroup], kind: str = "flops", normalizer: float | None = None
) -> dict[str, float]:
    """``c`` per searched group.

    Args:
        found: The searched groups.
        kind: ``"flops"`` (MACs per channel over ``normalizer``) or ``"equal"`` (all 1).
        normalizer: ``None``: `channel_normalizer` of ``found``. The official code computes it
            once on the supernet and keeps the penalties through shrinking; pass the supernet's
            value to a method set up on a shrunk model to do the same.
    """
    if kind == "equal":
        return {g.name: 1.0 for g in found}
    scale = channel_normalizer(found) if normalizer is None else normalizer
    return {g.name: g.macs_per_channel / scale for g in found}

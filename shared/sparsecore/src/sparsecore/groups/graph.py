"""Channel groups of a model, read from Torch-Pruning's dependency graph.

A *channel group* is everything that must be removed together when one output channel goes:

* the output channel (``weight[i]``, dim 0) of every producer layer (``Linear`` / ``Conv``) whose
  outputs are coupled: one layer, or several summed by residual connections;
* the producers' bias entries;
* the entry of every normalisation that follows (``BatchNorm`` / affine ``InstanceNorm``: weight
  *and* bias);
* the input slice (dim 1) of every consumer layer, through concatenations (offsets) and flattens
  (several inputs per channel).
* a depthwise conv (``groups == in_channels == out_channels``) between them is channel-wise: its
  filter ``weight[i]`` (and bias) belongs to channel ``i`` and is masked like a producer's row
  (MobileNet-style inverted residuals: expand row, BN, depthwise filter, BN, projection column).

The dependency analysis is Torch-Pruning's (``DependencyGraph.get_all_groups``, the optional extra
``sparse-core[structured]``); this module turns its groups into plain data (parameter names and
indices) that masks and selection can use without Torch-Pruning objects.

A group is *prunable* unless (reason in `ChannelGroup.reason`): one of its producers is not
allowed (``layers``), is a model output (its width is the model's output width), is grouped
(but not depthwise) or transposed, or a member is a module whose channels cannot be removed
exactly by masking (``LayerNorm`` and ``GroupNorm`` normalise across channels, so a zeroed
channel still changes the others; any other module with parameters is unknown), or the group
has no consumer layer (its channels reach the output through non-layer operations).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sparsecore.tracing import flat_outputs, import_torch_pruning, run_model

__all__ = ["ROLES", "ChannelGroup", "ChannelGroups", "GroupSlice", "channel_groups"]

#: Roles of a slice: ``out`` (producer weight, dim 0), ``bias`` (producer bias), ``norm_weight`` /
#: ``norm_bias`` (the normalisation's affine parameters), ``in`` (consumer weight, dim 1).
ROLES = ("out", "bias", "norm_weight", "norm_bias", "in")
#: Roles whose entries are masked: zeroing them makes the channel output exactly zero.
MASKED_ROLES = ("out", "bias", "norm_weight", "norm_bias")

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_LAYERS = (nn.Linear, *_CONVS)
_NORMS = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
)


@dataclass(frozen=True)
class GroupSlice:
    """The entries of one parameter that belong to a group.

    Attributes:
        param: Qualified parameter name (``"layer1.0.conv1.weight"``).
        role: One of `ROLES`.
        dim: Dimension of the parameter that the indices run along.
        index: Positions along ``dim``.
        channel: The group channel of each position (same length as ``index``).
    """

    param: str
    role: str
    dim: int
    index: tuple[int, ...]
    channel: tuple[int, ...]


@dataclass(frozen=True)
class ChannelGroup:
    """One set of coupled channels (see the module docstring).

    Attributes:
        name: Module name of the first producer in model order (the group's name).
        size: Number of channels.
        producers: Module names of the layers whose output channels are the group's.
        norms: Module names of the normalisations of the group.
        consumers: Module names of the layers whose input slices are the group's.
        slices: Every parameter slice of the group.
        reason: Why the group cannot be pruned, or ``None`` if it can.
        unsupported: The members that make it unprunable by their type (``"LayerNorm 'ln'"``,
            grouped / transposed convolutions, unknown modules with parameters); part of
            ``reason``.
    """

    name: str
    size: int
    producers: tuple[str, ...]
    norms: tuple[str, ...]
    consumers: tuple[str, ...]
    slices: tuple[GroupSlice, ...]
    reason: str | None = None
    unsupported: tuple[str, ...] = ()

    @property
    def prunable(self) -> bool:
        """Whether masking (and removing) channels of this group is exact."""
        return self.reason is None

    def members(self, *roles: str) -> list[GroupSlice]:
        """The slices with one of ``roles`` (all slices when none is given)."""
        return [s for s in self.slices if not roles or s.role in roles]


class ChannelGroups:
    """The channel groups of one model, by name, in model order.

    Args:
        groups: The groups (see `channel_groups`, which builds them).
    """

    def __init__(self, groups: Iterable[ChannelGroup]) -> None:
        self.groups: dict[str, ChannelGroup] = {g.name: g for g in groups}
        self._by_layer = {p: g for g in self.groups.values() for p in g.producers}

    def __iter__(self):
        return iter(self.groups.values())

    def __contains__(self, layer: object) -> bool:
        """Whether ``layer`` (a module name or its ``.weight``) produces channels of a group."""
        if not isinstance(layer, str):
            return False
        return (layer[: -len(".weight")] if layer.endswith(".weight") else layer) in self._by_layer

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, name: str) -> ChannelGroup:
        return self.groups[name]

    def prunable(self) -> list[ChannelGroup]:
        """The groups that can be pruned, in model order."""
        return [g for g in self.groups.values() if g.prunable]

    def group_of(self, layer: str) -> ChannelGroup:
        """The group whose output channels include those of ``layer``.

        Args:
            layer: A module name (``"layer1.0.conv1"``) or its weight (``"layer1.0.conv1.weight"``).

        Raises:
            KeyError: ``layer`` produces no group channels (not a traced Linear / Conv).
        """
        key = layer[: -len(".weight")] if layer.endswith(".weight") else layer
        if key not in self._by_layer:
            raise KeyError(f"{layer!r} is not a producer of any channel group")
        return self._by_layer[key]

    def masked_params(self) -> list[str]:
        """Parameters that masking the prunable groups writes (weights, biases, norms)."""
        seen: dict[str, None] = {}
        for group in self.prunable():
            for s in group.members(*MASKED_ROLES):
                seen.setdefault(s.param, None)
        return list(seen)

    def __repr__(self) -> str:
        return f"ChannelGroups({len(self.prunable())} prunable of {len(self.groups)})"


def _is_depthwise(module: nn.Module) -> bool:
    """A depthwise conv (``groups == in == out channels``): each channel maps to itself."""
    groups = getattr(module, "groups", 1)
    return (
        isinstance(module, _CONVS)
        and groups > 1
        and groups == module.in_channels == module.out_channels
    )


def output_layers(model: nn.Module, inputs: Any) -> set[nn.Module]:
    """The Linear / Conv layers whose output tensor is (part of) the model's output."""
    outputs: dict[nn.Module, torch.Tensor] = {}

    def hook(module: nn.Module, _args: tuple, out: Any) -> None:
        if isinstance(out, torch.Tensor):
            outputs.setdefault(module, out)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, _LAYERS)]
    try:
        with torch.no_grad():
            final = {id(t) for t in flat_outputs(run_model(model, inputs))}
    finally:
        for h in handles:
            h.remove()
    return {m for m, t in outputs.items() if id(t) in final}


def _slices_of(module: nn.Module, name: str, role: str, idxs, roots) -> list[GroupSlice]:
    index, channel = tuple(int(i) for i in idxs), tuple(int(r) for r in roots)
    if role == "out":
        found = [GroupSlice(f"{name}.weight", "out", 0, index, channel)]
        if getattr(module, "bias", None) is not None:
            found.append(GroupSlice(f"{name}.bias", "bias", 0, index, channel))
        return found
    if role == "in":
        return [GroupSlice(f"{name}.weight", "in", 1, index, channel)]
    found = []
    if getattr(module, "weight", None) is not None:
        found.append(GroupSlice(f"{name}.weight", "norm_weight", 0, index, channel))
    if getattr(module, "bias", None) is not None:
        found.append(GroupSlice(f"{name}.bias", "norm_bias", 0, index, channel))
    return found


def _convert(tp: Any, graph: Any, group: Any, names: dict, final: set, allowed) -> ChannelGroup:
    """One Torch-Pruning group (full indices) as a `ChannelGroup`."""
    producers: list[str] = []
    norms: list[str] = []
    consumers: list[str] = []
    slices: list[GroupSlice] = []
    reasons: list[str] = []
    unsupported: list[str] = []
    size = len(group[0].idxs)
    for item in group.items:
        dep = item.dep
        module = dep.target.module
        handler = dep.handler
        if dep.target.type == tp.ops.OPTYPE.OUTPUT:
            reasons.append("its channels reach the model's output")
            continue
        if not isinstance(module, nn.Module):  # an unwrapped nn.Parameter
            unsupported.append("an unwrapped parameter")
            continue
        name = names.get(module)
        is_out = graph.is_out_channel_pruning_fn(handler)
        if isinstance(module, _LAYERS):
            role = "out" if is_out else "in"
            if getattr(module, "groups", 1) != 1 and not _is_depthwise(module):
                unsupported.append(f"grouped convolution {name!r}")
            if _is_depthwise(module):
                is_out = True  # channel-wise: its rows are the group's channels (a producer)
            if getattr(module, "transposed", False):
                unsupported.append(f"transposed convolution {name!r}")
            if is_out:
                if module in final:
                    reasons.append(f"{name!r} is a model output")
                if allowed is not None and name not in allowed:
                    reasons.append(f"producer {name!r} is not a target")
                if name not in producers:
                    producers.append(name)
            elif name not in consumers:
                consumers.append(name)
            slices += _slices_of(module, name, role, item.idxs, item.root_idxs)
        elif isinstance(module, _NORMS):
            if name not in norms:
                norms.append(name)
            slices += _slices_of(module, name, "norm", item.idxs, item.root_idxs)
        elif isinstance(module, nn.LayerNorm | nn.GroupNorm):
            unsupported.append(f"{type(module).__name__} {name!r} (normalises across channels)")
        elif any(True for _ in module.parameters(recurse=False)):
            unsupported.append(f"{type(module).__name__} {name!r}")
    if not consumers:
        reasons.append("no layer consumes its channels")
    order = {n: i for i, n in enumerate(names.values())}
    producers.sort(key=order.__getitem__)
    unsupported = list(dict.fromkeys(unsupported))
    reasons = [f"unsupported member {u}" for u in unsupported] + reasons
    reason = "; ".join(dict.fromkeys(reasons)) or None
    return ChannelGroup(
        producers[0],
        size,
        tuple(producers),
        tuple(norms),
        tuple(consumers),
        tuple(slices),
        reason,
        tuple(unsupported),
    )


def channel_groups(
    model: nn.Module, example_inputs: Any, layers: Iterable[str] | None = None
) -> ChannelGroups:
    """Trace ``model`` once and return its channel groups (the model is not changed).

    Args:
        model: The model (a DDP wrapper is unwrapped).
        example_inputs: A tensor, a tuple of positional inputs or a dict of keyword inputs.
        layers: Module names (or their ``.weight``) allowed as producers; a group with another
            producer is not prunable. ``None``: every Linear / Conv.

    Returns:
        The groups rooted at every traced Linear / Conv layer, in model order.

    Raises:
        ImportError: Torch-Pruning is not installed.
        ValueError: ``example_inputs`` does not run through the model.
    """
    tp = import_torch_pruning("channel groups")
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    allowed = None
    if layers is not None:
        allowed = {n[: -len(".weight")] if n.endswith(".weight") else n for n in layers}
    was_training = model.training
    model.eval()  # no BatchNorm statistics are updated by the traces
    try:
        try:
            final = output_layers(model, example_inputs)
        except Exception as err:
            raise ValueError(f"example inputs do not run through the model: {err}") from err
        with torch.enable_grad():  # Torch-Pruning traces through autograd
            graph = tp.DependencyGraph().build_dependency(model, example_inputs, verbose=False)
        names = {m: n for n, m in model.named_modules()}
        found = [
            _convert(tp, graph, g, names, final, allowed)
            for g in graph.get_all_groups(root_module_types=_LAYERS)
        ]
    finally:
        model.train(was_training)
    order = {n: i for i, n in enumerate(names.values())}
    found.sort(key=lambda g: order[g.name])
    return ChannelGroups(found)

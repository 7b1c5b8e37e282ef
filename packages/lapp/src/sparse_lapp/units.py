"""Channel units and the differentiable FLOPs model of a CNN.

A *unit* is one prunable set of output channels: a convolution and the BatchNorm that
normalises it. Without a bypass, pruning channel ``i`` of a unit removes filter ``i`` of the
convolution, entry ``i`` of the BatchNorm, and input channel ``i`` of every layer that consumes
the unit's output (the next convolution, or the classifier after pooling and flattening). With a
bypass (`sparse_lapp.BypassConv`) only filter ``i`` of the main convolution goes: the unpruned
``1×1`` bypass still produces channel ``i``, so the BatchNorm and the consumers keep their full
width (see `sparse_lapp.bypass`). Which layers those are is the unit's channel group in the core
(`sparsecore.groups.channel_groups`, built on Torch-Pruning's dependency graph, the same
analysis `sparsecore.export.remove_channels` uses for the physical removal), so the FLOPs
model and the compacted network agree by construction.

Only *free* channels are units: a group whose producers are the convolution and its bypass only.
A convolution whose output is summed with another layer's output (a residual stream) is coupled
to it (its group has other producers), and LAPP leaves such channels at full width (CHOICE: the
paper's handling of residual-coupled channels is not in the material we could read; keeping them
is the conservative choice that needs no shared thresholds). Convolutions whose output is the
model's output are never units.

FLOPs are multiply-accumulates (MACs) of the Linear / Conv layers, counted exactly as
`sparsecore.evaluation.count_flops` counts them: ``positions × out × in × k`` per layer,
with ``out`` and ``in`` the *kept* channel counts. With ``k_u`` the number of kept channels of
unit ``u`` (a sum of masks, hence differentiable through surrogate masks),
``out_M = out_full - (C_u - k_u)`` for the layers of unit ``u`` and
``in_M = in_full - mult · Σ_u (C_u - k_u)`` for the layers consuming units ``u`` (``mult``: input
features per channel, e.g. the spatial size after a flatten). The product ``out_M · in_M`` is
what couples a layer's pruning to the next layer's cost.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from sparse_lapp.bypass import BypassConv
from sparsecore.groups import channel_groups

__all__ = ["FlopsModel", "LayerCost", "Unit", "analyze"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_LAYERS = (nn.Linear, *_CONVS)


@dataclass
class Unit:
    """One prunable set of output channels.

    Attributes:
        name: Module name of the convolution (or of its `BypassConv` wrapper).
        channels: Number of output channels.
        convs: Module names of the layers whose filters the unit's mask removes (the main
            convolution).
        norm: Module name of the BatchNorm that follows, or ``None``.
        params: Qualified names of every tensor masked with the unit's channel mask.
        bypass: Module name of the unpruned ``1×1`` bypass, or ``None`` (no bypass).
    """

    name: str
    channels: int
    convs: list[str]
    norm: str | None
    params: list[str]
    bypass: str | None = None


@dataclass
class LayerCost:
    """MACs of one Linear / Conv layer as a function of the kept channels.

    Attributes:
        coef: ``positions × weight.numel() / (out × in)`` (MACs per kept in-out pair).
        out_full: Output channels of the layer.
        in_full: Input channels (features) of the layer.
        out_unit: Index of the unit whose channels are this layer's outputs, or ``None``.
        in_units: ``(unit index, inputs per channel)`` for every unit feeding this layer.
        bypass: Whether the layer is a LAPP bypass (not part of the original model).
    """

    coef: float
    out_full: int
    in_full: int
    out_unit: int | None = None
    in_units: list[tuple[int, int]] = field(default_factory=list)
    bypass: bool = False


@dataclass
class FlopsModel:
    """FLOPs (MACs per example) of the network as a function of the units' kept channels."""

    units: list[Unit]
    layers: dict[str, LayerCost]

    @property
    def original_macs(self) -> float:
        """MACs of the original, unpruned model without bypasses (the reference ``F0``)."""
        return sum(c.coef * c.out_full * c.in_full for c in self.layers.values() if not c.bypass)

    def macs(self, kept: Sequence[torch.Tensor | float]) -> torch.Tensor:
        """MACs per example for kept-channel counts ``kept[u]`` (tensors keep the autograd graph).

        Args:
            kept: One kept-channel count per unit (e.g. ``mask.sum()`` of a surrogate mask).
        """
        total = torch.zeros((), dtype=torch.float64)
        for cost in self.layers.values():
            out = torch.as_tensor(float(cost.out_full), dtype=torch.float64)
            if cost.out_unit is not None:
                u = cost.out_unit
                out = out - (self.units[u].channels - _f64(kept[u]))
            inp = torch.as_tensor(float(cost.in_full), dtype=torch.float64)
            for u, mult in cost.in_units:
                inp = inp - mult * (self.units[u].channels - _f64(kept[u]))
            total = total + cost.coef * out * inp
        return total

    def min_macs(self, min_channels: int) -> float:
        """MACs with every unit cut to ``min_channels`` channels (the most LAPP can remove)."""
        kept = [float(min(min_channels, u.channels)) for u in self.units]
        return float(self.macs(kept))


def _f64(value: torch.Tensor | float) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.to(torch.float64).cpu() if value.device.type != "cpu" else value.double()
    return torch.as_tensor(float(value), dtype=torch.float64)


def _roots(model: nn.Module) -> dict[str, tuple[nn.Module, nn.Module | None]]:
    """Candidate unit roots: ``{unit name: (main conv, bypass conv or None)}``."""
    modules = dict(model.named_modules())
    roots: dict[str, tuple[nn.Module, nn.Module | None]] = {}
    for name, module in modules.items():
        if isinstance(module, BypassConv):
            roots[name] = (module.conv, module.bypass)
        elif isinstance(module, _CONVS):
            parent = name.rpartition(".")[0]
            if parent in modules and isinstance(modules[parent], BypassConv):
                continue
            roots[name] = (module, None)
    return roots


@torch.no_grad()
def _trace(model: nn.Module, example: torch.Tensor) -> tuple[dict[nn.Module, int], set[nn.Module]]:
    """Positions (output elements per channel) of every layer that runs, and the final layers."""
    positions: dict[nn.Module, int] = {}
    outputs: dict[nn.Module, torch.Tensor] = {}  # kept alive so that identities stay unique
    layers = [m for m in model.modules() if isinstance(m, _LAYERS)]

    def hook(module: nn.Module, _args: tuple, out: torch.Tensor) -> None:
        channels = module.out_features if isinstance(module, nn.Linear) else module.out_channels
        positions.setdefault(module, out.numel() // channels)
        outputs.setdefault(module, out)

    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        out = model(example)
    finally:
        for h in handles:
            h.remove()
    final = {m for m, seen in outputs.items() if seen is out}
    return positions, final


def analyze(
    model: nn.Module,
    input_shape: tuple[int, ...],
    targets: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    require_bypass: bool = False,
) -> FlopsModel:
    """Find the channel units of ``model`` and build its FLOPs model (the model is not changed).

    Args:
        model: The CNN.
        input_shape: One example's input shape (no batch dimension).
        targets: Module names or globs of the convolutions to prune (a `BypassConv`
            wrapper's name, or its ``.conv``); ``None``: every free convolution.
        exclude: Names or globs left at full width.
        require_bypass: Raise if a unit's convolution has no bypass.

    Raises:
        ValueError: A name matches nothing, a named convolution is coupled (residual sum),
            grouped or final, a bypass is missing, or no unit is left.
    """
    was_training = model.training
    model.eval()  # no BatchNorm statistics are updated by the traces
    try:
        param = next(model.parameters())
        example = torch.zeros((1, *input_shape), dtype=param.dtype, device=param.device)
        try:
            positions, final = _trace(model, example)
        except Exception as err:
            raise ValueError(
                f"input_shape {tuple(input_shape)} does not fit the model: {err}"
            ) from err
        groups = channel_groups(model, example)
    finally:
        model.train(was_training)
    names = {m: n for n, m in model.named_modules()}
    modules = dict(model.named_modules())
    roots = _roots(model)
    explicit = targets is not None

    def matches(unit: str, spec: str) -> bool:
        return (
            fnmatch.fnmatchcase(unit, spec)
            or fnmatch.fnmatchcase(f"{unit}.conv", spec)
            or (
                fnmatch.fnmatchcase(f"{unit}.weight", spec)
                or fnmatch.fnmatchcase(f"{unit}.conv.weight", spec)
            )
        )

    chosen = list(roots)
    if explicit:
        assert targets is not None
        chosen = []
        for spec in targets:
            hits = [u for u in roots if matches(u, spec)]
            if not hits:
                raise ValueError(f"targets: {spec!r} matches no convolution of the model")
            chosen.extend(h for h in hits if h not in chosen)
    for spec in exclude:
        if not any(matches(u, spec) for u in roots):
            raise ValueError(f"exclude: {spec!r} matches no convolution of the model")
        chosen = [u for u in chosen if not matches(u, spec)]

    units: list[Unit] = []
    consumers: list[list[tuple[nn.Module, int]]] = []
    for uname in chosen:
        conv, bypass = roots[uname]
        problem = None
        group = None
        if conv not in positions or names[conv] not in groups:
            problem = "it does not run in the forward pass"
        elif conv in final:
            problem = "its output is the model's output"
        elif conv.groups != 1:
            problem = "it is a grouped convolution"
        else:
            group = groups.group_of(names[conv])
        found: list[tuple[nn.Module, int]] = []
        norms: list[nn.Module] = []
        if group is not None:
            allowed = {names[conv]} | ({names[bypass]} if bypass is not None else set())
            tied = [p for p in group.producers if p not in allowed]
            if tied:
                problem = f"its channels are tied to {tied[0]!r} (a sum)"
            elif group.unsupported:
                problem = f"it reaches {group.unsupported[0]}, not supported"
            for s in group.members("in"):
                target = modules[s.param.rpartition(".")[0]]
                if getattr(target, "groups", 1) != 1:
                    problem = f"its consumer {names[target]!r} is a grouped convolution"
                elif all(target is not m for m, _ in found):
                    found.append((target, s.channel.count(0)))
            norms = [modules[n] for n in group.norms]
        if problem is None and len(norms) > 1:
            problem = "its channels reach more than one BatchNorm"
        if problem is None and require_bypass and bypass is None:
            raise ValueError(
                f"targets: convolution {uname!r} has no bypass; call "
                "sparse_lapp.add_bypasses(model, LAPP.prunable_convs(model, input_shape)) before "
                "creating the optimizer, or pass bypass=False"
            )
        if problem is not None:
            if explicit:
                raise ValueError(f"targets: cannot prune convolution {uname!r}: {problem}")
            continue
        norm = norms[0] if norms else None
        params = [f"{names[conv]}.weight"]
        if conv.bias is not None:
            params.append(f"{names[conv]}.bias")
        convs = [names[conv]]
        if bypass is None and norm is not None and norm.affine:
            params += [f"{names[norm]}.weight", f"{names[norm]}.bias"]
        norm_name = names[norm] if norm else None
        bypass_name = names[bypass] if bypass is not None else None
        units.append(Unit(uname, conv.out_channels, convs, norm_name, params, bypass_name))
        # With a bypass the unit's output channels all survive: consumers keep their width.
        consumers.append(found if bypass is None else [])
    if not units:
        raise ValueError("targets: no prunable convolution (every candidate is coupled or final)")

    layers: dict[str, LayerCost] = {}
    for module, pos in positions.items():
        if isinstance(module, nn.Linear):
            out_full, in_full = module.out_features, module.in_features
        else:
            out_full, in_full = module.out_channels, module.in_channels
        coef = pos * module.weight.numel() / (out_full * in_full)
        parent = names[module].rpartition(".")[0]
        is_bypass = parent in roots and roots[parent][1] is module
        layers[names[module]] = LayerCost(coef, out_full, in_full, bypass=is_bypass)
    for u, unit in enumerate(units):
        for conv_name in unit.convs:
            layers[conv_name].out_unit = u
        for module, mult in consumers[u]:
            layers[names[module]].in_units.append((u, mult))
    return FlopsModel(units, layers)

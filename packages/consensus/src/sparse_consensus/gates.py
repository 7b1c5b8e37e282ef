"""Input-conditioned binary gates on residual blocks and channels, with a straight-through backward.

Zhi et al., "Learning a Consensus Sub-Network with Polarization Regularization and One Pass
Training", arXiv 2302.10798 (see the package docstring for what is confirmed and what is not).

* `binary_gate`: ``1[logit > 0]`` in the forward (exactly 0 or 1), ``σ'(logit)`` in the backward
  (the straight-through estimator on the sigmoid).
* `GateNet`: the light gating module, ``GAP → Linear → ReLU → Linear → logits``.
* `ChannelGate`: one gate per output channel of a producer layer (a Conv / Linear), computed from
  that layer's *input* and applied to the output of the module that follows it (its BatchNorm):
  ``h_c ← g_c · h_c``.
* `BlockGate`: one gate per residual block whose output has its input's shape:
  ``y ← g · block(x) + (1 − g) · x`` (``g = 0`` skips the block: ``y = x``).
* `ConsensusGates`: the container `attach_gates` registers on the model as ``consensus_gates``
  (so the gate parameters are the model's, reach the optimizer and are in its ``state_dict``);
  `detach_gates` removes it and its hooks.

Each gate keeps a persistent ``average`` buffer: the running (EMA) mean of its decisions during
training, overwritten by `sparse_consensus.measure_gates` with the exact average over a data set.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from sparsecore.validation import check_int, check_number

__all__ = [
    "GATES_ATTRIBUTE",
    "BlockGate",
    "ChannelGate",
    "ConsensusGates",
    "GateNet",
    "attach_gates",
    "binary_gate",
    "detach_gates",
    "find_gates",
]

#: Name of the submodule `attach_gates` adds to the model.
GATES_ATTRIBUTE = "consensus_gates"
_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


class _BinaryGate(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(logits)
        return (logits > 0).to(logits.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (logits,) = ctx.saved_tensors
        s = torch.sigmoid(logits)
        return grad * s * (1 - s)


def binary_gate(logits: torch.Tensor) -> torch.Tensor:
    """Hard gates ``1[logits > 0]`` (exactly binary), the sigmoid's straight-through gradient."""
    return _BinaryGate.apply(logits)


def _pooled(x: torch.Tensor) -> torch.Tensor:
    """Global average pooling over every dimension after the channels (``(B, C)`` stays)."""
    return x.flatten(2).mean(2) if x.dim() > 2 else x


class GateNet(nn.Module):
    """``GAP → Linear(in, hidden) → ReLU → Linear(hidden, out)``: gate logits from features.

    Args:
        in_channels: Channels of the features the gate reads.
        out_gates: Number of gates (logits) it outputs.
        hidden: Width of the hidden layer.
        init_logit: Initial bias of the output layer (positive: gates start open).
    """

    def __init__(self, in_channels: int, out_gates: int, hidden: int, init_logit: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_channels, hidden)
        self.fc2 = nn.Linear(hidden, out_gates)
        nn.init.constant_(self.fc2.bias, init_logit)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(batch, out_gates)``."""
        return self.fc2(self.fc1(_pooled(x)).relu())


class _Gate(nn.Module):
    """Shared state of a gate: its net, last decisions, running average, forced value."""

    def __init__(self, target: str, in_channels: int, size: int, hidden: int, init_logit: float):
        super().__init__()
        self.target = target
        self.size = size
        self.net = GateNet(in_channels, size, hidden, init_logit)
        self.register_buffer("average", torch.ones(size))
        self.momentum = 0.1
        self.enabled = True
        #: ``None``, or a ``(size,)`` tensor of 0/1 used instead of the computed gates.
        self.forced: torch.Tensor | None = None
        #: Decisions of the last forward pass, ``(batch, size)``, with their STE graph.
        self.last: torch.Tensor | None = None
        self._input: torch.Tensor | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Pickle / deep-copy without the transient tensors of the last forward pass."""
        state = dict(super().__getstate__())
        state["last"] = None
        state["_input"] = None
        return state

    def decide(self, features: torch.Tensor) -> torch.Tensor:
        """Binary gates ``(batch, size)`` for ``features`` (or the forced values)."""
        if self.forced is not None:
            gates = self.forced.to(features.dtype).expand(features.shape[0], self.size)
        else:
            gates = binary_gate(self.net(features))
        self.last = gates
        if self.training and self.forced is None:
            with torch.no_grad():
                batch_mean = gates.detach().mean(0)
                self.average.mul_(1 - self.momentum).add_(self.momentum * batch_mean)
        return gates


class ChannelGate(_Gate):
    """Per-channel gates of producer ``producer``, applied to the output of ``gated``."""

    def __init__(self, producer: str, gated: str, in_channels: int, size: int, **kw: Any):
        super().__init__(producer, in_channels, size, **kw)
        self.gated = gated

    def pre_hook(self, _module: nn.Module, args: tuple[Any, ...]) -> None:
        """Remember the producer's input (the gate's features)."""
        self._input = args[0] if self.enabled else None

    def hook(self, _module: nn.Module, _args: tuple[Any, ...], out: torch.Tensor) -> Any:
        """Multiply channel ``c`` of the gated module's output by ``g_c``."""
        if not self.enabled or self._input is None:
            return None
        gates = self.decide(self._input)
        self._input = None
        return out * gates.reshape(*gates.shape, *([1] * (out.dim() - 2)))


class BlockGate(_Gate):
    """One gate for residual block ``block``: ``g · block(x) + (1 − g) · x``."""

    def __init__(self, block: str, in_channels: int, **kw: Any):
        super().__init__(block, in_channels, 1, **kw)

    def hook(self, _module: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> Any:
        """Mix the block's output with its input by the binary gate."""
        if not self.enabled:
            return None
        x = args[0]
        if out.shape != x.shape:
            raise RuntimeError(f"gated block {self.target!r} changes the shape of its input")
        g = self.decide(x).reshape(x.shape[0], *([1] * (x.dim() - 1)))
        return g * out + (1 - g) * x


class ConsensusGates(nn.Module):
    """All gates of a model (registered as ``model.consensus_gates`` by `attach_gates`)."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleDict()
        self.channels = nn.ModuleDict()

    @staticmethod
    def key(name: str) -> str:
        """ModuleDict key of a module name (dots are not allowed in keys)."""
        return name.replace(".", "__")

    def all(self) -> list[_Gate]:
        """Block gates, then channel gates."""
        return [*self.blocks.values(), *self.channels.values()]  # type: ignore[list-item]

    @contextlib.contextmanager
    def disabled(self) -> Iterator[None]:
        """Run the model without any gate (the plain network), e.g. to trace it."""
        before = [g.enabled for g in self.all()]
        for g in self.all():
            g.enabled = False
        try:
            yield
        finally:
            for g, state in zip(self.all(), before, strict=True):
                g.enabled = state

    @contextlib.contextmanager
    def forced(self, values: Mapping[str, torch.Tensor]) -> Iterator[None]:
        """Use fixed 0/1 gate values (by block / producer name) instead of the gate nets."""
        gates = {g.target: g for g in self.all()}
        unknown = sorted(set(values) - set(gates))
        if unknown:
            raise ValueError(f"values: no gate on {unknown}")
        try:
            for name, value in values.items():
                gates[name].forced = torch.as_tensor(value, dtype=torch.float32).reshape(-1)
            yield
        finally:
            for name in values:
                gates[name].forced = None

    def channels_targets(self) -> list[str]:
        """Producer names of the channel gates."""
        return [g.target for g in self.channels.values()]

    def batch_means(self) -> list[torch.Tensor]:
        """Batch means ``ḡ`` of the last forward pass's decisions, one tensor per gate."""
        return [g.last.mean(0) for g in self.all() if g.last is not None]

    def remove_hooks(self, model: nn.Module) -> None:
        """Remove this container's hooks from ``model``'s modules.

        The hooks are found by their owner (a gate of this container), not by stored handles,
        so a deep copy of a gated model detaches its own gates and leaves the original's.
        """
        owners = {id(g) for g in self.all()}
        for module in model.modules():
            for hooks in (module._forward_hooks, module._forward_pre_hooks):
                for key, fn in list(hooks.items()):
                    if id(getattr(fn, "__self__", None)) in owners:
                        del hooks[key]


def find_gates(model: nn.Module) -> ConsensusGates | None:
    """The model's `ConsensusGates`, or ``None``."""
    gates = getattr(model, GATES_ATTRIBUTE, None)
    return gates if isinstance(gates, ConsensusGates) else None


def _channels_in(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.in_features
    if isinstance(module, nn.modules.conv._ConvNd):
        return module.in_channels
    raise ValueError(f"{type(module).__name__} is not a Linear / Conv layer")


def _channels_out(module: nn.Module) -> int:
    return module.out_features if isinstance(module, nn.Linear) else module.out_channels


def _auto_blocks(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Innermost modules with >= 2 Linear/Conv layers whose output has their input's shape."""
    shapes: dict[str, bool] = {}
    handles = []
    for name, module in model.named_modules():
        if not name or isinstance(module, _LAYERS):
            continue

        def hook(_m, args, out, name=name):
            x = args[0] if args else None
            same = isinstance(x, torch.Tensor) and isinstance(out, torch.Tensor)
            shapes[name] = shapes.get(name, True) and same and x.shape == out.shape

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for h in handles:
            h.remove()
    layered = {
        n: sum(isinstance(m, _LAYERS) for m in mod.modules()) for n, mod in model.named_modules()
    }
    found = [n for n, ok in shapes.items() if ok and layered[n] >= 2]
    return [n for n in found if not any(o != n and o.startswith(n + ".") for o in found)]


def _auto_channels(model: nn.Module, example: torch.Tensor) -> dict[str, str]:
    """Producer → gated module for every prunable single-producer channel group."""
    from sparsecore.groups import channel_groups

    out = {}
    for group in channel_groups(model, example).prunable():
        if len(group.producers) == 1:
            out[group.producers[0]] = group.norms[0] if group.norms else group.producers[0]
    return out


def attach_gates(
    model: nn.Module,
    input_shape: Sequence[int] | None = None,
    *,
    blocks: Sequence[str] | None = None,
    channels: Mapping[str, str] | Sequence[str] | None = None,
    hidden: int = 16,
    init_logit: float = 3.0,
) -> ConsensusGates:
    """Add block and channel gates to ``model`` (build the optimizer afterwards).

    Args:
        model: The network (changed in place: a ``consensus_gates`` submodule and hooks).
        input_shape: One example's shape; needed when ``blocks`` or ``channels`` is ``None``
            (then found automatically with a forward pass / a trace of the channel groups).
        blocks: Names of residual blocks to gate (each must keep its input's shape); ``None``:
            the innermost shape-keeping modules with at least two Linear/Conv layers;
            ``()``: no block gates.
        channels: Producers whose output channels are gated, as ``{producer: gated module}``
            (the module after it whose output is multiplied, usually its BatchNorm) or a list of
            producers (their BatchNorm is found by tracing); ``None``: every prunable channel
            group with a single producer (`sparsecore.groups.channel_groups`); ``()``: none.
        hidden: Hidden width of every `GateNet`.
        init_logit: Initial output bias of the gate nets (positive: every gate starts open).

    Returns:
        The `ConsensusGates` (also ``model.consensus_gates``).

    Raises:
        ValueError: Gates already attached, an unknown module name, a missing
            ``input_shape``, or a bad ``hidden`` / ``init_logit``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    check_int(hidden, "hidden", 1)
    check_number(init_logit, "init_logit", finite=True)
    if find_gates(model) is not None or hasattr(model, GATES_ATTRIBUTE):
        raise ValueError(f"model already has a {GATES_ATTRIBUTE!r} attribute")
    modules = dict(model.named_modules())
    example = None
    if blocks is None or channels is None or not isinstance(channels, Mapping | None):
        if input_shape is None:
            raise ValueError("input_shape is required to find blocks / channels automatically")
        param = next(model.parameters())
        example = torch.zeros((2, *input_shape), dtype=param.dtype, device=param.device)
    was_training = model.training
    try:
        if blocks is None:
            blocks = _auto_blocks(model, example)
        if channels is None:
            channels = _auto_channels(model, example)
        elif not isinstance(channels, Mapping):
            found = _auto_channels(model, example)
            missing = [c for c in channels if c not in found]
            if missing:
                raise ValueError(f"channels: {missing} are not single-producer channel groups")
            channels = {c: found[c] for c in channels}
    finally:
        model.train(was_training)
    for name in [*blocks, *channels, *channels.values()]:
        if name not in modules or not name:
            raise ValueError(f"no module named {name!r} in the model (blocks / channels)")
    gates = ConsensusGates()
    kw = {"hidden": hidden, "init_logit": float(init_logit)}
    for name in blocks:
        layers = [m for m in modules[name].modules() if isinstance(m, _LAYERS)]
        if not layers:
            raise ValueError(f"blocks: {name!r} has no Linear / Conv layer")
        gates.blocks[gates.key(name)] = BlockGate(name, _channels_in(layers[0]), **kw)
    for producer, gated in channels.items():
        layer = modules[producer]
        gate = ChannelGate(producer, gated, _channels_in(layer), _channels_out(layer), **kw)
        gates.channels[gates.key(producer)] = gate
    model.add_module(GATES_ATTRIBUTE, gates)
    for gate in gates.blocks.values():
        modules[gate.target].register_forward_hook(gate.hook)
    for gate in gates.channels.values():
        modules[gate.target].register_forward_pre_hook(gate.pre_hook)
        modules[gate.gated].register_forward_hook(gate.hook)
    return gates


def detach_gates(model: nn.Module) -> ConsensusGates:
    """Remove the gates and their hooks: ``model`` is the plain network again.

    Raises:
        ValueError: ``model`` has no gates.
    """
    gates = find_gates(model)
    if gates is None:
        raise ValueError("model has no consensus gates (attach_gates first)")
    gates.remove_hooks(model)
    delattr(model, GATES_ATTRIBUTE)
    return gates

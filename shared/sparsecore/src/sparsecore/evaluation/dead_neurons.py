"""The dynamic dead neuron rate (DNR): how many ReLU units are inactive, averaged over data.

Liu, Ghosh, Tan & Motani, "AP: Selective Activation for De-sparsifying Pruned Neural Networks",
TMLR 2023 (arXiv 2212.06145), define, for a network with ``U`` ReLU units and a data set ``D``::

    DNR = (1 / |D|) Σ_x (1 / U) Σ_u 1[a_u(x) = 0]

the fraction of units whose ReLU output is exactly zero for input ``x``, averaged over the data.
"Dynamic" because it depends on the input (a unit dead for every input is a *static* dead unit,
reported separately here as `DeadNeuronRate.always_dead`). The paper observes that the more
a network is pruned, the lower its DNR, and that lowering it further helps; the official code
does not compute the metric, so this is an implementation of the paper's definition.

Choices (labelled, the paper leaves them open):

* **Units.** Every element of every ReLU output is one unit: one per hidden feature of a Linear
  layer, one per channel *and position* of a convolution's feature map. All inputs of a data set
  have the same ``U``, so the mean over ``x`` of the per-input fraction equals the total number of
  zero outputs over the total number of outputs; both `DeadNeuronRate.rate` and the
  per-layer rates are computed that way.
* **Which ReLUs.** Every ``nn.ReLU`` module (seen through forward hooks, named by the module) and
  every functional call (``torch.relu``, ``F.relu``, ``Tensor.relu`` and their in-place forms,
  as in ``out = self.bn1(self.conv1(x)).relu()``), seen through a ``TorchFunctionMode`` and
  named ``"<innermost module>.relu<k>"`` (``k`` counts the calls in that module's forward). A
  ReLU module's own call is counted once.
* **Mode.** The model is evaluated in ``eval()`` mode (BatchNorm running statistics, no
  dropout) under ``torch.no_grad()``; its mode is restored afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

__all__ = ["DeadNeuronRate", "dead_neuron_rate"]

_RELU_FUNCTIONS = {
    torch.relu,
    torch.relu_,
    torch.nn.functional.relu,
    torch.nn.functional.relu_,
    torch.Tensor.relu,
    torch.Tensor.relu_,
}


@dataclass(frozen=True)
class DeadNeuronRate:
    """The result of `dead_neuron_rate`.

    Attributes:
        rate: The dynamic DNR in ``[0, 1]``: zero ReLU outputs over all ReLU outputs.
        by_layer: ``{relu name: its own dead rate}``, in call order.
        units: ``U``, ReLU units per input (summed over layers).
        samples: ``|D|``, inputs seen.
        always_dead: Fraction of the ``U`` units that are zero for every input (static dead).
    """

    rate: float
    by_layer: dict[str, float] = field(default_factory=dict)
    units: int = 0
    samples: int = 0
    always_dead: float = 0.0


class _Counter:
    """Accumulates zero counts per ReLU output and per unit."""

    def __init__(self) -> None:
        self.zeros: dict[str, int] = {}
        self.total: dict[str, int] = {}
        self.units: dict[str, int] = {}
        self.alive: dict[str, torch.Tensor] = {}

    def add(self, name: str, out: torch.Tensor) -> None:
        out = out.detach()
        dead = out == 0
        self.zeros[name] = self.zeros.get(name, 0) + int(dead.sum())
        self.total[name] = self.total.get(name, 0) + dead.numel()
        self.units[name] = dead[0].numel() if dead.dim() > 0 else 1
        alive = (~dead).reshape(dead.shape[0], -1).any(0) if dead.dim() > 0 else ~dead
        previous = self.alive.get(name)
        self.alive[name] = alive if previous is None else (previous | alive)


class _FunctionalReLU(TorchFunctionMode):
    """Records the output of every functional ReLU call not made by an ``nn.ReLU`` module."""

    def __init__(self, counter: _Counter, stack: list[list[Any]]) -> None:
        super().__init__()
        self.counter = counter
        self.stack = stack

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in _RELU_FUNCTIONS and self.stack and not self.stack[-1][2]:
            frame = self.stack[-1]
            name = f"{frame[0]}.relu{frame[1]}" if frame[0] else f"relu{frame[1]}"
            frame[1] += 1
            self.counter.add(name, out)
        return out


def _inputs(data: Any, batch_size: int) -> Iterable[torch.Tensor]:
    if isinstance(data, torch.Tensor):
        for start in range(0, data.shape[0], batch_size):
            yield data[start : start + batch_size]
        return
    for item in data:
        x = item[0] if isinstance(item, tuple | list) else item
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"data: batches must be tensors or (x, y) tuples, got {type(x)}")
        yield x


@torch.no_grad()
def dead_neuron_rate(model: nn.Module, data: Any, batch_size: int = 512) -> DeadNeuronRate:
    """The dynamic dead neuron rate of ``model`` over ``data`` (Liu et al., TMLR 2023).

    Args:
        model: Any module using ReLU (as ``nn.ReLU`` modules or functional calls).
        data: Inputs: a tensor ``(N, ...)`` (split into batches of ``batch_size``), or an
            iterable of input tensors or ``(x, y)`` batches (a ``DataLoader``).
        batch_size: Batch size when ``data`` is a tensor.

    Returns:
        A `DeadNeuronRate`.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``, or ``data`` holds no tensors.
        ValueError: ``batch_size < 1``, empty data, or a model without any ReLU.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    counter = _Counter()
    stack: list[list[Any]] = []  # [module name, functional relu calls so far, is nn.ReLU]
    handles = []

    def make_pre(name: str, is_relu: bool):
        def pre(_module: nn.Module, _args: Any) -> None:
            stack.append([name, 0, is_relu])

        return pre

    def make_post(name: str, is_relu: bool):
        def post(_module: nn.Module, _args: Any, out: torch.Tensor) -> None:
            stack.pop()
            if is_relu:
                counter.add(name, out)

        return post

    for name, module in model.named_modules():
        is_relu = isinstance(module, nn.ReLU)
        handles.append(module.register_forward_pre_hook(make_pre(name, is_relu)))
        handles.append(module.register_forward_hook(make_post(name, is_relu)))
    was_training = model.training
    model.eval()
    samples = 0
    try:
        with _FunctionalReLU(counter, stack):
            for x in _inputs(data, batch_size):
                stack.clear()
                model(x.to(device))
                samples += x.shape[0]
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if samples == 0:
        raise ValueError("data: no inputs to evaluate")
    if not counter.total:
        raise ValueError("model: no ReLU output was seen (DNR is defined over ReLU units)")
    zeros, total = sum(counter.zeros.values()), sum(counter.total.values())
    units = sum(counter.units.values())
    never_alive = sum(int((~alive).sum()) for alive in counter.alive.values())
    return DeadNeuronRate(
        rate=zeros / total,
        by_layer={n: counter.zeros[n] / counter.total[n] for n in counter.total},
        units=units,
        samples=samples,
        always_dead=never_alive / units if units else 0.0,
    )

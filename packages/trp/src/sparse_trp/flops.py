"""Closed-form multiply-accumulate counts of dense and decomposed layers.

TRP (Xu et al., IJCAI 2020, arXiv 2004.14566) reports FLOPs reductions computed in closed form
(``show_low_rank`` in the official ``cifar-TRP.py``: per output position ``N·C·k²`` for a dense
convolution, ``C·k²·R + R·N`` for NC, ``C·R·kh + N·R·kw`` for VH, ``(N·C + N·k²)·R`` for ND).

Choices, with reasons:

* Counts are multiply-accumulates (MACs) of the Conv/Linear weights for one example; biases,
  normalisation and activations are left out, like the official count.
* Unlike ``show_low_rank`` (which assumes stride 1 and "same" padding for the decomposed layers
  and special-cases ResNet's ``downsample`` names), the spatial sizes are the real ones, recorded
  with forward hooks on an example input: VH's first factor runs at ``H_out × W_in`` and ND's
  point-wise factor at the input resolution, so strided layers are counted exactly.
* The official count covers convolutions only; here Linear layers count too (``in·out`` per
  token), in both the dense and the decomposed model, so ratios stay comparable.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from sparse_trp.decompose import LAYER_TYPES

__all__ = ["decomposed_macs", "dense_macs", "layer_inputs", "model_macs", "plan_at_macs"]


@torch.no_grad()
def layer_inputs(model: nn.Module, example: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """Input size per Conv/Linear layer for one example (spatial size, or tokens for Linear).

    Args:
        model: The model (its mode is restored afterwards).
        example: A batch of inputs; only its shape matters (sizes are per example).
    """
    sizes: dict[str, tuple[int, ...]] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, LAYER_TYPES):

            def hook(mod: nn.Module, args: tuple, _out: Any, name: str = name) -> None:
                x = args[0]
                if isinstance(mod, nn.Linear):
                    sizes[name] = (x.numel() // (x.shape[0] * mod.in_features),)
                else:
                    sizes[name] = tuple(x.shape[2:])

            handles.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        model(example)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return sizes


def _out_size(size: tuple[int, ...], module: nn.Module, axes: range | None = None) -> list[int]:
    out = []
    for i, length in enumerate(size):
        if axes is not None and i not in axes:
            out.append(length)
            continue
        if isinstance(module.padding, str):
            if module.padding == "same":
                out.append(length)
                continue
            pad = 0
        else:
            pad = module.padding[i]
        span = module.dilation[i] * (module.kernel_size[i] - 1) + 1
        out.append((length + 2 * pad - span) // module.stride[i] + 1)
    return out


def dense_macs(module: nn.Module, size: tuple[int, ...]) -> int:
    """MACs of a dense Conv/Linear ``module`` whose input has spatial size ``size``."""
    if isinstance(module, nn.Linear):
        return module.in_features * module.out_features * size[0]
    per_position = module.weight.numel()  # N · C/groups · prod(k)
    return per_position * math.prod(_out_size(size, module))


def decomposed_macs(module: nn.Module, scheme: str, rank: int, size: tuple[int, ...]) -> int:
    """MACs of the two-layer factorisation of ``module`` at ``rank`` (closed form).

    NC: ``(C·K·R + R·N)·|out|``; VH: ``C·kh·R·(H_out·W_in) + R·kw·N·(H_out·W_out)``;
    ND: ``C·N·R·|in| + N·R·K·|out|``; Linear: ``(in·R + R·out)·tokens``.
    """
    if isinstance(module, nn.Linear):
        return (module.in_features + module.out_features) * rank * size[0]
    n, c = module.out_channels, module.in_channels
    k = math.prod(module.kernel_size)
    out = math.prod(_out_size(size, module))
    if scheme == "NC":
        return (c * k * rank + rank * n) * out
    if scheme == "VH":
        mid = math.prod(_out_size(size, module, axes=range(1)))  # H_out · W_in
        kh, kw = module.kernel_size
        return c * kh * rank * mid + rank * kw * n * out
    if scheme == "ND":
        return c * n * rank * math.prod(size) + n * rank * k * out
    raise ValueError(f"scheme must be 'NC', 'VH' or 'ND', got {scheme!r}")


def model_macs(model: nn.Module, example: torch.Tensor, plan: dict[str, Any] | None = None) -> int:
    """Closed-form MACs per example of every Conv/Linear layer of ``model``.

    Args:
        model: The *undecomposed* model.
        example: A batch of inputs (used for the layers' spatial sizes).
        plan: A decomposition plan; planned layers are counted as decomposed.
    """
    sizes = layer_inputs(model, example)
    ranks = plan["ranks"] if plan is not None else {}
    scheme = plan["scheme"] if plan is not None else "NC"
    total = 0
    for name, module in model.named_modules():
        if name not in sizes:
            continue
        if name in ranks:
            total += decomposed_macs(module, scheme, ranks[name], sizes[name])
        else:
            total += dense_macs(module, sizes[name])
    return total


def plan_at_macs(
    model: nn.Module,
    layers: list[str],
    scheme: str,
    target_macs: int,
    example: torch.Tensor,
    iterations: int = 40,
) -> tuple[dict[str, Any], float]:
    """Post-hoc SVD baseline at a FLOP budget: one energy threshold for every layer.

    Finds (by bisection) the smallest energy threshold ``e`` whose plan
    (`sparse_trp.decompose.plan_ranks` with ``EnergyThreshold(e)``) costs at least
    ``target_macs`` per example, so the baseline never gets fewer MACs than the budget.

    Args:
        model: The trained dense model.
        layers: Module names that may be decomposed.
        scheme: ``"NC"``, ``"VH"`` or ``"ND"``.
        target_macs: MACs per example to match (e.g. ``model_macs`` of a TRP plan).
        example: A batch of inputs (spatial sizes).
        iterations: Bisection steps.

    Returns:
        ``(plan, threshold)``.
    """
    from sparse_trp.decompose import plan_ranks
    from sparse_trp.lowrank import EnergyThreshold

    def plan(e: float) -> dict[str, Any]:
        return plan_ranks(model, layers, scheme, EnergyThreshold(e), example=example)

    low, high = 0.0, 1.0
    for _ in range(iterations):
        mid = (low + high) / 2
        if mid <= 0:
            break
        if model_macs(model, example, plan(mid)) >= target_macs:
            high = mid
        else:
            low = mid
    return plan(high), high

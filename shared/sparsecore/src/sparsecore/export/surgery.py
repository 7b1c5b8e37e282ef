"""Structured surgery: physically remove pruned output channels, filters and neurons.

The dependency analysis (which BatchNorm, which next-layer inputs, which residual partners go with
a channel) is Torch-Pruning's (``torch_pruning.DependencyGraph``, the optional extra
``sparse-core[structured]``); this module decides *what* may be removed so that the result computes
exactly what the masked model computed:

* a channel of a Linear / Conv layer is a candidate when its whole output slice (``weight[i]``) is
  masked (or zero, without masks);
* with coupled layers (a residual sum), an index is removed only if it is dead in every coupled
  layer;
* a dead channel may still emit a constant (its bias, a BatchNorm shift, ...). Where that constant
  reaches a Linear or an unpadded, ungrouped Conv, its contribution is folded into that consumer's
  bias, which is exact. Where it reaches a padded Conv (border effects) the channel is kept and
  reported, rather than silently changing the function;
* channels masked as *groups* (``sparsecore.groups``: ``pattern="channel"`` with
  ``input_shape`` in the core baselines) are silent by construction: their biases and BatchNorm
  weights and shifts are masked too, and residual partners share one mask, so every masked group
  is removed (nothing to fold, no padded-border problem);
* layers whose output is the model's output are never shrunk;
* at the end the new model is compared with the masked model on ``example_inputs`` (eval mode)
  and a ``RuntimeError`` is raised beyond ``atol``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from sparsecore.tracing import flat_outputs, import_torch_pruning, run_model

__all__ = ["remove_channels"]

_log = logging.getLogger(__name__)
_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _dead_rows(layer: nn.Module) -> list[int]:
    rows = layer.weight.detach().reshape(layer.weight.shape[0], -1)
    return torch.nonzero(~rows.ne(0).any(1)).flatten().tolist()


def _capture(model: nn.Module, inputs: Any, layers: list[nn.Module]) -> dict[nn.Module, Any]:
    """Inputs of ``layers`` and outputs of every layer, from one forward pass."""
    seen: dict[nn.Module, Any] = {}

    def hook(module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        seen.setdefault(module, (args[0], out))

    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        out = run_model(model, inputs)
    finally:
        for h in handles:
            h.remove()
    seen[model] = out
    return seen


def _fold_delta(
    consumer: nn.Module, x: torch.Tensor, idxs: list[int], atol: float
) -> torch.Tensor | str | None:
    """Bias change that replaces the constant inputs ``x[..., idxs]`` of ``consumer``.

    Returns ``None`` when those inputs are zero (nothing to fold), a tensor to add to the bias,
    or a string saying why folding would not be exact.
    """
    if isinstance(consumer, nn.Linear):
        channels = x.reshape(-1, x.shape[-1]).t()
    else:
        channels = x.movedim(1, 0).reshape(x.shape[1], -1)
    vals = channels[idxs]
    const = vals.mean(1)
    if bool((vals - const[:, None]).abs().max() > atol):
        return "its input is not constant"
    if bool((const.abs() <= atol).all()):
        return None
    if isinstance(consumer, nn.Linear):
        return consumer.weight[:, idxs] @ const
    padding = consumer.padding
    padded = padding == "same" if isinstance(padding, str) else any(p != 0 for p in padding)
    if consumer.groups != 1 or padded:
        return "a nonzero constant reaches a padded or grouped convolution"
    weight = consumer.weight[:, idxs].reshape(consumer.out_channels, len(idxs), -1).sum(-1)
    return weight @ const


def _add_bias(consumer: nn.Module, delta: torch.Tensor) -> None:
    if consumer.bias is None:
        consumer.bias = nn.Parameter(torch.zeros_like(delta))
    consumer.bias.add_(delta)


@torch.no_grad()
def remove_channels(
    model: nn.Module,
    example_inputs: Any,
    masks: Mapping[str, torch.Tensor] | None = None,
    *,
    atol: float = 1e-5,
) -> dict[str, int]:
    """Physically remove masked output channels and everything that depends on them, in place.

    Args:
        model: A plain model (finalize the method first: ``masks = dict(method.masks.masks());
            method.finalize()``). It is modified in place.
        example_inputs: A tensor, a tuple of positional inputs or a dict of keyword inputs, used
            to trace the graph and to verify the result.
        masks: Keep-masks by parameter name (``"features.0.weight"``); the weights are multiplied
            by them first. ``None``: channels whose weight slice is entirely zero are removed.
        atol: Tolerance of the final output comparison and of the constant-channel analysis.

    Returns:
        Number of channels removed per layer name.

    Raises:
        ImportError: Torch-Pruning is not installed.
        ValueError: The model still has mask buffers, or a mask does not fit its parameter.
        RuntimeError: The shrunk model's output differs from the masked model's by more than
            ``atol`` (cannot happen for Linear/Conv/BatchNorm/ReLU graphs).
    """
    tp = import_torch_pruning("remove_channels")
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    buffers = [n for n, _ in model.named_buffers() if n.endswith("_mask")]
    if buffers:
        raise ValueError(f"model still has mask buffers {buffers[:3]}; call method.finalize()")
    params = dict(model.named_parameters())
    for name, keep in (masks or {}).items():
        if name not in params or params[name].shape != keep.shape:
            raise ValueError(f"mask {name!r} does not match a parameter of the model")
        params[name].mul_(keep.to(params[name].device))
    was_training = model.training
    model.eval()
    names = {m: n for n, m in model.named_modules()}
    layers = [m for m in model.modules() if isinstance(m, _LAYERS)]
    seen = _capture(model, example_inputs, layers)
    reference = [t.clone() for t in flat_outputs(seen[model])]
    final_ids = {id(t) for t in flat_outputs(seen[model])}
    final_layers = {m for m in layers if m in seen and id(seen[m][1]) in final_ids}
    with torch.enable_grad():  # Torch-Pruning traces through autograd
        graph = tp.DependencyGraph().build_dependency(model, example_inputs, verbose=False)
    removed: dict[str, int] = {}
    for layer in layers:
        if layer in final_layers or layer not in graph.module2node:
            continue
        dead = _dead_rows(layer)
        if not dead or len(dead) == layer.weight.shape[0]:
            continue
        linear = isinstance(layer, nn.Linear)
        prune_fn = tp.prune_linear_out_channels if linear else tp.prune_conv_out_channels
        group = graph.get_pruning_group(layer, prune_fn, dead)
        keep_roots = set(dead)
        for item in group.items:
            target = item.dep.target.module
            if target is layer or not isinstance(target, _LAYERS):
                continue
            if graph.is_out_channel_pruning_fn(item.dep.handler):
                if target in final_layers:
                    keep_roots = set()
                partner = set(_dead_rows(target))
                pairs = zip(item.idxs, item.root_idxs, strict=True)
                keep_roots &= {root for idx, root in pairs if idx in partner}
        if not keep_roots:
            continue
        group = graph.get_pruning_group(layer, prune_fn, sorted(keep_roots))
        seen = _capture(model, example_inputs, layers)
        folds, problem = [], None
        for item in group.items:
            target = item.dep.target.module
            if graph.is_in_channel_pruning_fn(item.dep.handler) and isinstance(target, _LAYERS):
                delta = _fold_delta(target, seen[target][0], list(item.idxs), atol)
                if isinstance(delta, str):
                    problem = f"{names[target]}: {delta}"
                elif delta is not None:
                    folds.append((target, delta))
        if problem is not None:
            _log.warning("kept the dead channels of %s (%s)", names[layer], problem)
            continue
        for target, delta in folds:
            _add_bias(target, delta)
        group.prune()
        removed[names[layer]] = len(keep_roots)
    out = flat_outputs(run_model(model, example_inputs))
    model.train(was_training)
    for got, want in zip(out, reference, strict=True):
        if got.shape != want.shape or (got - want).abs().max() > atol:
            raise RuntimeError(
                "remove_channels changed the model's output beyond atol (the model is left "
                "modified); please report this with the model"
            )
    return removed

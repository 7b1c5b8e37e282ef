"""Calibration statistics for one-shot pruning, captured layer by layer.

Two drivers, both calling back into the pruning method as soon as a layer's statistics are
complete, so the next layer is calibrated on the outputs of the *already pruned* one (as the
SparseGPT and Wanda code do, "sequential" calibration):

* `calibrate_decoder`: a Hugging Face decoder (Llama, Qwen2, Mistral, GPT-2, OPT, ...).
  The inputs of decoder layer 0 are captured once (the forward is stopped there), then each layer
  in turn runs on the cached hidden states with forward hooks on its Linear modules, the callback
  prunes the layer, and the pruned layer's outputs become the next layer's inputs. Only one
  layer's inputs (``blocks × seq_len × hidden``) and the statistics of one layer's Linears are held
  at a time: never the activations of the whole model.
* `calibrate_modules`: any other model (an MLP): the targets are visited in the order the
  forward first reaches them, and for each one the whole model runs on the calibration batches
  (earlier targets already pruned). One forward pass per target: meant for small models.

Statistics per module (`LinearStatistics`), accumulated over every token of every block:
``sq_sum[j] = Σ x_j²`` (so ``‖X_j‖₂ = sqrt(sq_sum[j])``, Wanda's input norm) and, when asked,
``gram = Σ x xᵀ`` (SparseGPT's Hessian ``H = X Xᵀ`` up to the constant ``2/N``, which changes
neither its mask nor its update). Choices, labelled: sums are float64 for ``sq_sum`` and float32
for ``gram`` (the official SparseGPT keeps H in float32); the layer's own device is used unless
``device`` is given (then each layer is moved there for its turn and moved back, as the official
drivers offload layers to the GPU one at a time).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from sparsecore.layouts import is_hf_conv1d

__all__ = [
    "LinearStatistics",
    "StatisticsHooks",
    "calibrate_decoder",
    "calibrate_modules",
    "decoder_layers",
    "input_ids_of",
]

#: Attribute paths of the decoder-layer stack in common Hugging Face causal LMs.
LAYER_PATHS = ("model.layers", "model.decoder.layers", "transformer.h", "gpt_neox.layers")


@dataclass
class LinearStatistics:
    """Input statistics of one Linear (or HF ``Conv1D``) module.

    Attributes:
        name: Qualified module name.
        sq_sum: ``Σ x_j²`` over all tokens, float64, shape ``(in_features,)``.
        gram: ``Σ x xᵀ`` over all tokens, float32, ``(in_features, in_features)``, or ``None``.
        tokens: Number of input rows (tokens) seen.
    """

    name: str
    sq_sum: torch.Tensor
    gram: torch.Tensor | None = None
    tokens: int = 0

    @property
    def input_norms(self) -> torch.Tensor:
        """``‖X_j‖₂`` per input feature (Wanda's activation norm), float64."""
        return self.sq_sum.sqrt()

    def add(self, x: torch.Tensor) -> None:
        """Accumulate a batch of inputs ``(..., in_features)``."""
        self.add_terms(*batch_terms(x, self.gram is not None))

    def add_terms(self, sq: torch.Tensor, gram: torch.Tensor | None, tokens: int) -> None:
        """Accumulate precomputed batch terms (see `batch_terms`)."""
        self.sq_sum += sq.to(self.sq_sum.device)
        if self.gram is not None:
            assert gram is not None
            self.gram += gram.to(self.gram.device)
        self.tokens += tokens


def batch_terms(x: torch.Tensor, hessian: bool) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """``(Σ x_j² (float64), Σ x xᵀ (float32) or None, tokens)`` of one input batch."""
    flat = x.detach().reshape(-1, x.shape[-1])
    f32 = flat.float() if hessian else None
    gram = f32.T @ f32 if f32 is not None else None
    return flat.double().pow(2).sum(0), gram, int(flat.shape[0])


def _in_features(module: nn.Module) -> int:
    weight = module.weight
    return int(weight.shape[0] if is_hf_conv1d(module) else weight.shape[1])


class StatisticsHooks:
    """Forward hooks that accumulate `LinearStatistics` on some modules.

    Use as a context manager around forward passes; `stats` holds the result.

    Args:
        modules: Modules by qualified name (Linear, or HF ``Conv1D``).
        hessian: Also accumulate ``Σ x xᵀ``.
    """

    def __init__(self, modules: Mapping[str, nn.Module], hessian: bool = False) -> None:
        self.modules = dict(modules)
        self.stats: dict[str, LinearStatistics] = {}
        for name, module in self.modules.items():
            size = _in_features(module)
            device = module.weight.device
            self.stats[name] = LinearStatistics(
                name,
                torch.zeros(size, dtype=torch.float64, device=device),
                torch.zeros(size, size, dtype=torch.float32, device=device) if hessian else None,
            )
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._last: tuple[torch.Tensor, tuple[int, bool], tuple] | None = None

    def __enter__(self) -> StatisticsHooks:
        for name, module in self.modules.items():
            stat = self.stats[name]
            self._handles.append(
                module.register_forward_hook(lambda _m, inputs, _o, s=stat: self._add(s, inputs[0]))
            )
        return self

    def _add(self, stat: LinearStatistics, x: torch.Tensor) -> None:
        # Linears fed the very same tensor (q/k/v, gate/up) share one computation of its terms:
        # the Gram matrix is the cost that matters, and a Llama layer has 4 distinct inputs for 7
        # Linears. Identity and the version counter guard against a reused, modified tensor.
        cached = self._last
        hessian = stat.gram is not None
        if cached is not None and cached[0] is x and cached[1] == (x._version, hessian):
            terms = cached[2]
        else:
            terms = batch_terms(x, hessian)
            self._last = (x, (x._version, hessian), terms)
        stat.add_terms(*terms)

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._last = None


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The stack of decoder layers of a Hugging Face causal LM.

    Raises:
        ValueError: No known layer stack (naming the ``model`` argument).
    """
    for path in LAYER_PATHS:
        node: Any = model
        for part in path.split("."):
            node = getattr(node, part, None)
            if node is None:
                break
        if isinstance(node, nn.ModuleList) and len(node) > 0:
            return node
    raise ValueError(
        f"model: no decoder layer stack found in {type(model).__name__} "
        f"(looked for {', '.join(LAYER_PATHS)})"
    )


def input_ids_of(batch: Any) -> torch.Tensor:
    """The token ids of a calibration batch: a tensor, an ``(ids, labels)`` pair or a dict."""
    if isinstance(batch, dict):
        batch = batch["input_ids"]
    elif isinstance(batch, tuple | list):
        batch = batch[0]
    if not isinstance(batch, torch.Tensor):
        raise TypeError(f"batches: expected token-id tensors, got {type(batch).__name__}")
    return batch if batch.ndim == 2 else batch.reshape(1, -1)


class _Stop(Exception):
    """Raised by the capture hook to stop the forward at decoder layer 0."""


def _to(value: Any, device: torch.device | None) -> Any:
    if device is None:
        return value
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple | list):
        return type(value)(_to(v, device) for v in value)
    return value


@dataclass
class _LayerInput:
    hidden: torch.Tensor
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


def _capture_first_inputs(
    model: nn.Module, first: nn.Module, batches: Iterable[torch.Tensor]
) -> list[_LayerInput]:
    captured: list[_LayerInput] = []

    def hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        hidden = args[0] if args else kwargs.pop("hidden_states")
        captured.append(_LayerInput(hidden.detach(), tuple(args[1:]), dict(kwargs)))
        raise _Stop

    handle = first.register_forward_pre_hook(hook, with_kwargs=True)
    device = next(model.parameters()).device
    try:
        for ids in batches:
            with contextlib.suppress(_Stop):
                model(input_ids=ids.to(device), use_cache=False)
    finally:
        handle.remove()
    return captured


def _run_layer(layer: nn.Module, item: _LayerInput) -> torch.Tensor:
    out = layer(item.hidden, *item.args, **item.kwargs)
    return out[0] if isinstance(out, tuple | list) else out


LayerCallback = Callable[[int, dict[str, LinearStatistics]], None]


@torch.no_grad()
def calibrate_decoder(
    model: nn.Module,
    batches: Iterable[Any],
    on_layer: LayerCallback,
    modules: Mapping[str, nn.Module] | None = None,
    hessian: bool = False,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> int:
    """Sequential, layer-by-layer calibration of a Hugging Face decoder.

    Args:
        model: A causal LM (its layer stack is found by `decoder_layers`).
        batches: Calibration batches of token ids (see `input_ids_of`).
        on_layer: Called as ``on_layer(index, stats)`` once layer ``index``'s statistics are
            complete (``stats`` by qualified module name); it may prune the layer in place, and
            the *pruned* layer's outputs feed the next layer.
        modules: The modules to collect statistics on, by qualified name (default: every
            Linear / HF ``Conv1D`` inside the layers). Modules outside the layers are ignored.
        hessian: Also accumulate ``Σ x xᵀ`` (SparseGPT).
        device: Run each layer on this device (moved there and back); default: where it is.
        progress: Show a per-layer progress bar.

    Returns:
        The number of calibration tokens.

    Raises:
        ValueError: No layer stack, or no batches.
    """
    from tqdm.auto import tqdm

    layers = decoder_layers(model)
    prefix = {id(m): n for n, m in model.named_modules()}
    ids = [input_ids_of(b) for b in batches]
    if not ids:
        raise ValueError("batches is empty: calibration needs at least one batch")
    was_training = model.training
    model.eval()
    target = torch.device(device) if device is not None else None
    try:
        inputs = _capture_first_inputs(model, layers[0], ids)
        inputs = [
            _LayerInput(_to(i.hidden, target), _to(i.args, target), _to(i.kwargs, target))
            for i in inputs
        ]
        bar = tqdm(range(len(layers)), desc="calibrate", disable=not progress, leave=False)
        for index in bar:
            layer = layers[index]
            home = next(layer.parameters()).device
            if target is not None:
                layer.to(target)
            base = prefix[id(layer)]
            own = {
                n: m
                for n, m in layer.named_modules()
                if (isinstance(m, nn.Linear) or is_hf_conv1d(m))
                and (modules is None or f"{base}.{n}" in modules)
            }
            hooks = StatisticsHooks({f"{base}.{n}": m for n, m in own.items()}, hessian)
            with hooks:
                for item in inputs:
                    _run_layer(layer, item)
            on_layer(index, hooks.stats)
            for item in inputs:  # outputs of the pruned layer feed the next one
                item.hidden = _run_layer(layer, item)
            if target is not None:
                layer.to(home)
    finally:
        model.train(was_training)
    return sum(int(i.numel()) for i in ids)


ModuleCallback = Callable[[str, LinearStatistics], None]


def _forward(model: nn.Module, batch: Any) -> None:
    if isinstance(batch, dict):
        model(**batch)
    elif isinstance(batch, tuple | list):
        model(batch[0])
    else:
        model(batch)


@torch.no_grad()
def calibrate_modules(
    model: nn.Module,
    batches: Iterable[Any],
    modules: Mapping[str, nn.Module],
    on_module: ModuleCallback,
    hessian: bool = False,
) -> list[str]:
    """Sequential calibration of any model, one target module at a time in forward order.

    Args:
        model: The model.
        batches: Inputs: tensors, ``(x, y)`` pairs or dicts of keyword arguments.
        modules: Target modules by qualified name (Linear or HF ``Conv1D``).
        on_module: ``on_module(name, stats)``, called once the statistics of ``name`` are
            complete; it may prune that module before the next one is calibrated.
        hessian: Also accumulate ``Σ x xᵀ``.

    Returns:
        The module names in the order they were visited.

    Raises:
        ValueError: No batches, or a target the forward never reaches.
    """
    batches = list(batches)
    if not batches:
        raise ValueError("batches is empty: calibration needs at least one batch")
    order: list[str] = []
    handles = [
        m.register_forward_hook(lambda *_, n=n: order.append(n) if n not in order else None)
        for n, m in modules.items()
    ]
    was_training = model.training
    model.eval()
    try:
        try:
            _forward(model, batches[0])
        finally:
            for handle in handles:
                handle.remove()
        missing = sorted(set(modules) - set(order))
        if missing:
            raise ValueError(f"targets never reached by the forward pass: {', '.join(missing)}")
        for name in order:
            hooks = StatisticsHooks({name: modules[name]}, hessian)
            with hooks:
                for batch in batches:
                    _forward(model, batch)
            on_module(name, hooks.stats[name])
    finally:
        model.train(was_training)
    return order

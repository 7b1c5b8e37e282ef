"""Parameter and FLOP counters, dense and effective.

What is counted (multiply-accumulates, MACs; one MAC is two FLOPs):

* ``nn.Linear`` (and subclasses): ``rows × in × out`` dense, ``rows × nnz(W)`` effective, where
  ``rows`` is the number of input vectors (batch × sequence).
* ``nn.Conv1d/2d/3d``: ``positions × numel(W)`` dense, ``positions × nnz(W)`` effective, where
  ``positions`` is batch × output spatial size (groups and padding included as PyTorch computes
  them).
* Hugging Face ``Conv1D`` (GPT-2's projections): like ``Linear``.
* ``nn.MultiheadAttention``: its input and output projections (effective by the nonzeros of each
  projection's slice) and the two attention matmuls ``QKᵀ`` and ``AV``, ``2 × batch × L × S × E``.
* Hugging Face attention modules (any module whose class name ends in ``Attention`` and that
  exposes a head count and head size, e.g. ``BertSelfAttention``, ``GPT2Attention``,
  ``LlamaAttention``): the two attention matmuls ``2 × batch × heads × L × S × head_dim``, with
  ``S = L`` for self-attention (causal masks are applied to a full ``L × S`` product, which is
  what dense kernels compute). Their projections are counted as Linear / Conv1D.

Attention matmuls multiply activations by activations: weight sparsity does not remove them, so
their effective count equals the dense count. Not counted: biases, normalisation, activations,
softmax, embeddings lookups, pooling (all linear in the activations, small next to the matmuls).

``effective`` counts only nonzero weights (the mask applied where a method is set up). For a
physically smaller model (structured surgery) the dense count is itself smaller: the counters use
the shapes actually run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from sparsecore.evaluation.report import effective_tensor

__all__ = ["FlopCount", "TrainingFlopCount", "count_flops", "count_params", "count_training_flops"]

_HEAD_ATTRS = ("num_attention_heads", "num_heads", "n_head", "n_heads")
_HEAD_DIM_ATTRS = ("attention_head_size", "head_dim", "d_head")


@dataclass(frozen=True)
class FlopCount:
    """Multiply-accumulates of one forward pass.

    Attributes:
        dense: MACs with every weight counted.
        effective: MACs with only nonzero weights counted.
        by_module: ``{module name: (dense, effective)}``.
    """

    dense: int
    effective: int
    by_module: dict[str, tuple[int, int]] = field(default_factory=dict, repr=False)

    @property
    def ratio(self) -> float:
        """``effective / dense`` (1.0 for an empty count)."""
        return self.effective / self.dense if self.dense else 1.0


def _nnz(module: nn.Module, name: str = "weight") -> int:
    return int(torch.count_nonzero(effective_tensor(module, name)))


def _heads(module: nn.Module) -> tuple[int, int] | None:
    """``(heads, head_dim)`` of a Hugging Face style attention module, or ``None``."""
    if not type(module).__name__.endswith("Attention") or isinstance(module, nn.MultiheadAttention):
        return None
    heads = next((getattr(module, a) for a in _HEAD_ATTRS if hasattr(module, a)), None)
    config = getattr(module, "config", None)
    if heads is None and config is not None:
        heads = getattr(config, "num_attention_heads", None)
    head_dim = next((getattr(module, a) for a in _HEAD_DIM_ATTRS if hasattr(module, a)), None)
    if head_dim is None and heads and config is not None and hasattr(config, "hidden_size"):
        head_dim = config.hidden_size // heads
    if isinstance(heads, int) and isinstance(head_dim, int) and heads > 0 and head_dim > 0:
        return heads, head_dim
    return None


def _mha_macs(module: nn.MultiheadAttention, args: tuple, kwargs: dict) -> tuple[int, int]:
    query = args[0] if args else kwargs["query"]
    key = args[1] if len(args) > 1 else kwargs.get("key", query)
    e = module.embed_dim
    if query.dim() == 2:  # unbatched (L, E)
        batch, length, source = 1, query.shape[0], key.shape[0]
    elif module.batch_first:
        batch, length, source = query.shape[0], query.shape[1], key.shape[1]
    else:
        batch, length, source = query.shape[1], query.shape[0], key.shape[0]
    if module.in_proj_weight is not None:
        w = effective_tensor(module, "in_proj_weight")
        nnz_q, nnz_k, nnz_v = (int(torch.count_nonzero(w[i * e : (i + 1) * e])) for i in range(3))
        numel_q, numel_k, numel_v = e * e, e * e, e * e
    else:
        ws = [effective_tensor(module, f"{p}_proj_weight") for p in "qkv"]
        nnz_q, nnz_k, nnz_v = (int(torch.count_nonzero(x)) for x in ws)
        numel_q, numel_k, numel_v = (x.numel() for x in ws)
    out = module.out_proj
    nnz_o = _nnz(out)
    attn = 2 * batch * length * source * e
    dense = batch * (length * (numel_q + out.weight.numel()) + source * (numel_k + numel_v)) + attn
    effective = batch * (length * (nnz_q + nnz_o) + source * (nnz_k + nnz_v)) + attn
    return dense, effective


def _as_call(example_input: Any) -> tuple[tuple, dict]:
    if isinstance(example_input, Mapping):
        return (), dict(example_input)
    if isinstance(example_input, tuple | list):
        return tuple(example_input), {}
    return (example_input,), {}


@torch.no_grad()
def count_flops(model: nn.Module, example_input: Any) -> FlopCount:
    """Count the MACs of one forward pass of ``model`` on ``example_input``.

    The model runs once in eval mode (its mode is restored), with forward hooks on the counted
    modules (see the module docstring for what is counted).

    Args:
        model: The model.
        example_input: A tensor, a tuple of positional arguments, or a mapping of keyword
            arguments (e.g. ``{"input_ids": ids}`` for a Hugging Face model). The batch size is
            part of the count.

    Returns:
        A `FlopCount`.
    """
    counts: dict[str, list[int]] = {}
    nnz_cache: dict[str, int] = {}
    handles = []

    def add(name: str, dense: int, effective: int) -> None:
        entry = counts.setdefault(name, [0, 0])
        entry[0] += dense
        entry[1] += effective

    def cached_nnz(name: str, module: nn.Module) -> int:
        if name not in nnz_cache:
            nnz_cache[name] = _nnz(module)
        return nnz_cache[name]

    def linear_hook(name: str, features: int):
        def hook(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            rows = output.numel() // features
            add(
                name,
                rows * effective_tensor(module, "weight").numel(),
                rows * cached_nnz(name, module),
            )

        return hook

    def mha_hook(name: str):
        def hook(module: nn.Module, args: tuple, kwargs: dict, _output: Any) -> None:
            add(name, *_mha_macs(module, args, kwargs))  # type: ignore[arg-type]

        return hook

    def attention_hook(name: str, heads: int, head_dim: int):
        def hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
            hidden = kwargs.get("hidden_states", args[0] if args else None)
            if not isinstance(hidden, torch.Tensor) or hidden.dim() < 2:
                return
            source = kwargs.get("encoder_hidden_states")
            batch = hidden.shape[0] if hidden.dim() == 3 else 1
            length = hidden.shape[-2]
            span = source.shape[-2] if isinstance(source, torch.Tensor) else length
            macs = 2 * batch * heads * length * span * head_dim
            add(name, macs, macs)

        return hook

    modules = dict(model.named_modules())
    inside_mha = {
        f"{n}.{c}" if n else c
        for n, m in modules.items()
        if isinstance(m, nn.MultiheadAttention)
        for c, _ in m.named_modules()
        if c
    }
    attention = {n: h for n, m in modules.items() if (h := _heads(m)) is not None}
    # Count only the innermost attention module of a nested pair (e.g. BertSelfAttention).
    attention = {
        n: h for n, h in attention.items() if not any(o.startswith(f"{n}.") for o in attention)
    }
    for name, module in modules.items():
        if name in inside_mha:
            continue
        if isinstance(module, nn.MultiheadAttention):
            handles.append(module.register_forward_hook(mha_hook(name), with_kwargs=True))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook(name, module.out_features)))
        elif isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d):
            handles.append(module.register_forward_hook(linear_hook(name, module.out_channels)))
        elif type(module).__name__ == "Conv1D" and hasattr(module, "nf"):
            handles.append(module.register_forward_hook(linear_hook(name, int(module.nf))))
        if name in attention:
            heads, head_dim = attention[name]
            handles.append(
                module.register_forward_pre_hook(
                    attention_hook(name, heads, head_dim), with_kwargs=True
                )
            )
    args, kwargs = _as_call(example_input)
    was_training = model.training
    model.eval()
    try:
        model(*args, **kwargs)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    by_module = {n: (d, e) for n, (d, e) in counts.items()}
    return FlopCount(
        dense=sum(d for d, _ in by_module.values()),
        effective=sum(e for _, e in by_module.values()),
        by_module=by_module,
    )


@torch.no_grad()
def count_params(model: nn.Module) -> tuple[int, int]:
    """Total and nonzero parameter entries (masks applied; shared parameters counted once).

    Args:
        model: The model. For parametrized tensors (``ste`` / ``soft`` masking) the dense
            underlying tensor is the one counted in the total, the effective one for nonzeros.

    Returns:
        ``(total, nonzero)``.
    """
    total = nonzero = 0
    seen: set[int] = set()
    for module in model.modules():
        if isinstance(module, parametrize.ParametrizationList):
            continue
        names = [n for n, _ in module.named_parameters(recurse=False)]
        originals = {n: getattr(module, n) for n in names}
        if parametrize.is_parametrized(module):
            for pname in module.parametrizations:
                names.append(pname)
                originals[pname] = module.parametrizations[pname].original
        for pname in names:
            key = id(originals[pname])
            if key in seen:
                continue
            seen.add(key)
            tensor = effective_tensor(module, pname)
            total += tensor.numel()
            nonzero += int(torch.count_nonzero(tensor))
    return total, nonzero


@dataclass(frozen=True)
class TrainingFlopCount:
    """Multiply-accumulates of one training step, split over the three GEMMs of every weight layer.

    For a weight layer ``Y = W X`` (Linear, Conv through its im2col view, HF ``Conv1D``) one
    training step runs three GEMMs of the same size: the forward ``W X``, the backward-data
    ``Wᵀ dY`` and the weight-gradient ``dY Xᵀ``.

    Attributes:
        forward: The forward pass (`count_flops`; attention matmuls included).
        backward_data: ``Wᵀ dY`` per weight layer. Effective MACs count the nonzeros of the
            weight that GEMM actually multiplies (given per module to `count_training_flops`);
            a layer without one counts dense, since the transpose of a forward N:M mask is not
            N:M along the transposed GEMM's reduction dimension, so no N:M kernel can skip it.
        weight_grad: ``dY Xᵀ`` per weight layer: activations times gradients, always dense.
    """

    forward: FlopCount
    backward_data: FlopCount
    weight_grad: FlopCount

    @property
    def dense(self) -> int:
        """MACs of the step with every GEMM dense."""
        return self.forward.dense + self.backward_data.dense + self.weight_grad.dense

    @property
    def effective(self) -> int:
        """MACs of the step with the sparse GEMMs counted by their nonzeros."""
        return self.forward.effective + self.backward_data.effective + self.weight_grad.effective

    @property
    def ratio(self) -> float:
        """``effective / dense`` of the whole step."""
        return self.effective / self.dense if self.dense else 1.0


def count_training_flops(
    model: nn.Module,
    example_input: Any,
    backward_weights: Mapping[str, torch.Tensor] | None = None,
) -> TrainingFlopCount:
    """Count the MACs of one training step (forward, backward-data, weight-gradient GEMMs).

    Not counted beyond the forward: the backward of attention matmuls and of everything the
    forward count leaves out (see the module docstring); the backward-data GEMM of the first
    layer is counted although frameworks skip it when the input needs no gradient.

    Args:
        model: The model.
        example_input: As for `count_flops` (the batch size is part of the count).
        backward_weights: ``{module name: weight}`` used by that module's backward-data GEMM
            (e.g. ``W * M_B`` for bidirectional N:M training); its nonzeros give the effective
            count. Modules not listed count dense.

    Returns:
        A `TrainingFlopCount`.

    Raises:
        ValueError: A name in ``backward_weights`` that is not a counted weight layer, or a
            weight of the wrong size.
    """
    forward = count_flops(model, example_input)
    modules = dict(model.named_modules())
    weight_layers = {
        name: module
        for name, module in modules.items()
        if name in forward.by_module
        and (
            isinstance(module, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d)
            or (type(module).__name__ == "Conv1D" and hasattr(module, "nf"))
        )
    }
    given = dict(backward_weights or {})
    unknown = sorted(set(given) - set(weight_layers))
    if unknown:
        raise ValueError(f"backward_weights: {unknown} are not counted weight layers")
    data: dict[str, tuple[int, int]] = {}
    grad: dict[str, tuple[int, int]] = {}
    for name, module in weight_layers.items():
        dense = forward.by_module[name][0]
        numel = effective_tensor(module, "weight").numel()
        effective = dense
        if name in given:
            weight = given[name]
            if weight.numel() != numel:
                raise ValueError(
                    f"backward_weights[{name!r}]: {weight.numel()} entries, the layer has {numel}"
                )
            effective = dense // numel * int(torch.count_nonzero(weight.detach()))
        data[name] = (dense, effective)
        grad[name] = (dense, dense)
    return TrainingFlopCount(
        forward=forward,
        backward_data=FlopCount(
            sum(d for d, _ in data.values()), sum(e for _, e in data.values()), data
        ),
        weight_grad=FlopCount(
            sum(d for d, _ in grad.values()), sum(e for _, e in grad.values()), grad
        ),
    )

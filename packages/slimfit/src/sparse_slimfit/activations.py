"""SlimFit's activation-memory side: what frozen and active layers keep for the backward pass.

Paper: Arash Ardakani et al., "SlimFit: Memory-Efficient Fine-Tuning of Transformer-based
Models Using Training Dynamics", 2023 (arXiv 2305.18513). Official code:
github.com/arashardakani/SlimFit
(``BERT/utils_ILS.py`` and ``ViT/utils_ILS.py``: ``ILSLinearFunction``, ``ILSLayerNormFunction``,
``quantize``/``shaper``, ``select_mink``/``pad_mink``).

Three `torch.autograd.Function`s, installed on a Hugging Face model's own ``nn.Linear`` and
``nn.LayerNorm`` modules in place by `patch_activations` (an instance-level ``forward``; the
model's code, classes and ``state_dict`` are untouched, `ActivationPatch.remove` restores it):

* `FrozenLinearFunction`: a Linear whose weight is frozen saves no input (only the weight,
  which is a parameter anyway): the input gradient needs only ``W``;
* `QuantizedInputLinearFunction`: the FFN output projection (BERT ``*.output.dense`` outside
  the attention block, ViT ``mlp.fc2``; the official ``Qflag=True`` layer) caches its input
  in 8-bit fixed point, 3 integer and 4 fractional bits (``clamp(round(16 x), -128, 127)``
  as ``int8``, read back as ``q / 16``), and computes the weight gradient from it;
* `FrozenLayerNormFunction`: a LayerNorm whose weight is frozen caches only the
  ``keep`` (official 0.1) fraction of largest-magnitude entries of its normalised output
  ``y = (x - mean) / std`` (values plus ``int32`` positions) and the per-row ``std``; backward
  uses ``ŷ`` (the kept entries, zeros elsewhere): ``dx = (a - mean(a) - ŷ · mean(a ŷ)) / std``
  with ``a = g · w``.

Whether a layer is frozen is read from ``weight.requires_grad`` at every forward, as the
official ``ILSLinear.forward`` does, so the patch works with any freezing schedule (SlimFit's,
a fixed bottom-k or a random one).

Choices:

* [choice] LayerNorm backward error bound (derived here, checked by the tests): with
  ``e = y - ŷ`` (zero on kept entries, ``|e| <= τ`` elsewhere, ``τ`` the smallest kept
  magnitude) the per-entry input-gradient error is
  ``|dx - dx̂| <= (|e_i| |Σ_j a_j y_j| + |ŷ_i| ‖a‖₂ ‖e‖₂) / (N std)`` per row (Cauchy–Schwarz),
  so it vanishes as ``keep → 1`` and is exactly zero at ``keep = 1``.
* [choice] The top-``keep`` selection is over the whole activation tensor (all rows at once),
  as the official ``select_mink`` on the flattened tensor; ``int(numel · keep)`` entries.
* [choice] The frozen LayerNorm's ``std`` uses the module's own ``eps`` (the official backward
  uses ``1e-12`` whatever the config says); its bias stays trainable, as in the official code.
* [choice] PyTorch >= 2 autograd already skips saving a Linear's input when its weight does not
  require grad; `FrozenLinearFunction` makes that explicit and independent of the op's
  derivative formula (the measured bytes are the same).
* [choice] Not implemented: the official code's 8-bit attention ``matmul`` caches and 4-bit GELU
  cache (``ILSmatmul``, ``ILSGELU``); they are outside the three mechanisms the paper's
  ablation attributes its savings to and need forking the attention code.
"""

from __future__ import annotations

import fnmatch
import types
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = [
    "ActivationPatch",
    "FrozenLayerNormFunction",
    "FrozenLinearFunction",
    "QuantizedInputLinearFunction",
    "dequantize_fixed_point",
    "ffn_output_projections",
    "patch_activations",
    "quantize_fixed_point",
]

#: Fixed-point format of the FFN output-projection cache (official ``quantize(input, 3, 4)``).
INT_BITS, FRAC_BITS = 3, 4


def quantize_fixed_point(x: torch.Tensor) -> torch.Tensor:
    """``x`` in signed 8-bit fixed point (3 integer, 4 fractional bits), stored as ``int8``."""
    limit = 2 ** (INT_BITS + FRAC_BITS)
    return torch.clamp(torch.round(x * 2**FRAC_BITS), -limit, limit - 1).to(torch.int8)


def dequantize_fixed_point(q: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The values an ``int8`` fixed-point cache stands for (``q / 2**4``)."""
    return q.to(dtype) / 2**FRAC_BITS


def _bias_grad(grad_output: torch.Tensor) -> torch.Tensor:
    return grad_output.reshape(-1, grad_output.shape[-1]).sum(0)


def _weight_grad(grad_output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return grad_output.reshape(-1, grad_output.shape[-1]).T.mm(x.reshape(-1, x.shape[-1]))


class FrozenLinearFunction(torch.autograd.Function):
    """``linear(x, W, b)`` with ``W`` frozen: saves ``W`` only (no activation)."""

    @staticmethod
    def forward(  # noqa: D102
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        ctx.save_for_backward(weight)
        ctx.has_bias = bias is not None
        return nn.functional.linear(x, weight, bias)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # noqa: D102
        (weight,) = ctx.saved_tensors
        grad_x = grad_output.matmul(weight) if ctx.needs_input_grad[0] else None
        grad_b = _bias_grad(grad_output) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, None, grad_b


class QuantizedInputLinearFunction(torch.autograd.Function):
    """``linear(x, W, b)`` caching ``x`` in 8-bit fixed point for the weight gradient."""

    @staticmethod
    def forward(  # noqa: D102
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        ctx.save_for_backward(quantize_fixed_point(x), weight)
        ctx.has_bias = bias is not None
        ctx.dtype = x.dtype
        return nn.functional.linear(x, weight, bias)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # noqa: D102
        q, weight = ctx.saved_tensors
        grad_x = grad_output.matmul(weight) if ctx.needs_input_grad[0] else None
        grad_w = None
        if ctx.needs_input_grad[1]:
            grad_w = _weight_grad(grad_output, dequantize_fixed_point(q, ctx.dtype))
        grad_b = _bias_grad(grad_output) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


class FrozenLayerNormFunction(torch.autograd.Function):
    """LayerNorm over the last dim with a frozen weight, caching the top-``keep`` of ``y``."""

    @staticmethod
    def forward(  # noqa: D102
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        eps: float,
        keep: float,
    ) -> torch.Tensor:
        mean = x.mean(-1, keepdim=True)
        std = (x.var(-1, unbiased=False, keepdim=True) + eps).sqrt()
        y = (x - mean) / std
        flat = y.reshape(-1)
        k = int(flat.numel() * keep)
        idx = flat.abs().topk(k, sorted=False).indices
        ctx.save_for_backward(flat[idx], idx.to(torch.int32), std, weight)
        ctx.shape = y.shape
        ctx.has_bias = bias is not None
        out = y * weight
        return out + bias if bias is not None else out

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # noqa: D102
        values, idx, std, weight = ctx.saved_tensors
        grad_x = None
        if ctx.needs_input_grad[0]:
            y_hat = torch.zeros(ctx.shape.numel(), dtype=values.dtype, device=values.device)
            y_hat = y_hat.scatter_(0, idx.long(), values).reshape(ctx.shape)
            a = grad_output * weight
            grad_x = (
                a - a.mean(-1, keepdim=True) - y_hat * (a * y_hat).mean(-1, keepdim=True)
            ) / std
        grad_b = _bias_grad(grad_output) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, None, grad_b, None, None


#: Module-name globs of FFN output projections: BERT / ViT before transformers 5
#: (``BertOutput.dense``, ``ViTOutput.dense``), ViT in transformers 5 (``ViTMLP.fc2``) and
#: Llama-style MLPs (``down_proj``).
FFN_OUTPUT_GLOBS = ("*output.dense", "*mlp.fc2", "*mlp.down_proj")


def ffn_output_projections(model: nn.Module) -> list[str]:
    """Names of the FFN output projections (the official ``Qflag=True`` layers).

    The official code quantizes exactly ``BertOutput.dense`` / ``ViTOutput.dense``: Linear
    modules matching `FFN_OUTPUT_GLOBS` that are not inside an attention block.
    """
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear)
        and any(fnmatch.fnmatchcase(name, glob) for glob in FFN_OUTPUT_GLOBS)
        and ".attention." not in f".{name}"
    ]


def _linear_forward(quantize: bool) -> Any:
    def forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():
            return nn.functional.linear(x, self.weight, self.bias)
        if not self.weight.requires_grad:
            return FrozenLinearFunction.apply(x, self.weight, self.bias)
        if quantize:
            return QuantizedInputLinearFunction.apply(x, self.weight, self.bias)
        return nn.functional.linear(x, self.weight, self.bias)

    return forward


def _layer_norm_forward(keep: float) -> Any:
    def forward(self: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
        frozen = self.weight is not None and not self.weight.requires_grad
        if frozen and torch.is_grad_enabled() and len(self.normalized_shape) == 1:
            return FrozenLayerNormFunction.apply(x, self.weight, self.bias, self.eps, keep)
        return nn.functional.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    return forward


@dataclass
class ActivationPatch:
    """The modules `patch_activations` changed; `remove` restores them.

    Attributes:
        linears: Patched Linear module names (frozen ones save no input).
        quantized: The subset whose input is cached in 8-bit fixed point when trained.
        layer_norms: Patched LayerNorm names (top-``keep`` cache when frozen).
    """

    linears: list[str] = field(default_factory=list)
    quantized: list[str] = field(default_factory=list)
    layer_norms: list[str] = field(default_factory=list)
    _modules: list[nn.Module] = field(default_factory=list, repr=False)

    def remove(self) -> None:
        """Give every patched module its class's ``forward`` back (idempotent)."""
        for module in self._modules:
            module.__dict__.pop("forward", None)
        self._modules = []


def patch_activations(
    model: nn.Module,
    *,
    frozen_linear: bool = True,
    quantize_ffn_output: bool = True,
    prune_frozen_layernorm: bool = True,
    layernorm_keep: float = 0.1,
) -> ActivationPatch:
    """Install SlimFit's activation caches on ``model``'s Linear and LayerNorm modules in place.

    Args:
        model: Any module tree (Hugging Face BERT / ViT in the paper).
        frozen_linear: Frozen Linear layers save no input (`FrozenLinearFunction`).
        quantize_ffn_output: The FFN output projections (`ffn_output_projections`) cache their
            input in 8-bit fixed point while trained.
        prune_frozen_layernorm: Frozen LayerNorms cache only the top-``layernorm_keep``
            fraction of their normalised output plus the std.
        layernorm_keep: That fraction, in ``(0, 1]`` (official 0.1).

    Returns:
        An `ActivationPatch` (call ``remove()`` to undo).

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: ``layernorm_keep`` outside ``(0, 1]``, or a module already patched.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    from sparsecore.validation import check_number

    check_number(layernorm_keep, "layernorm_keep", 0.0, 1.0, open_low=True)
    ffn = set(ffn_output_projections(model)) if quantize_ffn_output else set()
    plan: list[tuple[str, nn.Module, Any]] = []
    for name, module in model.named_modules():
        if "forward" in module.__dict__:
            raise ValueError(f"model: module {name!r} already has an instance forward (patched?)")
        if isinstance(module, nn.Linear) and (frozen_linear or name in ffn):
            plan.append((name, module, _linear_forward(name in ffn)))
        elif isinstance(module, nn.LayerNorm) and prune_frozen_layernorm:
            plan.append((name, module, _layer_norm_forward(layernorm_keep)))
    patch = ActivationPatch()
    for name, module, forward in plan:
        module.forward = types.MethodType(forward, module)  # type: ignore[method-assign]
        patch._modules.append(module)
        if isinstance(module, nn.LayerNorm):
            patch.layer_norms.append(name)
        else:
            patch.linears.append(name)
            if name in ffn:
                patch.quantized.append(name)
    return patch

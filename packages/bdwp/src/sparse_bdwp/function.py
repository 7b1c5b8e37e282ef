"""The three GEMMs of a BDWP layer as custom autograd functions (Linear and Conv).

Fang, Sun, Zhou & Wang, "Efficient N:M Sparse DNN Training Using Algorithm, Architecture, and
Dataflow Co-Design", IEEE TCAD 2023, arXiv 2309.13015. For a layer ``Y = W X`` with dense
weights ``W`` (``(out, in)``; a convolution in its im2col view ``(out, in · k…)``):

* forward: ``Y = (W ⊙ M_F) X``, ``M_F`` N:M along the input (reduction) dimension;
* backward-data: ``dX = (W ⊙ M_B)ᵀ dY``, ``M_B`` N:M along the output dimension, which is the
  reduction dimension of this transposed GEMM;
* weight-gradient: ``dW = dY Xᵀ``, dense (the update of the dense ``W``).

A convolution's backward-data and weight-gradient GEMMs run as ``torch.nn.grad.conv*_input`` /
``conv*_weight`` (the same products without materialising im2col). With ``M_B = M_F`` the
functions equal autograd through ``W ⊙ M_F`` with a straight-through (dense) weight gradient,
i.e. forward-only N:M training (SR-STE); with ``M_F = M_B = 1`` they equal dense autograd.

CUDA: `semi_structured_linear` runs the forward and backward-data GEMMs of a Linear layer at
2:4 through ``torch.sparse.to_sparse_semi_structured`` (half/bfloat16, sizes the kernels
accept); the CPU path is the masked dense product.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "bdwp_conv",
    "bdwp_linear",
    "semi_structured_available",
    "semi_structured_linear",
]

_CONV = {
    1: (F.conv1d, torch.nn.grad.conv1d_input, torch.nn.grad.conv1d_weight),
    2: (F.conv2d, torch.nn.grad.conv2d_input, torch.nn.grad.conv2d_weight),
    3: (F.conv3d, torch.nn.grad.conv3d_input, torch.nn.grad.conv3d_weight),
}


class _BDWPLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x, weight, bias, mask_f, mask_b):
        ctx.save_for_backward(x, weight, mask_b)
        ctx.has_bias = bias is not None
        return F.linear(x, weight * mask_f, bias)

    @staticmethod
    def backward(ctx: Any, grad_out):
        x, weight, mask_b = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_out @ (weight * mask_b)  # (W ⊙ M_B)ᵀ applied to dY
        if ctx.needs_input_grad[1]:
            grad_w = grad_out.reshape(-1, grad_out.shape[-1]).t() @ x.reshape(-1, x.shape[-1])
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_out.reshape(-1, grad_out.shape[-1]).sum(0)
        return grad_x, grad_w, grad_b, None, None


class _BDWPConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x, weight, bias, mask_f, mask_b, dims, stride, padding, dilation):
        ctx.save_for_backward(x, weight, mask_b)
        ctx.conf = (dims, stride, padding, dilation, bias is not None)
        conv, _, _ = _CONV[dims]
        return conv(x, weight * mask_f, bias, stride, padding, dilation)

    @staticmethod
    def backward(ctx: Any, grad_out):
        x, weight, mask_b = ctx.saved_tensors
        dims, stride, padding, dilation, has_bias = ctx.conf
        _, conv_input, conv_weight = _CONV[dims]
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = conv_input(x.shape, weight * mask_b, grad_out, stride, padding, dilation)
        if ctx.needs_input_grad[1]:
            grad_w = conv_weight(x, weight.shape, grad_out, stride, padding, dilation)
        if has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_out.sum(dim=(0, *range(2, grad_out.dim())))
        return grad_x, grad_w, grad_b, None, None, None, None, None, None


def bdwp_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    mask_f: torch.Tensor,
    mask_b: torch.Tensor,
) -> torch.Tensor:
    """``F.linear`` with BDWP's three GEMMs.

    Args:
        x: Input ``(..., in)``.
        weight: Dense weight ``(out, in)`` (receives the dense gradient ``dY Xᵀ``).
        bias: Optional bias ``(out,)``.
        mask_f: Forward mask (N:M along ``in``), bool or 0/1 in the weight's dtype.
        mask_b: Backward-data mask (N:M along ``out``).

    Returns:
        ``x (W ⊙ M_F)ᵀ + b``; its backward gives ``dX = dY (W ⊙ M_B)``.
    """
    return _BDWPLinear.apply(x, weight, bias, mask_f.to(weight.dtype), mask_b.to(weight.dtype))


def bdwp_conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    mask_f: torch.Tensor,
    mask_b: torch.Tensor,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
) -> torch.Tensor:
    """``F.conv1d/2d/3d`` (by the weight's rank, ``groups=1``) with BDWP's three GEMMs.

    Args:
        x: Input ``(batch, in, ...)``.
        weight: Dense weight ``(out, in, k...)``.
        bias: Optional bias.
        mask_f: Forward mask, N:M along ``in`` (dim 1).
        mask_b: Backward-data mask, N:M along ``out`` (dim 0).
        stride: As for ``F.conv*d``.
        padding: As for ``F.conv*d`` (numbers or tuples; string padding is not supported).
        dilation: As for ``F.conv*d``.
    """
    dims = weight.dim() - 2
    if dims not in _CONV:
        raise ValueError(
            f"weight: a Conv1d/2d/3d weight is needed, got shape {tuple(weight.shape)}"
        )
    if isinstance(padding, str):
        raise ValueError(f"padding: string padding {padding!r} is not supported by BDWP")
    return _BDWPConv.apply(
        x,
        weight,
        bias,
        mask_f.to(weight.dtype),
        mask_b.to(weight.dtype),
        dims,
        stride,
        padding,
        dilation,
    )


# ---------------------------------------------------------------------- CUDA 2:4 kernels
def semi_structured_available(device: torch.device | str | None = None) -> bool:
    """Whether ``torch.sparse.to_sparse_semi_structured`` can run on ``device`` (CUDA, sm80+)."""
    if not torch.cuda.is_available():
        return False
    device = torch.device(device or "cuda")
    if device.type != "cuda":
        return False
    major, _ = torch.cuda.get_device_capability(device)
    return major >= 8 and hasattr(torch.sparse, "to_sparse_semi_structured")


class _SemiStructuredLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x, weight, bias, mask_f, mask_b):
        from torch.sparse import to_sparse_semi_structured

        ctx.save_for_backward(x, weight, mask_b)
        ctx.has_bias = bias is not None
        sparse_f = to_sparse_semi_structured((weight * mask_f).contiguous())
        flat = x.reshape(-1, x.shape[-1])
        out = F.linear(flat, sparse_f, bias)
        return out.reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx: Any, grad_out):
        from torch.sparse import to_sparse_semi_structured

        x, weight, mask_b = ctx.saved_tensors
        flat_g = grad_out.reshape(-1, grad_out.shape[-1])
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            # (W ⊙ M_B)ᵀ is (in, out) with 2:4 along its rows' last dim (out): a kernel operand.
            sparse_b = to_sparse_semi_structured((weight * mask_b).t().contiguous())
            grad_x = F.linear(flat_g, sparse_b).reshape(*grad_out.shape[:-1], weight.shape[1])
        if ctx.needs_input_grad[1]:
            grad_w = flat_g.t() @ x.reshape(-1, x.shape[-1])
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = flat_g.sum(0)
        return grad_x, grad_w, grad_b, None, None


def semi_structured_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    mask_f: torch.Tensor,
    mask_b: torch.Tensor,
) -> torch.Tensor:
    """`bdwp_linear` with the forward and backward-data GEMMs on CUDA 2:4 sparse kernels.

    Needs a CUDA device with semi-structured sparsity (`semi_structured_available`), 2:4 masks,
    half or bfloat16 tensors and sizes the kernels accept (multiples of 64 are safe).

    Raises:
        RuntimeError: No such device.
    """
    if not semi_structured_available(weight.device):
        raise RuntimeError("semi_structured_linear: needs a CUDA device with 2:4 sparse kernels")
    dtype = weight.dtype
    return _SemiStructuredLinear.apply(x, weight, bias, mask_f.to(dtype), mask_b.to(dtype))


def layer_call(module: nn.Module, x: torch.Tensor, mask_f, mask_b, fast: bool) -> torch.Tensor:
    """Run ``module`` (Linear or Conv) on ``x`` with BDWP's GEMMs (``fast``: CUDA 2:4 kernels)."""
    weight = _dense_weight(module)
    bias = module.bias
    if isinstance(module, nn.Linear):
        if fast:
            return semi_structured_linear(x, weight, bias, mask_f, mask_b)
        return bdwp_linear(x, weight, bias, mask_f, mask_b)
    return bdwp_conv(
        x, weight, bias, mask_f, mask_b, module.stride, module.padding, module.dilation
    )


def _dense_weight(module: nn.Module) -> torch.Tensor:
    parametrizations = getattr(module, "parametrizations", None)
    if parametrizations is not None and "weight" in parametrizations:
        return parametrizations["weight"].original
    return module.weight

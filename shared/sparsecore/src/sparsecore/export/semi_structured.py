"""2:4 semi-structured sparsity on CUDA: ``torch.sparse.to_sparse_semi_structured``.

NVIDIA's sparse tensor cores (Ampere and newer) run a 2:4-sparse ``Linear`` with half the weight
memory. PyTorch exposes them through ``SparseSemiStructuredTensor``; a weight qualifies when every
group of 4 consecutive entries along the input dimension holds at most 2 nonzeros (sparsecore's
``NM(2, 4, dim=1)``, the default of the ``"2:4"`` pattern), it is fp16 or bf16 (int8 also exists
in PyTorch but is not handled here), and lives on a CUDA device. There is no CPU kernel, so on CPU
`to_semi_structured` raises instead of silently doing nothing.
"""

from __future__ import annotations

import torch
from torch import nn

from sparsecore.patterns import NM

__all__ = ["is_two_four", "to_semi_structured"]

_DTYPES = (torch.float16, torch.bfloat16)


def is_two_four(weight: torch.Tensor) -> bool:
    """Whether every group of 4 along dim 1 of a 2-D ``weight`` has at most 2 nonzeros."""
    if weight.dim() != 2 or weight.shape[1] % 4:
        return False
    return bool((NM(2, 4, dim=1).groups(weight.ne(0)).sum(-1) <= 2).all())


@torch.no_grad()
def to_semi_structured(model: nn.Module, *, strict: bool = False) -> list[str]:
    """Convert the weight of every 2:4-sparse CUDA fp16/bf16 ``nn.Linear`` in place.

    Each converted weight becomes an ``nn.Parameter`` (without gradient) wrapping a
    ``SparseSemiStructuredTensor``; the forward pass is unchanged (``F.linear`` dispatches to the
    sparse kernel). Mask buffers of a method that was not finalized are applied first.

    Args:
        model: The model, already on a CUDA device and in fp16 or bf16.
        strict: Raise if a Linear cannot be converted (not 2:4, wrong dtype, unsupported shape)
            instead of leaving it dense.

    Returns:
        Names of the converted layers.

    Raises:
        RuntimeError: CUDA is not available, or the model has no CUDA Linear layers.
        ValueError: With ``strict``, a Linear that cannot be converted (the message names it).
    """
    if not torch.cuda.is_available():
        raise RuntimeError(
            "to_semi_structured needs a CUDA GPU (sparse tensor cores); none is available. "
            "On CPU use sparsecore.export.to_sparse_inference (CSR) instead."
        )
    from torch.sparse import to_sparse_semi_structured

    linears = [(n, m) for n, m in model.named_modules() if type(m) is nn.Linear]
    if not any(m.weight.is_cuda for _, m in linears):
        raise RuntimeError("to_semi_structured: move the model to a CUDA device first")
    converted = []
    for name, module in linears:
        weight = module.weight.detach()
        mask = getattr(module, "weight_mask", None)
        if isinstance(mask, torch.Tensor) and mask.shape == weight.shape:
            weight = weight.masked_fill(~mask.to(torch.bool), 0)
        reason = None
        if not weight.is_cuda or weight.dtype not in _DTYPES:
            reason = f"needs a CUDA fp16/bf16 weight, got {weight.dtype} on {weight.device}"
        elif not is_two_four(weight):
            reason = "weight is not 2:4 sparse along the input dimension"
        if reason is None:
            try:
                sparse = to_sparse_semi_structured(weight.contiguous())
            except (RuntimeError, ValueError) as err:  # shape limits of the CUTLASS kernels
                reason = str(err).splitlines()[0]
            else:
                module.weight = nn.Parameter(sparse, requires_grad=False)
                converted.append(name)
                continue
        if strict:
            raise ValueError(f"to_semi_structured: cannot convert {name!r}: {reason}")
    return converted

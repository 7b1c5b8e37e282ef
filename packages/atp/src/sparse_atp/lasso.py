"""ATP's sparsity regularization: a group lasso on the effective weights of the pruned groups.

``Σ_g (1 - d_g) ‖(W0 + s·BA)_g‖₂``, over every head group and FFN channel whose current
decision is 0, where ``(·)_g`` collects the group's slices of every projection (query / key /
value rows and attention-output columns of a head group; gate / up rows and the down column of
an FFN channel). The frozen ``W0`` receives no gradient, so the penalty moves the LoRA factors
toward cancelling the pruned groups of the merged weight: what the model computes *without* the
group mask then approaches what the pruned model computes, which is what lets the pruned
structures be removed (the test `test_group_lasso_makes_removal_lossless`).

Choices, labelled:

* [choice] ``target="merged"`` (default, the issue's and the digest's reading of the paper):
  the norm is taken over ``W0 + s·BA``. ``target="lora"``: over ``s·BA`` only, closer to the
  official code, which regularizes the LoRA factors of the pruned groups (its v2 replaces the
  loss by a proximal projection of those factors).
* [choice] The sum is divided by the number of groups (the official code averages over layers),
  and ``1e-20`` is added under the square root (official).
* The decisions are detached: the regularizer trains the LoRA factors, not the generator.
"""

from __future__ import annotations

import torch
from torch import nn

from sparsecore.structures import ModelLayout, describe

__all__ = ["TARGETS", "effective_weight", "group_lasso"]

#: What the group norm is taken of.
TARGETS = ("merged", "lora")


def effective_weight(module: nn.Module, target: str = "merged") -> torch.Tensor:
    """``W0 + s·BA`` (``"merged"``) or ``s·BA`` (``"lora"``) of a projection, ``(out, in)``.

    A projection without LoRA gives ``W0`` (``"merged"``) or zeros (``"lora"``).
    """
    base = getattr(module, "base_layer", module)
    w0 = base.weight
    names = list(getattr(module, "active_adapters", []) or [])
    lora_a = getattr(module, "lora_A", None)
    if not names or lora_a is None or names[0] not in lora_a or getattr(module, "merged", False):
        return w0 if target == "merged" else torch.zeros_like(w0)
    name = names[0]
    delta = (module.lora_B[name].weight @ module.lora_A[name].weight) * module.scaling[name]
    return w0 + delta if target == "merged" else delta


def _sq_rows(w: torch.Tensor, groups: int) -> torch.Tensor:
    return w.pow(2).reshape(groups, -1).sum(1)


def _sq_cols(w: torch.Tensor, groups: int) -> torch.Tensor:
    return w.pow(2).sum(0).reshape(groups, -1).sum(1)


def group_lasso(
    model: nn.Module,
    heads: torch.Tensor,
    ffn: torch.Tensor,
    target: str = "merged",
    layout: ModelLayout | None = None,
) -> torch.Tensor:
    """The group lasso of the groups with decision 0 (see the module docstring).

    Args:
        model: A Llama-family model, usually a peft LoRA model.
        heads: ``(L, H)`` decisions over the key/value head groups (1 keep, 0 prune).
        ffn: ``(L, C)`` decisions over the FFN channels.
        target: One of `TARGETS`.
        layout: ``describe(model)`` when the caller has it.

    Returns:
        A scalar tensor (zero when nothing is pruned).
    """
    layout = layout if layout is not None else describe(model)
    total = None
    count = heads.numel() + ffn.numel()
    for lay in layout.layers:
        i = lay.index
        pruned_h = 1.0 - heads[i].detach()
        pruned_f = 1.0 - ffn[i].detach()
        if bool(pruned_h.any()):
            q, k, v = (effective_weight(m, target) for m in lay.qkv)
            o = effective_weight(lay.attn_out, target)
            kv = lay.kv_heads
            sq = _sq_rows(q, kv) + _sq_rows(k, kv) + _sq_rows(v, kv) + _sq_cols(o, kv)
            term = (pruned_h.to(sq.dtype) * (sq + 1e-20).sqrt()).sum()
            total = term if total is None else total + term
        if bool(pruned_f.any()):
            channels = lay.intermediate
            sq = sum(_sq_rows(effective_weight(m, target), channels) for m in lay.ffn_in)
            sq = sq + _sq_cols(effective_weight(lay.ffn_out, target), channels)
            term = (pruned_f.to(sq.dtype) * (sq + 1e-20).sqrt()).sum()
            total = term if total is None else total + term
    if total is None:
        return torch.zeros((), device=heads.device)
    return total / count

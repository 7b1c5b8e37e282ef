"""LD-Pruner's operators of a diffusers UNet and the modifications applied to them.

Operators (the paper's set, Castells et al., arXiv 2404.11936, Sec. 3): every
`diffusers` ``ResnetBlock2D`` (``"resnet"``), and in every ``BasicTransformerBlock`` the
self-attention ``attn1`` (``"self_attn"``), the cross-attention ``attn2`` (``"cross_attn"``) and the
feed-forward ``ff`` (``"ffn"``).

Modifications (``Candidate.action``):

* ``"remove"``: a ResNet block becomes its shortcut path (identity, or its own 1×1
  ``conv_shortcut`` when the widths differ, divided by ``output_scale_factor`` as the block does);
  an attention or feed-forward becomes `ZeroOperator`, so its residual branch adds nothing.
* ``"halve"`` (any ``keep_ratio``): a cheaper version of the operator, as Hybrid-SD's
  ``compression/prune_sd/prune_utils.py`` does: a ResNet block keeps the ``conv1`` filters with
  the largest L2 norm (rounded up to a multiple of ``norm2``'s groups), with the matching
  ``time_emb_proj`` rows, ``norm2`` channels and ``conv2`` input columns; an attention keeps whole
  heads; a GEGLU feed-forward keeps inner channels (the value and gate rows together).

Choices (labelled): attention heads and FFN channels are kept by the L2 norm of all their weights
(Hybrid-SD keeps the first heads / the first rows, with a TODO to score them; its FFN halving also
splits GEGLU's value/gate halves unevenly, which we do not copy). Weight preservation: survivors
keep their weights bit for bit (tested).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = [
    "ACTIONS",
    "KINDS",
    "Candidate",
    "Operator",
    "ShortcutOnly",
    "ZeroOperator",
    "apply_candidates",
    "enumerate_operators",
]

KINDS = ("resnet", "self_attn", "cross_attn", "ffn")
ACTIONS = ("remove", "halve")


@dataclass(frozen=True)
class Operator:
    """One prunable operator: its module path in the UNet and its kind (one of `KINDS`)."""

    name: str
    kind: str


@dataclass(frozen=True)
class Candidate:
    """One modification of one operator (``action`` in `ACTIONS`)."""

    operator: Operator
    action: str

    @property
    def label(self) -> str:
        """``"<action>:<operator path>"``."""
        return f"{self.action}:{self.operator.name}"


class ZeroOperator(nn.Module):
    """A removed attention / feed-forward: returns zeros shaped like its input (no parameters)."""

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Zeros like ``hidden_states`` (the residual branch then adds nothing)."""
        return torch.zeros_like(hidden_states)


class ShortcutOnly(nn.Module):
    """A removed ResNet block: only its shortcut path (the block's own ``conv_shortcut``).

    Args:
        shortcut: The block's ``conv_shortcut`` (``None``: identity), kept with its weights.
        output_scale_factor: The block's ``output_scale_factor``.
    """

    def __init__(self, shortcut: nn.Module | None, output_scale_factor: float) -> None:
        super().__init__()
        self.conv_shortcut = shortcut
        self.output_scale_factor = output_scale_factor

    def forward(self, input_tensor: torch.Tensor, temb: Any = None, *args: Any, **kwargs: Any):
        """``shortcut(x) / output_scale_factor``."""
        x = input_tensor if self.conv_shortcut is None else self.conv_shortcut(input_tensor)
        return x / self.output_scale_factor


def enumerate_operators(unet: nn.Module) -> list[Operator]:
    """Every LD-Pruner operator of a diffusers UNet, in module order.

    Raises:
        TypeError: ``unet`` has no diffusers ResNet or transformer blocks.
    """
    from diffusers.models.attention import BasicTransformerBlock
    from diffusers.models.resnet import ResnetBlock2D

    ops: list[Operator] = []
    for name, module in unet.named_modules():
        if isinstance(module, ResnetBlock2D):
            if module.upsample is None and module.downsample is None:
                ops.append(Operator(name, "resnet"))
        elif isinstance(module, BasicTransformerBlock):
            ops.append(Operator(f"{name}.attn1", "self_attn"))
            if module.attn2 is not None:
                ops.append(Operator(f"{name}.attn2", "cross_attn"))
            ops.append(Operator(f"{name}.ff", "ffn"))
    if not ops:
        raise TypeError(
            f"unet: no diffusers ResnetBlock2D / BasicTransformerBlock in {type(unet).__name__}"
        )
    return ops


def _parent(root: nn.Module, path: str) -> tuple[nn.Module, str]:
    parent_path, _, leaf = path.rpartition(".")
    return (root.get_submodule(parent_path) if parent_path else root), leaf


def _select(param: nn.Parameter, index: torch.Tensor, dim: int) -> nn.Parameter:
    return nn.Parameter(param.detach().index_select(dim, index).clone())


def _top(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Indices of the ``keep`` largest scores, ascending (ties: lower index first)."""
    order = torch.sort(-scores, stable=True).indices[:keep]
    return torch.sort(order).values


def _shrink_linear(linear: nn.Linear, index: torch.Tensor, dim: int) -> None:
    linear.weight = _select(linear.weight, index, dim)
    if dim == 0:
        linear.out_features = len(index)
        if linear.bias is not None:
            linear.bias = _select(linear.bias, index, 0)
    else:
        linear.in_features = len(index)


def _halve_resnet(block: nn.Module, keep_ratio: float) -> None:
    if block.time_embedding_norm != "default":
        raise ValueError("halve: only ResnetBlock2D with time_embedding_norm='default'")
    channels = block.conv1.out_channels
    groups = block.norm2.num_groups
    keep = max(groups, math.ceil(channels * keep_ratio / groups) * groups)
    if keep >= channels:
        return
    index = _top(block.conv1.weight.detach().flatten(1).norm(dim=1), keep)
    block.conv1.weight = _select(block.conv1.weight, index, 0)
    if block.conv1.bias is not None:
        block.conv1.bias = _select(block.conv1.bias, index, 0)
    block.conv1.out_channels = keep
    if block.time_emb_proj is not None:
        _shrink_linear(block.time_emb_proj, index, 0)
    block.norm2.weight = _select(block.norm2.weight, index, 0)
    block.norm2.bias = _select(block.norm2.bias, index, 0)
    block.norm2.num_channels = keep
    block.conv2.weight = _select(block.conv2.weight, index, 1)
    block.conv2.in_channels = keep


def _halve_attention(attn: nn.Module, keep_ratio: float) -> None:
    heads = attn.heads
    head_dim = attn.inner_dim // heads
    keep = max(1, round(heads * keep_ratio))
    if keep >= heads:
        return
    per_head = sum(
        p.detach().reshape(heads, head_dim, -1).pow(2).sum(dim=(1, 2))
        for p in (attn.to_q.weight, attn.to_k.weight, attn.to_v.weight)
    ) + attn.to_out[0].weight.detach().reshape(-1, heads, head_dim).pow(2).sum(dim=(0, 2))
    kept = _top(per_head, keep)
    index = (kept[:, None] * head_dim + torch.arange(head_dim)).flatten()
    for proj in (attn.to_q, attn.to_k, attn.to_v):
        _shrink_linear(proj, index, 0)
    _shrink_linear(attn.to_out[0], index, 1)
    attn.heads = keep
    attn.inner_dim = keep * head_dim
    attn.inner_kv_dim = keep * head_dim


def _halve_ffn(ff: nn.Module, keep_ratio: float) -> None:
    proj, out = ff.net[0].proj, ff.net[2]
    inner = out.in_features
    if proj.out_features != 2 * inner:
        raise ValueError("halve: only GEGLU feed-forwards (value and gate projections)")
    keep = max(1, round(inner * keep_ratio))
    if keep >= inner:
        return
    w = proj.weight.detach()
    score = w[:inner].pow(2).sum(1) + w[inner:].pow(2).sum(1) + out.weight.detach().pow(2).sum(0)
    index = _top(score, keep)
    _shrink_linear(proj, torch.cat([index, index + inner]), 0)
    _shrink_linear(out, index, 1)


def _apply(unet: nn.Module, candidate: Candidate, keep_ratio: float) -> None:
    op = candidate.operator
    module = unet.get_submodule(op.name)
    if candidate.action == "remove":
        parent, leaf = _parent(unet, op.name)
        if op.kind == "resnet":
            replacement = ShortcutOnly(module.conv_shortcut, module.output_scale_factor)
        else:
            replacement = ZeroOperator()
        setattr(parent, leaf, replacement)
    elif op.kind == "resnet":
        _halve_resnet(module, keep_ratio)
    elif op.kind == "ffn":
        _halve_ffn(module, keep_ratio)
    else:
        _halve_attention(module, keep_ratio)


def apply_candidates(
    unet: nn.Module, candidates: list[Candidate], keep_ratio: float = 0.5
) -> nn.Module:
    """Apply modifications to ``unet`` in place (at most one per operator).

    Args:
        unet: A diffusers UNet (modified in place; pass a copy to keep the original).
        candidates: The modifications.
        keep_ratio: Fraction kept by ``"halve"``.

    Returns:
        ``unet``.

    Raises:
        ValueError: An unknown action or kind, ``keep_ratio`` outside ``(0, 1)``, or two
            modifications of one operator; checked before ``unet`` is touched.
    """
    if not 0.0 < float(keep_ratio) < 1.0:
        raise ValueError(f"keep_ratio must be in (0, 1), got {keep_ratio!r}")
    seen: set[str] = set()
    for c in candidates:
        if c.action not in ACTIONS or c.operator.kind not in KINDS:
            raise ValueError(f"candidates: unknown action/kind in {c}")
        if c.operator.name in seen:
            raise ValueError(f"candidates: operator {c.operator.name} modified twice")
        seen.add(c.operator.name)
        unet.get_submodule(c.operator.name)  # raises AttributeError for a wrong path
    for c in candidates:
        _apply(unet, c, keep_ratio)
    return unet

"""In-place resizing of the modules of a layout: the mechanics shared by `shrink` and the loader.

Every size is given either as an index tensor (keep these rows / columns, the shrink case) or as
an int (allocate that many, the loader case, whose values are overwritten by the checkpoint).
Gate values (soft masks) are folded into the kept weights: a head gate into the columns of the
output projection, a channel gate into the columns of the down projection, a hidden gate into
embedding columns, norm weights / biases and the rows of residual writers, which is exactly what
the masked forward computes (see `sparsecore.structures.masking`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sparsecore.layouts import is_hf_conv1d
from sparsecore.structures.layout import LayerLayout, ModelLayout

__all__ = ["LayerPlan", "head_features", "resize_hidden", "resize_layer"]

Index = torch.Tensor | int | None


@dataclass
class LayerPlan:
    """What one kept layer becomes.

    Attributes:
        heads: Query heads kept (indices) or their count. kv: Key/value heads kept.
        head_scale: Gate per kept query head, folded into the output projection (or ``None``).
        ffn: Intermediate channels kept. ffn_scale: Their gates (or ``None``).
    """

    heads: Index = None
    kv: Index = None
    head_scale: torch.Tensor | None = None
    ffn: Index = None
    ffn_scale: torch.Tensor | None = None


def _select(t: torch.Tensor, idx: Index, dim: int) -> torch.Tensor:
    if idx is None:
        return t
    if isinstance(idx, int):
        shape = list(t.shape)
        shape[dim] = idx
        return t.new_empty(shape)
    return t.index_select(dim, idx.to(t.device))


def _features(idx: Index, full: int) -> int:
    if idx is None:
        return full
    return idx if isinstance(idx, int) else int(idx.numel())


def resize_linear(
    module: nn.Module,
    out_idx: Index = None,
    in_idx: Index = None,
    out_scale: torch.Tensor | None = None,
    in_scale: torch.Tensor | None = None,
) -> None:
    """Keep rows ``out_idx`` / columns ``in_idx`` (``(out, in)`` convention) of a Linear/Conv1D."""
    conv = is_hf_conv1d(module)
    weight = module.weight.detach()
    weight = weight.t() if conv else weight
    grad = module.weight.requires_grad
    w = _select(_select(weight, out_idx, 0), in_idx, 1)
    if out_scale is not None:
        w = w * out_scale.to(w)[:, None]
    if in_scale is not None:
        w = w * in_scale.to(w)[None, :]
    module.weight = nn.Parameter(w.t().contiguous() if conv else w.contiguous(), grad)
    if module.bias is not None:
        b = _select(module.bias.detach(), out_idx, 0)
        if out_scale is not None:
            b = b * out_scale.to(b)
        module.bias = nn.Parameter(b.contiguous(), module.bias.requires_grad)
    if conv:
        module.nf = int(w.shape[0])
    else:
        module.out_features, module.in_features = int(w.shape[0]), int(w.shape[1])


def resize_vector_module(module: nn.Module, idx: Index, scale: torch.Tensor | None) -> None:
    """Keep entries ``idx`` of a norm's weight and bias (times ``scale``)."""
    for attr in ("weight", "bias"):
        param = getattr(module, attr, None)
        if param is None:
            continue
        v = _select(param.detach(), idx, 0)
        if scale is not None:
            v = v * scale.to(v)
        setattr(module, attr, nn.Parameter(v.contiguous(), param.requires_grad))
    if isinstance(module, nn.LayerNorm):
        module.normalized_shape = (int(module.weight.shape[0]),)


def resize_embedding(module: nn.Embedding, idx: Index, scale: torch.Tensor | None) -> None:
    """Keep columns ``idx`` of an embedding table (times ``scale``)."""
    w = _select(module.weight.detach(), idx, 1)
    if scale is not None:
        w = w * scale.to(w)[None, :]
    module.weight = nn.Parameter(w.contiguous(), module.weight.requires_grad)
    module.embedding_dim = int(w.shape[1])


def head_features(heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Feature indices (rows of a q/k/v projection, columns of the output projection) of heads.

    Args:
        heads: Kept head indices (int), or a bool keep-mask with one entry per head.
        head_dim: Width of one head.

    Returns:
        The ``len(heads) · head_dim`` feature indices, head by head, in ascending order.
    """
    if heads.dtype == torch.bool:
        heads = torch.nonzero(heads.cpu()).flatten()
    heads = heads.cpu().long()
    return (heads[:, None] * head_dim + torch.arange(head_dim)).reshape(-1)


def _qkv_rows(lay: LayerLayout, heads: Index, kv: Index) -> tuple[Index, Index]:
    d = lay.head_dim
    if heads is None:
        return None, None
    if isinstance(heads, int):
        return heads * d, kv * d  # type: ignore[operator]
    return head_features(heads, d), head_features(kv, d)  # type: ignore[arg-type]


def resize_layer(layout: ModelLayout, lay: LayerLayout, plan: LayerPlan) -> None:
    """Resize one layer's heads and FFN channels in place and update its attributes."""
    family, d = layout.family, lay.head_dim
    if plan.heads is not None:
        q_rows, kv_rows = _qkv_rows(lay, plan.heads, plan.kv)
        scale = None if plan.head_scale is None else plan.head_scale.repeat_interleave(d)
        if family == "gpt2":
            width = lay.heads * d
            if isinstance(q_rows, int):
                fused: Index = 3 * q_rows
            else:
                fused = torch.cat([q_rows, q_rows + width, q_rows + 2 * width])
            resize_linear(lay.qkv[0], out_idx=fused)
        else:
            resize_linear(lay.qkv[0], out_idx=q_rows)
            resize_linear(lay.qkv[1], out_idx=kv_rows)
            resize_linear(lay.qkv[2], out_idx=kv_rows)
        resize_linear(lay.attn_out, in_idx=q_rows, in_scale=scale)
        heads = _features(plan.heads, lay.heads)
        attn = lay.attention
        if family == "llama":
            attn.head_dim = d
            attn.num_key_value_groups = heads // _features(plan.kv, lay.kv_heads)
        elif family == "bert":
            attn.attention_head_size = d
            attn.num_attention_heads = heads
            attn.all_head_size = heads * d
            attn.scaling = d**-0.5
        else:
            attn.head_dim = d
            attn.num_heads = heads
            attn.split_size = heads * d
            scaling = d**-0.5 if attn.scale_attn_weights else 1.0
            if attn.scale_attn_by_inverse_layer_idx:
                scaling /= float(attn.layer_idx + 1)
            attn.scaling = scaling
    if plan.ffn is not None:
        for module in lay.ffn_in:
            resize_linear(module, out_idx=plan.ffn)
        resize_linear(lay.ffn_out, in_idx=plan.ffn, in_scale=plan.ffn_scale)


def resize_hidden(layout: ModelLayout, idx: torch.Tensor, scale: torch.Tensor | None) -> None:
    """Keep hidden dimensions ``idx`` everywhere (embeddings, projections, norms, readers)."""
    tied = {
        reader: emb
        for reader in layout.readers
        for emb in layout.embeddings
        if getattr(reader, "weight", None) is emb.weight
    }
    writer_scale = scale if layout.family != "bert" else None
    for emb in layout.embeddings:
        resize_embedding(emb, idx, scale if emb in layout.embed_writers else None)
    for norm in layout.final_norms:
        resize_vector_module(norm, idx, scale)
    for lay in layout.layers:
        for module in [*lay.qkv, *lay.ffn_in]:
            resize_linear(module, in_idx=idx)
        for module in (lay.attn_out, lay.ffn_out):
            resize_linear(module, out_idx=idx, out_scale=writer_scale)
        for norm in lay.norms:
            resize_vector_module(norm, idx, scale)
    for reader in layout.readers:
        if reader in tied:
            reader.weight = tied[reader].weight
        else:
            resize_linear(reader, in_idx=idx)

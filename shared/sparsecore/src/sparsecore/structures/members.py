"""Group membership (which parameter slices form a group), magnitude scores, masks from scores.

Group definitions (``(out, in)`` convention; for GPT-2's ``Conv1D`` the stored dim is the other):

* head group ``g`` of layer ``i`` (a key/value head and its ``num_attention_heads /
  num_key_value_heads`` query heads; one head without GQA): the query rows of those heads, the
  key and value rows of head ``g`` (with their biases), and the matching input columns of the
  attention output projection;
* FFN channel ``c``: row ``c`` of every input projection (gate and up, or the one ``fc``, with
  bias) and column ``c`` of the down projection;
* hidden dimension ``j``: column ``j`` of every embedding table, of every projection reading the
  hidden states and of ``lm_head`` / ``score`` / ``pooler.dense``; row ``j`` (and bias) of every
  projection writing them; entry ``j`` of every norm;
* layer ``i``: every parameter of the layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from sparsecore.layouts import is_hf_conv1d
from sparsecore.select import keep_count, topk_mask
from sparsecore.structures.layout import ModelLayout, base_layer, describe, linear_weight
from sparsecore.validation import check_choice, check_number

__all__ = ["Group", "group_members", "group_scores", "masks_from_scores"]


@dataclass(frozen=True)
class Group:
    """One structure group: ``slices`` are ``(parameter name, stored dim, indices)``."""

    kind: str
    layer: int | None
    index: int
    slices: tuple[tuple[str, int, tuple[int, ...]], ...]


def _param(layout: ModelLayout, module: nn.Module, attr: str = "weight") -> str:
    inner = base_layer(module)
    return f"{layout.name(inner)}.{attr}"


def _out(layout: ModelLayout, module: nn.Module, idx: list[int]) -> list[tuple]:
    inner = base_layer(module)
    slices = [(_param(layout, module), 1 if is_hf_conv1d(inner) else 0, tuple(idx))]
    if getattr(inner, "bias", None) is not None:
        slices.append((_param(layout, module, "bias"), 0, tuple(idx)))
    return slices


def _in(layout: ModelLayout, module: nn.Module, idx: list[int]) -> list[tuple]:
    inner = base_layer(module)
    return [(_param(layout, module), 0 if is_hf_conv1d(inner) else 1, tuple(idx))]


def group_members(model: nn.Module, kind: str) -> list[Group]:
    """Every group of ``kind`` (``"heads"``, ``"ffn"``, ``"hidden"``, ``"layers"``) of ``model``.

    Raises:
        ValueError: Unknown kind or architecture.
    """
    kind = check_choice(kind, "kind", ("heads", "ffn", "hidden", "layers"))
    layout = describe(model)
    groups: list[Group] = []
    for lay in layout.layers if kind in ("heads", "ffn", "layers") else []:
        if kind == "layers":
            prefix = layout.name(lay.module)
            names = tuple((f"{prefix}.{n}", 0, ()) for n, _ in lay.module.named_parameters())
            groups.append(Group(kind, lay.index, lay.index, names))
            continue
        count = lay.kv_heads if kind == "heads" else lay.intermediate
        for g in range(count):
            slices: list[tuple] = []
            if kind == "heads":
                d, rep = lay.head_dim, lay.group_size
                q = list(range(g * rep * d, (g + 1) * rep * d))
                kv = list(range(g * d, (g + 1) * d))
                if layout.family == "gpt2":
                    width = lay.heads * d
                    fused = q + [width + i for i in q] + [2 * width + i for i in q]
                    slices += _out(layout, lay.qkv[0], fused)
                else:
                    slices += _out(layout, lay.qkv[0], q)
                    slices += _out(layout, lay.qkv[1], kv) + _out(layout, lay.qkv[2], kv)
                slices += _in(layout, lay.attn_out, q)
            else:
                for module in lay.ffn_in:
                    slices += _out(layout, module, [g])
                slices += _in(layout, lay.ffn_out, [g])
            groups.append(Group(kind, lay.index, g, tuple(slices)))
    if kind == "hidden":
        for j in range(layout.hidden):
            slices = [(_param(layout, e), 1, (j,)) for e in layout.embeddings]
            for norm in [*layout.final_norms, *(n for lay in layout.layers for n in lay.norms)]:
                slices += [
                    (f"{layout.name(norm)}.{n}", 0, (j,)) for n, _ in norm.named_parameters()
                ]
            for lay in layout.layers:
                for module in [*lay.qkv, *lay.ffn_in]:
                    slices += _in(layout, module, [j])
                for module in (lay.attn_out, lay.ffn_out):
                    slices += _out(layout, module, [j])
            for reader in layout.readers:
                slices += _in(layout, reader, [j])
            groups.append(Group(kind, None, j, tuple(slices)))
    return groups


@torch.no_grad()
def group_scores(model: nn.Module, kind: str) -> list[torch.Tensor] | torch.Tensor:
    """Magnitude score of every group: the sum of squared weights of its slices (no biases).

    Returns:
        For ``"heads"`` / ``"ffn"`` one 1-D tensor per layer (per key/value group / channel); for
        ``"hidden"`` and ``"layers"`` one 1-D tensor.
    """
    kind = check_choice(kind, "kind", ("heads", "ffn", "hidden", "layers"))
    layout = describe(model)
    if kind == "hidden":
        total = sum(e.weight.detach().float().pow(2).sum(0) for e in layout.embeddings)
        for lay in layout.layers:
            for module in [*lay.qkv, *lay.ffn_in]:
                total = total + linear_weight(module).detach().float().pow(2).sum(0)
            for module in (lay.attn_out, lay.ffn_out):
                total = total + linear_weight(module).detach().float().pow(2).sum(1)
        return total
    if kind == "layers":
        per_layer = [
            sum(p.detach().float().pow(2).sum() for p in lay.module.parameters())
            for lay in layout.layers
        ]
        return torch.stack(per_layer)
    scores = []
    for lay in layout.layers:
        if kind == "ffn":
            s = sum(linear_weight(m).detach().float().pow(2).sum(1) for m in lay.ffn_in)
            scores.append(s + linear_weight(lay.ffn_out).detach().float().pow(2).sum(0))
            continue
        d, rep = lay.head_dim, lay.group_size
        qkv = [linear_weight(m).detach().float().pow(2).sum(1) for m in lay.qkv]
        if layout.family == "gpt2":
            q, k, v = qkv[0].reshape(3, -1)
        else:
            q, k, v = qkv
        out = linear_weight(lay.attn_out).detach().float().pow(2).sum(0)
        per_q = (q + out).reshape(lay.kv_heads, rep * d).sum(1)
        scores.append(per_q + (k + v).reshape(lay.kv_heads, d).sum(1))
    return scores


def masks_from_scores(
    scores: Mapping[str, list[torch.Tensor] | torch.Tensor], ratio: Mapping[str, float]
) -> dict[str, list[torch.Tensor] | torch.Tensor]:
    """Bool group masks removing the lowest-scored ``ratio[kind]`` of each layer's groups.

    The same count is removed in every layer (``floor(ratio · n)`` of ``n``, at least one kept),
    so the shrunk model has uniform counts and reloads with the stock ``from_pretrained``. Ties:
    the lower index is kept (`sparsecore.select.topk_mask`).

    Args:
        scores: Scores by kind (`group_scores`).
        ratio: Fraction removed by kind, in ``[0, 1)``.
    """
    masks: dict[str, list[torch.Tensor] | torch.Tensor] = {}
    for kind, r in ratio.items():
        r = check_number(r, f"ratio[{kind!r}]", 0.0, 1.0, open_high=True)
        if kind not in scores:
            raise ValueError(f"ratio[{kind!r}]: no scores for that kind")
        value = scores[kind]
        rows = value if isinstance(value, list) else [value]
        out = [topk_mask(s, keep_count(s.numel(), 1.0 - r)) for s in rows]
        masks[kind] = out if isinstance(value, list) else out[0]
    return masks

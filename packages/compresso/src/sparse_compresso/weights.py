"""Which projection weights Compresso masks, and their keep masks from group gates.

A removed head (key/value group) zeroes its query / key / value rows and its output-projection
columns; a removed FFN channel its gate / up rows and its down-projection column; a removed hidden
dimension the matching input column of every query / key / value / gate / up projection and output
row of every output / down projection (`sparsecore.structures.group_members` lists the same slices,
plus embeddings, norms and ``lm_head``, which are not masked here: they are not in the prunable
size and `sparsecore.structures.shrink` removes them physically).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from sparsecore.structures import ModelLayout
from sparsecore.structures.layout import base_layer

__all__ = ["projection_weights", "weight_keeps"]


def _roles(layout: ModelLayout) -> list[tuple[int, nn.Module, str]]:
    out = []
    for lay in layout.layers:
        q, k, v = lay.qkv
        out += [(lay.index, q, "q"), (lay.index, k, "kv"), (lay.index, v, "kv")]
        out.append((lay.index, lay.attn_out, "o"))
        out += [(lay.index, m, "ffn_in") for m in lay.ffn_in]
        out.append((lay.index, lay.ffn_out, "ffn_out"))
    return out


def projection_weights(model: nn.Module, layout: ModelLayout) -> dict[str, tuple[int, str]]:
    """``{parameter name in model: (layer, role)}`` of every attention / FFN projection weight.

    Raises:
        ValueError: Not a Llama-family layout (separate query / key / value projections).
    """
    if layout.family != "llama":
        raise ValueError(
            f"model: Compresso prunes Llama-family decoders (Llama, Qwen2, Mistral), got the "
            f"{layout.family!r} family"
        )
    names = {id(p): n for n, p in model.named_parameters(remove_duplicate=False)}
    return {names[id(base_layer(m).weight)]: (i, role) for i, m, role in _roles(layout)}


def _keep(z: torch.Tensor | None, size: int, device: torch.device) -> torch.Tensor:
    if z is None:
        return torch.ones(size, dtype=torch.bool, device=device)
    return (z.detach() != 0).to(device)


@torch.no_grad()
def weight_keeps(
    layout: ModelLayout,
    weights: Mapping[str, tuple[int, str]],
    params: Mapping[str, torch.Tensor],
    gates: Mapping[str, Any],
) -> dict[str, torch.Tensor]:
    """Bool keep masks of the projection weights for group gates (0 = removed).

    Args:
        layout: The model's layout.
        weights: `projection_weights`.
        params: The model's parameters by name.
        gates: Group gates with ``"heads"`` (per layer, per key/value group), ``"ffn"``,
            ``"hidden"`` (each optional).
    """
    out: dict[str, torch.Tensor] = {}
    for name, (i, role) in weights.items():
        weight = params[name]
        dev = weight.device
        lay = layout.layers[i]
        heads = gates.get("heads")
        ffn = gates.get("ffn")
        hidden = _keep(gates.get("hidden"), layout.hidden, dev)
        group = _keep(None if heads is None else heads[i], lay.kv_heads, dev)
        channels = _keep(None if ffn is None else ffn[i], lay.intermediate, dev)
        q_feat = group.repeat_interleave(lay.group_size * lay.head_dim)
        kv_feat = group.repeat_interleave(lay.head_dim)
        rows, cols = {
            "q": (q_feat, hidden),
            "kv": (kv_feat, hidden),
            "o": (hidden, q_feat),
            "ffn_in": (channels, hidden),
            "ffn_out": (hidden, channels),
        }[role]
        keep = rows[:, None] & cols[None, :]
        if keep.shape != weight.shape:
            raise ValueError(
                f"{name}: expected shape {tuple(keep.shape)}, got {tuple(weight.shape)}"
            )
        out[name] = keep
    return out

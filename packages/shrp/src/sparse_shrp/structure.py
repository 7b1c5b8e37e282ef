"""FFN-channel and whole-layer removal for SHRP's compression regimes, on the core's `shrink`.

SHRP's headline regimes (arXiv 2512.20635: "48% fewer parameters" and "11/12 of the layers
pruned") cannot be reached by removing attention heads alone: all of BERT-base's heads are at most
≈26% of its parameters. This module removes the other two structures with the core's transformer
structure groups and physical removal (`sparsecore.structures.shrink`, which rewrites the config
and checks the shrunk model against the masked one); no surgery of its own.

Choices [reconstructed; the paper's abstract names the regimes, not how they are reached]:

* **Order.** The stock BERT is shrunk *before* `sparse_shrp.to_expert_attention` (the core's
  layouts describe stock attention blocks, not Expert Attention), then SHRP trains and prunes
  heads on the smaller model. FFN channels and layers are therefore chosen once, from the
  pretrained weights.
* **FFN channels**: the same number of channels in every layer, lowest magnitude first (the
  core's `group_scores(model, "ffn")`: squared norm of the channel's up-projection row and
  down-projection column; `masks_from_scores`, lower index kept on ties). Uniform counts keep the
  model loadable with the stock ``from_pretrained``.
* **Layers**: ``keep_layers`` names the layers kept (default all); the "all but one layer"
  regime keeps layer 0, the one the embeddings feed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from sparsecore.structures import (
    describe,
    full_group_masks,
    group_scores,
    masks_from_scores,
    shrink,
)
from sparsecore.validation import check_number

__all__ = ["encoder_params", "shrink_encoder"]


def encoder_params(model: nn.Module) -> int:
    """Parameters of the transformer layers (embeddings, pooler and task head excluded).

    Works on stock BERT models and on models converted to Expert Attention (routers included).

    Raises:
        ValueError: ``model`` has no ``encoder.layer`` list (found anywhere inside it).
    """
    for module in model.modules():
        layers = getattr(getattr(module, "encoder", None), "layer", None)
        if isinstance(layers, nn.ModuleList):
            return sum(p.numel() for p in layers.parameters())
    raise ValueError("model: no BERT-style encoder.layer list found")


def shrink_encoder(
    bert: nn.Module,
    ffn_ratio: float = 0.0,
    keep_layers: Sequence[int] | None = None,
    example_inputs: Mapping[str, Any] | None = None,
    atol: float = 1e-3,
) -> nn.Module:
    """A physically smaller copy of a stock BERT: fewer FFN channels and / or fewer layers.

    Args:
        bert: A stock Hugging Face BERT/RoBERTa model (not converted to Expert Attention).
        ffn_ratio: Fraction of each layer's FFN channels removed (lowest magnitude), in [0, 1).
        keep_layers: Indices of the layers kept (default: all).
        example_inputs: Inputs of the core's exactness check (default: random token ids).
        atol: Tolerance of that check (float32 sums over six layers differ by ~1e-4).

    Returns:
        A new model of ``bert``'s class with the updated config (``bert`` is not modified).

    Raises:
        ValueError: ``ffn_ratio`` outside [0, 1), ``keep_layers`` empty / out of range /
            repeated, or ``bert`` is not a model the core's structures describe.
    """
    ffn_ratio = check_number(ffn_ratio, "ffn_ratio", 0.0, 1.0, open_high=True)
    layout = describe(bert)
    count = len(layout.layers)
    keep = list(range(count)) if keep_layers is None else [int(i) for i in keep_layers]
    if not keep or len(set(keep)) != len(keep) or not all(0 <= i < count for i in keep):
        raise ValueError(
            f"keep_layers: need distinct indices in [0, {count}), at least one; got {keep_layers}"
        )
    masks: dict[str, Any] = full_group_masks(bert)
    masks = {k: v for k, v in masks.items() if k in ("ffn", "layers")}
    if ffn_ratio > 0:
        chosen = masks_from_scores({"ffn": group_scores(bert, "ffn")}, {"ffn": ffn_ratio})
        masks["ffn"] = [m.to(masks["ffn"][0].dtype) for m in chosen["ffn"]]
    layer_mask = torch.zeros_like(masks["layers"])
    layer_mask[keep] = 1.0
    masks["layers"] = layer_mask
    return shrink(bert, masks, example_inputs, atol=atol)

"""The stage-2 decision (`PrunePlan`) and how it maps onto weights and LoRA factors.

A head ``h`` of a BERT layer owns the query / key / value output features
``[h · d, (h + 1) · d)`` and the same input features of the attention output projection; an FFN
neuron ``j`` owns row ``j`` of the intermediate projection and column ``j`` of the output
projection. The LoRA factors of those projections are cut the same way (official
``prune_lora_attn`` / ``prune_lora_ffn``): ``B`` rows of query / key / value / intermediate,
``A`` columns of the attention output and FFN output.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sparsecore.structures import ModelLayout, describe

__all__ = ["PrunePlan", "lora_feature_keeps", "projection_roles", "projection_targets"]


def _weight(module: nn.Module) -> torch.Tensor:
    return getattr(module, "base_layer", module).weight


def projection_roles(layout: ModelLayout) -> list[tuple[int, nn.Module, str]]:
    """``(layer, module, role)`` for every projection; role is one of ``"qkv"``,
    ``"attn_out"``, ``"ffn_in"``, ``"ffn_out"``.
    """
    out = []
    for lay in layout.layers:
        out += [(lay.index, m, "qkv") for m in lay.qkv]
        out.append((lay.index, lay.attn_out, "attn_out"))
        out += [(lay.index, m, "ffn_in") for m in lay.ffn_in]
        out.append((lay.index, lay.ffn_out, "ffn_out"))
    return out


def projection_targets(model: nn.Module, layout: ModelLayout | None = None) -> dict[str, int]:
    """The projection weights of ``model`` (names in ``model``) and the axis a removal cuts."""
    layout = layout or describe(model)
    names = {id(p): n for n, p in model.named_parameters(remove_duplicate=False)}
    axis = {"qkv": 0, "attn_out": 1, "ffn_in": 0, "ffn_out": 1}
    return {names[id(_weight(m))]: axis[role] for _, m, role in projection_roles(layout)}


@dataclass
class PrunePlan:
    """What stage 2 removes.

    Attributes:
        heads: Per layer, a bool keep mask over the heads.
        ffn: Per layer, a bool keep mask over the FFN neurons.
        ranks: Per LoRA module (name in the model), a bool keep mask over its ranks; all-False
            means the module is deleted (dropped by ``p2`` or lost every rank).
        p2: The module importances used.
        rank_scores: The rank importances used.
    """

    heads: list[torch.Tensor]
    ffn: list[torch.Tensor]
    ranks: dict[str, torch.Tensor]
    p2: dict[str, float]
    rank_scores: dict[str, torch.Tensor]

    def head_features(self, layer: int, head_dim: int) -> torch.Tensor:
        """Keep mask over the context features of ``layer``."""
        return self.heads[layer].repeat_interleave(head_dim)

    def counts(self) -> dict[str, int]:
        """Removed heads, neurons, LoRA modules and ranks."""
        kept_modules = [n for n, k in self.ranks.items() if bool(k.any())]
        return {
            "heads_removed": sum(int((~k).sum()) for k in self.heads),
            "heads_total": sum(k.numel() for k in self.heads),
            "ffn_removed": sum(int((~k).sum()) for k in self.ffn),
            "ffn_total": sum(k.numel() for k in self.ffn),
            "modules_removed": len(self.ranks) - len(kept_modules),
            "modules_total": len(self.ranks),
            "ranks_removed": sum(int((~k).sum()) for k in self.ranks.values()),
            "ranks_total": sum(k.numel() for k in self.ranks.values()),
        }

    def weight_masks(
        self, layout: ModelLayout, axes: Mapping[str, int], model: nn.Module
    ) -> dict[str, torch.Tensor]:
        """Bool keep masks of the projection weights (names as in `projection_targets`)."""
        names = {id(p): n for n, p in model.named_parameters(remove_duplicate=False)}
        out = {}
        for layer, module, role in projection_roles(layout):
            weight = _weight(module)
            lay = layout.layers[layer]
            keep = self.head_features(layer, lay.head_dim) if role in ("qkv", "attn_out") else None
            keep = self.ffn[layer] if keep is None else keep
            name = names[id(weight)]
            shape = (-1, 1) if axes[name] == 0 else (1, -1)
            out[name] = keep.view(shape).expand_as(weight).contiguous().to(weight.device)
        return out

    def state(self) -> dict[str, Any]:
        """Plain tensors and dicts (loadable with ``weights_only=True``)."""
        return {
            "heads": [k.clone() for k in self.heads],
            "ffn": [k.clone() for k in self.ffn],
            "ranks": {n: k.clone() for n, k in self.ranks.items()},
            "p2": dict(self.p2),
            "rank_scores": {n: s.clone() for n, s in self.rank_scores.items()},
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> PrunePlan:
        """Inverse of `state`."""
        return cls(
            [torch.as_tensor(k, dtype=torch.bool) for k in state["heads"]],
            [torch.as_tensor(k, dtype=torch.bool) for k in state["ffn"]],
            {n: torch.as_tensor(k, dtype=torch.bool) for n, k in state["ranks"].items()},
            {n: float(v) for n, v in state["p2"].items()},
            {n: torch.as_tensor(v) for n, v in state["rank_scores"].items()},
        )


def lora_feature_keeps(
    model: nn.Module, plan: PrunePlan
) -> dict[str, tuple[torch.Tensor | None, torch.Tensor | None]]:
    """Per LoRA module name: (keep over ``B`` rows, keep over ``A`` columns); ``None`` = all."""
    from sparse_lightpeft.importance import lora_layers

    layout = describe(model)
    by_module = {}
    for layer, module, role in projection_roles(layout):
        lay = layout.layers[layer]
        if role in ("qkv", "attn_out"):
            keep = plan.head_features(layer, lay.head_dim)
        else:
            keep = plan.ffn[layer]
        pair = (keep, None) if role in ("qkv", "ffn_in") else (None, keep)
        by_module[id(module)] = pair
        by_module[id(getattr(module, "base_layer", module))] = pair
    out = {}
    for name, m in lora_layers(model).items():
        pair = by_module.get(id(m), by_module.get(id(getattr(m, "base_layer", m))))
        if pair is not None:
            out[name] = pair
    return out

"""ATP's parameter budget: group costs, the remaining fraction, the penalty and the final cut.

The prunable parameters are the attention and FFN projection weights (the official
``count_total_prunable_params``); a key/value head group costs its query, key and value rows
and its attention-output columns, an FFN channel its gate and up rows and its down column
(`sparsecore.structures.group_members`). With hard decisions ``d`` the remaining fraction is
``r(d) = Σ_g cost_g · d_g / Σ_g cost_g``; because ``d`` carries straight-through gradients, so
does ``r``.

* Penalty [official ``match_loss``]: ``R(r, p) = log(max(r, p) / min(r, p))``, ``p`` the target
  remaining fraction; zero exactly at the target, growing on either side.
* Final cut [choice]: when the decisions are fixed, `project_to_budget` keeps the groups with
  the highest generator logits (at least one head and one FFN channel per layer) while they fit
  the budget, so the removed fraction is the target up to one group's parameters. The official
  code keeps the last hard decisions as they are (near the target by the penalty only).
"""

from __future__ import annotations

import torch
from torch import nn

from sparsecore.structures import describe, group_members

__all__ = ["GroupCosts", "budget_penalty", "project_to_budget", "remaining_fraction"]


class GroupCosts:
    """Parameter counts of every head group and FFN channel, and the prunable weight axes.

    Args:
        model: A Llama-family model (a peft LoRA model works: the base weights are counted).

    Attributes:
        heads: ``(L, H)`` parameter count per key/value head group.
        ffn: ``(L, C)`` parameter count per FFN channel.
        total: Sum of both (every prunable weight is in exactly one group).
        axes: ``{weight name: dim}``: the prunable weights and the dimension a removal cuts.
        slices: ``{"heads"/"ffn": [per layer: [per group: ((name, dim, idx), ...)]]}``.
    """

    def __init__(self, model: nn.Module) -> None:
        inner = dict(describe(model).model.named_parameters(remove_duplicate=False))
        top = {id(p): n for n, p in model.named_parameters(remove_duplicate=False)}
        self.axes: dict[str, int] = {}
        counts: dict[str, list[list[int]]] = {}
        self.slices: dict[str, list[list[tuple]]] = {}
        for kind in ("heads", "ffn"):
            per_layer: dict[int, list[int]] = {}
            members: dict[int, list[tuple]] = {}
            for group in group_members(model, kind):
                cost = 0
                kept = []
                for inner_name, dim, idx in group.slices:
                    if not inner_name.endswith(".weight"):
                        continue  # biases are not in the budget (Llama has none)
                    p = inner[inner_name]
                    name = top[id(p)]
                    self.axes[name] = dim
                    cost += len(idx) * (p.numel() // p.shape[dim])
                    kept.append((name, dim, idx))
                per_layer.setdefault(group.layer, []).append(cost)
                members.setdefault(group.layer, []).append(tuple(kept))
            counts[kind] = [per_layer[i] for i in sorted(per_layer)]
            self.slices[kind] = [members[i] for i in sorted(members)]
        self.heads = torch.tensor(counts["heads"], dtype=torch.float64)
        self.ffn = torch.tensor(counts["ffn"], dtype=torch.float64)
        self.total = float(self.heads.sum() + self.ffn.sum())

    def weight_masks(
        self, heads: torch.Tensor, ffn: torch.Tensor, params: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Bool keep-masks of the prunable weights for bool decisions ``heads`` / ``ffn``."""
        masks = {name: torch.ones_like(params[name], dtype=torch.bool) for name in self.axes}
        for kind, keep in (("heads", heads), ("ffn", ffn)):
            for layer, groups in enumerate(self.slices[kind]):
                for g, slices in enumerate(groups):
                    if bool(keep[layer, g]):
                        continue
                    for name, dim, idx in slices:
                        masks[name].index_fill_(dim, torch.tensor(idx), False)
        return masks


def remaining_fraction(heads: torch.Tensor, ffn: torch.Tensor, costs: GroupCosts) -> torch.Tensor:
    """``Σ cost · d / Σ cost`` for decisions ``(L, H)`` / ``(L, C)`` (differentiable)."""
    h = costs.heads.to(heads.device, heads.dtype)
    f = costs.ffn.to(ffn.device, ffn.dtype)
    return ((heads * h).sum() + (ffn * f).sum()) / costs.total


def budget_penalty(remaining: torch.Tensor, target: float) -> torch.Tensor:
    """``log(max(r, p) / min(r, p))``: 0 at ``r = p`` (the official ``match_loss``)."""
    p = torch.as_tensor(target, dtype=remaining.dtype, device=remaining.device)
    return torch.log(torch.maximum(remaining, p) / (torch.minimum(remaining, p) + 1e-10))


@torch.no_grad()
def project_to_budget(
    head_scores: torch.Tensor, ffn_scores: torch.Tensor, costs: GroupCosts, keep_fraction: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bool decisions keeping the highest-scored groups within ``keep_fraction`` of the budget.

    Each layer keeps its best head group and FFN channel first; then groups are taken in
    descending score order (ties: lower layer, then lower index) whenever they still fit.

    Returns:
        ``(heads, ffn)`` bool tensors shaped like the scores.
    """
    budget = keep_fraction * costs.total
    keep_h = torch.zeros_like(head_scores, dtype=torch.bool)
    keep_f = torch.zeros_like(ffn_scores, dtype=torch.bool)
    rows = torch.arange(head_scores.shape[0])
    keep_h[rows, head_scores.argmax(1)] = True
    keep_f[rows, ffn_scores.argmax(1)] = True
    spent = float((costs.heads * keep_h).sum() + (costs.ffn * keep_f).sum())
    entries = []
    for kind, scores, cost in (("h", head_scores, costs.heads), ("f", ffn_scores, costs.ffn)):
        for (layer, g), s in zip(
            torch.cartesian_prod(*map(torch.arange, scores.shape)), scores.flatten(), strict=True
        ):
            entries.append((-float(s), int(layer), kind, int(g), float(cost[layer, g])))
    for _, layer, kind, g, cost in sorted(entries):
        keep = keep_h if kind == "h" else keep_f
        if keep[layer, g] or spent + cost > budget:
            continue
        keep[layer, g] = True
        spent += cost
    return keep_h, keep_f

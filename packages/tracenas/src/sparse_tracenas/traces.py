"""Gradient traces, the TraceNAS proxy Φ, layer importance and the Wanda width realisation.

Paper: "TraceNAS: Zero-shot LLM Pruning via Gradient Trace Correlation" (Malettira et al.,
arXiv 2602.02891); official code github.com/pmaletti/TraceNAS,
``tracenas_utils/scoring_funcs.py`` (``calculate_influence_w_l2normdist`` and its
``_w_cosine`` / ``_w_dot_prod`` variants, ``get_layer_importance``).

* **Trace** of a sublayer (attention: q, k, v, o; MLP: gate, up, down) = the gradient of the
  loss with respect to its weights, flattened, averaged over the calibration batches. The base
  trace is taken on the full model; a candidate's trace with its width masks applied (the core's
  `sparsecore.structures.mask_groups`: a removed head's context and a removed channel's
  activation are multiplied by 0, so the weights that feed or read them get zero gradient) and
  its inactive layers skipped (identity).
* **Φ** = Σ over active layers of ρ(attention traces) + ρ(MLP traces), ρ = Pearson correlation
  ``mean(z(a) · z(b))``. [choice] ``z`` uses the population standard deviation, so that
  Φ(full model) is exactly the number of active sublayers; the official ``standarlization``
  uses ``torch.std`` (n - 1), which scales every ρ by ``(D - 1) / D``. A constant trace
  (zero variance) gives ρ = 0. Variants: cosine similarity, and the raw dot product (not
  scale-invariant, kept for the ablation). [choice] Traces are gradients of the full weights
  (the paper's "flattened gradients of each sublayer"); the official runs take the gradients of
  whichever parameters require grad, which with its ``--lora_r`` setting may be adapters.
* **Layer importance** (``get_layer_importance``): attention ``mean(|W_o| · ‖X_o‖₂)``, MLP
  ``mean(|W_down| · ‖X_down‖₂)``, from the core's input norms
  (`sparsecore.structures.importance.collect_input_norms`, a dense forward of the batches).
* **Width realisation** [digest: "WANDA score |W_ij|·‖X_j‖₂ ... keep the top channels/heads"]:
  the core's Wanda-sp group importance
  (`sparsecore.structures.importance.group_importance(..., "wanda")`: a key/value group scores
  the sum of ``|W|·‖X‖₂`` over the o_proj columns of its heads, an FFN channel over its
  down_proj column); an active layer keeps its top groups / channels (ties: lower index).
  The official ``get_pruning_masks`` in the released file samples indices at
  random; the paper and digest describe Wanda, which is what is done here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from sparse_tracenas.space import Candidate, SearchSpace
from sparsecore.calibration import input_ids_of
from sparsecore.oneshot import wanda_scores
from sparsecore.select import topk_mask
from sparsecore.structures import describe, mask_groups
from sparsecore.structures.layout import base_layer

__all__ = [
    "BaseStatistics",
    "candidate_traces",
    "causal_lm_loss",
    "collect_base",
    "correlation",
    "group_masks_of",
    "proxy_score",
    "sublayer_weights",
    "trace_of",
]

#: ``loss_fn(logits, input_ids) -> loss``.
TraceLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def causal_lm_loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (position t predicts token t + 1)."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())


def sublayer_weights(model: nn.Module) -> list[tuple[list[nn.Parameter], list[nn.Parameter]]]:
    """Per layer, the (attention, MLP) projection weights whose gradients form the traces."""
    out = []
    for lay in describe(model).layers:
        attn = [base_layer(m).weight for m in (*lay.qkv, lay.attn_out)]
        mlp = [base_layer(m).weight for m in (*lay.ffn_in, lay.ffn_out)]
        out.append((attn, mlp))
    return out


def _batches(batches: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [input_ids_of(b) for b in batches]


def trace_of(
    model: nn.Module,
    batches: Sequence[torch.Tensor],
    layers: Sequence[bool] | None = None,
    loss_fn: TraceLoss = causal_lm_loss,
) -> dict[tuple[int, str], torch.Tensor]:
    """Mean flattened gradient of every active sublayer's weights (float64), by (layer, kind).

    Args:
        model: A Llama-style causal LM (group masks may be attached with ``mask_groups``).
        batches: Token-id tensors (or ``(ids, labels)`` pairs / dicts).
        layers: Active layers (default: all).
        loss_fn: ``loss_fn(logits, ids)``.

    Returns:
        ``{(layer, "attn" | "mlp"): trace}``.
    """
    weights = sublayer_weights(model)
    active = [i for i in range(len(weights)) if layers is None or layers[i]]
    flat = [p for i in active for part in weights[i] for p in part]
    sums: list[torch.Tensor | None] = [None] * len(flat)
    ids_list = _batches(batches)
    was_training = model.training
    model.eval()
    try:
        for ids in ids_list:
            logits = model(input_ids=ids).logits
            grads = torch.autograd.grad(loss_fn(logits, ids), flat, allow_unused=True)
            for j, g in enumerate(grads):
                g = torch.zeros_like(flat[j]) if g is None else g.detach()
                sums[j] = g.double() if sums[j] is None else sums[j] + g.double()
    finally:
        model.train(was_training)
    out: dict[tuple[int, str], torch.Tensor] = {}
    pos = 0
    for i in active:
        for kind, part in zip(("attn", "mlp"), weights[i], strict=True):
            vecs = [sums[pos + k].reshape(-1) / len(ids_list) for k in range(len(part))]
            out[(i, kind)] = torch.cat(vecs)
            pos += len(part)
    return out


def correlation(a: torch.Tensor, b: torch.Tensor, kind: str = "pearson") -> float:
    """ρ of two traces: ``"pearson"`` (population z-scores), ``"cosine"`` or ``"dot"``."""
    a, b = a.double().reshape(-1), b.double().reshape(-1)
    if kind == "dot":
        return float(a @ b)
    if kind == "cosine":
        denom = a.norm() * b.norm()
        return float(a @ b / denom) if denom > 0 else 0.0
    sa, sb = a.std(unbiased=False), b.std(unbiased=False)
    if sa == 0 or sb == 0:
        return 0.0
    return float(((a - a.mean()) / sa * ((b - b.mean()) / sb)).mean())


@dataclass
class BaseStatistics:
    """What the search needs from the full model (one base pass).

    Attributes:
        traces: Base trace per ``(layer, kind)``.
        importance: ``{"attn": [per layer], "mlp": [per layer]}`` (official layer importance).
        group_scores: Per layer, the Wanda score of each key/value group.
        channel_scores: Per layer, the Wanda score of each FFN channel.
    """

    traces: dict[tuple[int, str], torch.Tensor]
    importance: dict[str, list[float]]
    group_scores: list[torch.Tensor]
    channel_scores: list[torch.Tensor]


def collect_base(
    model: nn.Module, batches: Sequence[torch.Tensor], loss_fn: TraceLoss = causal_lm_loss
) -> BaseStatistics:
    """Base traces, layer importance and Wanda-sp group / channel scores of the full model.

    The input norms and the Wanda-sp scores are the core's
    (`sparsecore.structures.importance.collect_input_norms` / `group_importance(..., "wanda")`).
    """
    from sparsecore.structures.importance import collect_input_norms, group_importance

    layout = describe(model)
    traces = trace_of(model, batches, loss_fn=loss_fn)
    ids = _batches(batches)
    norms = collect_input_norms(model, ids)
    importance: dict[str, list[float]] = {"attn": [], "mlp": []}
    for lay in layout.layers:
        for kind, module in (("attn", lay.attn_out), ("mlp", lay.ffn_out)):
            weight = base_layer(module).weight
            name = f"{layout.name(base_layer(module))}.weight"
            scores = wanda_scores(weight.detach().float(), norms[name].pow(2).to(weight.device))
            importance[kind].append(float(scores.mean()))
    groups = group_importance(model, "heads", "wanda", input_norms=norms)
    channels = group_importance(model, "ffn", "wanda", input_norms=norms)
    return BaseStatistics(
        traces, importance, [g.cpu() for g in groups], [c.cpu() for c in channels]
    )


def group_masks_of(c: Candidate, space: SearchSpace, base: BaseStatistics) -> dict:
    """The core group masks (``heads`` per key/value group, ``ffn``, ``layers``) of ``c``.

    An active layer keeps its top-Wanda groups and channels; an inactive layer's width masks
    are all ones (the layer gate removes it whole).
    """
    heads, ffn = [], []
    for i in range(space.num_layers):
        if c.layers[i]:
            heads.append(topk_mask(base.group_scores[i], c.attn[i]))
            ffn.append(topk_mask(base.channel_scores[i], c.mlp[i] * space.mlp_block))
        else:
            heads.append(torch.ones(space.kv_groups, dtype=torch.bool))
            ffn.append(torch.ones(space.intermediate, dtype=torch.bool))
    return {"heads": heads, "ffn": ffn, "layers": torch.tensor(c.layers, dtype=torch.bool)}


def proxy_score(
    model: nn.Module,
    c: Candidate,
    space: SearchSpace,
    base: BaseStatistics,
    batches: Sequence[torch.Tensor],
    kind: str = "pearson",
    loss_fn: TraceLoss = causal_lm_loss,
) -> tuple[float, dict[tuple[int, str], float]]:
    """Φ of candidate ``c``: Σ over its active sublayers of ρ(candidate trace, base trace).

    Returns:
        ``(Φ, {(layer, kind): ρ})``.
    """
    traces = candidate_traces(model, c, space, base, batches, loss_fn)
    per = {key: correlation(t, base.traces[key].to(t.device), kind) for key, t in traces.items()}
    return sum(per.values()), per


def candidate_traces(
    model: nn.Module,
    c: Candidate,
    space: SearchSpace,
    base: BaseStatistics,
    batches: Sequence[torch.Tensor],
    loss_fn: TraceLoss = causal_lm_loss,
) -> dict[tuple[int, str], torch.Tensor]:
    """The traces of candidate ``c``'s active sublayers (its width masks applied)."""
    masks = group_masks_of(c, space, base)
    device = next(model.parameters()).device
    masks = {
        k: [v.to(device) for v in m] if isinstance(m, list) else m.to(device)
        for k, m in masks.items()
    }
    with mask_groups(model, masks):
        return trace_of(model, batches, c.layers, loss_fn)

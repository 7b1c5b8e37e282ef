"""Structured importance of transformer groups and one-shot structured pruning to a budget.

The one-shot structured baselines that LLM pruning papers compare against, on the core's
structure groups (`sparsecore.structures.members`): a group is a set of parameter slices, and
its score is the sum over those slices of an element-wise salience ``S``:

* ``"magnitude"``: ``S = w²`` (the same score as `group_scores`).
* ``"taylor"``: ``S = |w · ∂L/∂w|``, the first-order Taylor estimate of the loss change when the
  element is zeroed, summed over the group ("element-wise" importance of LLM-Pruner, Ma, Fang &
  Wang, "LLM-Pruner: On the Structural Pruning of Large Language Models", arXiv 2305.11627;
  official code horseee/LLM-Pruner, ``TaylorImportance`` with ``taylor="param_first"`` and
  ``group_reduction="sum"``). Gradients are *summed* over the calibration batches
  (`collect_gradients`), as LLM-Pruner accumulates them over its calibration samples.
* ``"taylor-vector"``: ``|Σ_group w · ∂L/∂w|``, LLM-Pruner's "vector-wise" importance (the
  first-order loss change of removing the whole group at once).
* ``"wanda"``: Wanda-sp, the structured Wanda metric of FLAP (An et al., "Fluctuation-based
  Adaptive Structured Pruning for Large Language Models", arXiv 2312.11983, the "Wanda-sp"
  baseline): ``S_ij = |W_ij| · ‖X_j‖₂`` on the Linear weights where the group indexes the
  *input* features (``o_proj`` / ``down_proj`` columns for heads and FFN channels; the columns
  of every projection reading the hidden states for hidden dimensions; all of a layer's Linears
  for a layer). Input norms come from a dense forward over the calibration batches
  (`collect_input_norms`).

Choices, labelled: biases count in "magnitude" and the Taylor scores like any other slice
element; "wanda" uses Linear weights only (no activation norm exists for embeddings, norms or
biases). Scores are float64.

`budget_masks` turns scores into group masks meeting a parameter budget with the same count per
layer (so the shrunk model reloads through the stock ``from_pretrained``): the head (key/value
group) count removed per layer is ``round(r · n)`` for the one ratio ``r`` of the prunable
groups' parameters that meets the budget (``floor`` if rounding up overshoots it), and FFN
channels fill the rest of the budget as closely as whole channels allow (LLM-Pruner prunes
heads and channels at one ratio per layer; with the few heads of a tiny model one ratio misses
a budget by a whole head, hence the fill). `prune_structured` chains scoring, the budget and
`shrink` into a plain smaller model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from sparsecore.calibration import StatisticsHooks
from sparsecore.layouts import is_hf_conv1d
from sparsecore.select import topk_mask
from sparsecore.structures.layout import base_layer, describe
from sparsecore.structures.members import group_members, group_scores
from sparsecore.structures.shrink import shrink
from sparsecore.validation import check_choice, check_number

__all__ = [
    "CRITERIA",
    "budget_masks",
    "collect_gradients",
    "collect_input_norms",
    "group_importance",
    "group_parameter_counts",
    "prune_structured",
]

#: The scoring criteria `group_importance` knows.
CRITERIA = ("magnitude", "taylor", "taylor-vector", "wanda")
_KINDS = ("heads", "ffn", "hidden", "layers")

Batch = Any
LossFn = Callable[[nn.Module, Batch], torch.Tensor]


def _lm_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Causal-LM loss of a batch of token ids (``labels = input_ids``), or a dict batch's."""
    if isinstance(batch, Mapping):
        inputs = dict(batch)
        inputs.setdefault("labels", inputs["input_ids"])
        return model(**inputs).loss
    return model(input_ids=batch, labels=batch).loss


def collect_gradients(
    model: nn.Module, batches: Iterable[Batch], loss_fn: LossFn | None = None
) -> dict[str, torch.Tensor]:
    """Gradients of the loss summed over ``batches``, by parameter name of the unwrapped model.

    The model runs in eval mode (dropout off; its mode is restored) and its own ``.grad`` fields
    are left as they were (saved and restored).

    Args:
        model: A Hugging Face model (`describe` must recognise it).
        batches: Calibration batches: token-id tensors or dicts of model inputs.
        loss_fn: ``loss_fn(model, batch) -> scalar``; default: the causal-LM loss with
            ``labels = input_ids``.

    Returns:
        Float32 summed gradients of every parameter that requires grad.

    Raises:
        ValueError: No batch was given, or no parameter requires grad.
    """
    loss_fn = loss_fn or _lm_loss
    inner = describe(model).model
    params = {n: p for n, p in inner.named_parameters(remove_duplicate=False) if p.requires_grad}
    if not params:
        raise ValueError("model: no parameter requires grad (Taylor scores need gradients)")
    saved = {n: p.grad for n, p in params.items()}
    sums = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    distinct = {id(p): n for n, p in params.items()}  # tied weights: add their gradient once
    count = 0
    was_training = model.training
    model.eval()  # dropout off: the scores are of the deterministic model
    try:
        for batch in batches:
            for p in params.values():
                p.grad = None
            loss_fn(model, batch).backward()
            for n, p in params.items():
                if p.grad is not None and distinct[id(p)] == n:
                    sums[n] += p.grad.detach().float()
            count += 1
    finally:
        model.train(was_training)
        for n, p in params.items():
            p.grad = saved[n]
    if count == 0:
        raise ValueError("batches: no calibration batch was given")
    return {n: sums[distinct[id(p)]] for n, p in params.items()}


@torch.no_grad()
def collect_input_norms(model: nn.Module, batches: Iterable[Batch]) -> dict[str, torch.Tensor]:
    """``‖X_j‖₂`` of every Linear's input over a dense forward of ``batches`` (Wanda's norm).

    The forward runs in eval mode (its mode is restored).

    Returns:
        Float64 norms keyed by the qualified name of the Linear's weight in the unwrapped model
        (``"model.layers.0.mlp.down_proj.weight"``).

    Raises:
        ValueError: No batch was given.
    """
    layout = describe(model)
    modules: dict[str, nn.Module] = {}
    for module in layout.readers:
        modules[layout.name(base_layer(module))] = base_layer(module)
    for lay in layout.layers:
        for module in [*lay.qkv, lay.attn_out, *lay.ffn_in, lay.ffn_out]:
            modules[layout.name(base_layer(module))] = base_layer(module)
    count = 0
    was_training = model.training
    model.eval()
    try:
        with StatisticsHooks(modules) as hooks:
            for batch in batches:
                if isinstance(batch, Mapping):
                    model(**batch)
                else:
                    model(input_ids=batch)
                count += 1
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("batches: no calibration batch was given")
    return {f"{name}.weight": stat.input_norms for name, stat in hooks.stats.items()}


def _salience(
    param: torch.Tensor, name: str, criterion: str, grads: Mapping[str, torch.Tensor] | None
) -> torch.Tensor:
    w = param.detach().double()
    if criterion == "magnitude":
        return w.pow(2)
    assert grads is not None
    if name not in grads:
        raise ValueError(f"gradients: no gradient for parameter {name!r}")
    product = w * grads[name].double()
    return product if criterion == "taylor-vector" else product.abs()


def _reduce(salience: torch.Tensor, dim: int, cache: dict, key: tuple) -> torch.Tensor:
    """``salience`` summed over every dim but ``dim`` (cached per parameter and dim)."""
    if key not in cache:
        if salience.dim() == 1:
            cache[key] = salience
        else:
            cache[key] = salience.sum(tuple(d for d in range(salience.dim()) if d != dim))
    return cache[key]


def group_importance(
    model: nn.Module,
    kind: str,
    criterion: str = "magnitude",
    *,
    gradients: Mapping[str, torch.Tensor] | None = None,
    input_norms: Mapping[str, torch.Tensor] | None = None,
) -> list[torch.Tensor] | torch.Tensor:
    """Importance of every group of ``kind`` under ``criterion`` (see the module docstring).

    Args:
        model: A Llama/Qwen2/Mistral, BERT/RoBERTa or GPT-2 Hugging Face model.
        kind: ``"heads"``, ``"ffn"``, ``"hidden"`` or ``"layers"``.
        criterion: One of `CRITERIA`.
        gradients: Summed gradients (`collect_gradients`), for the Taylor criteria.
        input_norms: Linear input norms (`collect_input_norms`), for ``"wanda"``.

    Returns:
        Like `group_scores`: one float64 tensor per layer for heads / FFN, one tensor otherwise.

    Raises:
        ValueError: Unknown kind or criterion, or the statistics the criterion needs are missing.
    """
    kind = check_choice(kind, "kind", _KINDS)
    criterion = check_choice(criterion, "criterion", CRITERIA)
    if criterion in ("taylor", "taylor-vector") and gradients is None:
        raise ValueError(f"gradients: criterion {criterion!r} needs collect_gradients(...)")
    if criterion == "wanda" and input_norms is None:
        raise ValueError("input_norms: criterion 'wanda' needs collect_input_norms(...)")
    if criterion == "magnitude":
        return group_scores(model, kind)
    layout = describe(model)
    params = dict(layout.model.named_parameters(remove_duplicate=False))
    salience: dict[str, torch.Tensor] = {}
    cache: dict = {}
    flat: list[torch.Tensor] = []
    for group in group_members(model, kind):
        total = torch.zeros((), dtype=torch.float64)
        for name, dim, idx in group.slices:
            if criterion == "wanda":
                if name not in input_norms or params[name].dim() != 2:
                    continue
                owner = layout.model.get_submodule(name.rpartition(".")[0])
                in_dim = 0 if is_hf_conv1d(owner) else 1
                if kind != "layers" and dim != in_dim:
                    continue  # the group indexes this Linear's outputs, not its inputs
                if name not in salience:
                    norms = input_norms[name].double()
                    w = params[name].detach().double().abs()
                    salience[name] = w * (norms[:, None] if in_dim == 0 else norms[None, :])
            elif name not in salience:
                salience[name] = _salience(params[name], name, criterion, gradients)
            s = salience[name]
            if not idx:
                total = total + s.sum()
                continue
            reduced = _reduce(s, dim, cache, (name, dim))
            total = total + reduced[list(idx)].sum()
        flat.append(total.abs() if criterion == "taylor-vector" else total)
    return _shape_like(layout, kind, flat)


def _shape_like(layout, kind: str, flat: list[torch.Tensor]) -> list[torch.Tensor] | torch.Tensor:
    if kind in ("hidden", "layers"):
        return torch.stack(flat)
    out, start = [], 0
    for lay in layout.layers:
        count = lay.kv_heads if kind == "heads" else lay.intermediate
        out.append(torch.stack(flat[start : start + count]))
        start += count
    return out


def group_parameter_counts(model: nn.Module, kind: str) -> list[torch.Tensor] | torch.Tensor:
    """How many parameters each group of ``kind`` holds (its slices' element counts).

    Shaped like `group_scores`; integer tensors.
    """
    kind = check_choice(kind, "kind", _KINDS)
    layout = describe(model)
    params = dict(layout.model.named_parameters(remove_duplicate=False))
    flat = []
    for group in group_members(model, kind):
        total = 0
        for name, dim, idx in group.slices:
            p = params[name]
            total += p.numel() if not idx else len(idx) * (p.numel() // p.shape[dim])
        flat.append(torch.tensor(total))
    return _shape_like(layout, kind, flat)


def _layer_parameters(model: nn.Module) -> int:
    return sum(p.numel() for lay in describe(model).layers for p in lay.module.parameters())


def _model_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in describe(model).model.parameters())


def budget_masks(
    model: nn.Module,
    scores: Mapping[str, list[torch.Tensor]],
    remove_fraction: float,
    *,
    count: str = "layers",
) -> tuple[dict[str, list[torch.Tensor]], dict[str, Any]]:
    """Head and FFN masks removing ``remove_fraction`` of the parameters, lowest scores first.

    Args:
        model: The model the scores belong to.
        scores: ``{"heads": [...], "ffn": [...]}`` (either may be missing: then only the other
            kind is pruned), one tensor per layer.
        remove_fraction: Fraction of parameters to remove, in ``[0, 1)``.
        count: ``"layers"`` (of the decoder-layer parameters, as LLM-Pruner and Compresso count)
            or ``"model"`` (of all parameters, embeddings included).

    Returns:
        ``(masks, report)``: bool masks per kind (same count per layer) and a report with
        ``target``, ``removed``, ``total`` parameter counts and the per-layer counts removed.

    Raises:
        ValueError: A bad fraction or count, no usable kind, or a budget that would empty a
            layer's heads or FFN.
    """
    remove_fraction = check_number(remove_fraction, "remove_fraction", 0.0, 1.0, open_high=True)
    count = check_choice(count, "count", ("layers", "model"))
    kinds = [k for k in ("heads", "ffn") if k in scores]
    if not kinds:
        raise ValueError("scores: give 'heads' and/or 'ffn' scores")
    total = _layer_parameters(model) if count == "layers" else _model_parameters(model)
    target = round(remove_fraction * total)
    sizes = {k: group_parameter_counts(model, k) for k in kinds}
    per_group = {k: [int(s[0]) if s.numel() else 0 for s in sizes[k]] for k in kinds}
    n_layers = len(next(iter(scores.values())))
    widths = {k: [int(s.numel()) for s in scores[k]] for k in kinds}
    removed_heads = [0] * n_layers
    if "heads" in kinds:
        # one ratio for heads and channels (LLM-Pruner): the ratio of the prunable groups that
        # meets the budget, rounded to whole key/value groups; the FFN then fills the rest
        prunable = sum(w * g for k in kinds for w, g in zip(widths[k], per_group[k], strict=True))
        ratio = target / prunable if prunable else 0.0
        removed_heads = [min(w - 1, round(ratio * w)) for w in widths["heads"]]
        spent = sum(c * g for c, g in zip(removed_heads, per_group["heads"], strict=True))
        if spent > target and "ffn" in kinds:
            removed_heads = [min(w - 1, int(ratio * w)) for w in widths["heads"]]
    spent = sum(
        c * g for c, g in zip(removed_heads, per_group.get("heads", [0] * n_layers), strict=True)
    )
    removed_ffn = [0] * n_layers
    if "ffn" in kinds:
        per_channel = sum(per_group["ffn"])
        channels = max(0, round((target - spent) / per_channel)) if per_channel else 0
        limit = min(widths["ffn"]) - 1
        if channels > limit:
            raise ValueError(f"remove_fraction: {remove_fraction} would empty an FFN")
        removed_ffn = [channels] * n_layers
    masks: dict[str, list[torch.Tensor]] = {}
    for kind, removed in (("heads", removed_heads), ("ffn", removed_ffn)):
        if kind in kinds:
            masks[kind] = [
                topk_mask(s.double(), s.numel() - c)
                for s, c in zip(scores[kind], removed, strict=True)
            ]
    done = sum(
        c * g
        for k, rm in (("heads", removed_heads), ("ffn", removed_ffn))
        if k in kinds
        for c, g in zip(rm, per_group[k], strict=True)
    )
    report = {
        "target": target,
        "removed": int(done),
        "total": int(total),
        "heads_removed": removed_heads,
        "ffn_removed": removed_ffn,
    }
    return masks, report


def prune_structured(
    model: nn.Module,
    criterion: str,
    remove_fraction: float,
    *,
    batches: Iterable[Batch] | None = None,
    kinds: tuple[str, ...] = ("heads", "ffn"),
    count: str = "layers",
    loss_fn: LossFn | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """One-shot structured pruning of heads and FFN channels to a parameter budget.

    Scores every group under ``criterion`` (statistics from ``batches`` where needed),
    builds `budget_masks` and returns a plain, physically smaller model (`shrink`).

    Args:
        model: A Hugging Face model (not modified).
        criterion: One of `CRITERIA`.
        remove_fraction: Fraction of parameters removed (see `budget_masks` for ``count``).
        batches: Calibration batches (a list: it may be iterated twice) for ``"taylor"``,
            ``"taylor-vector"`` and ``"wanda"``.
        kinds: Which of ``"heads"`` and ``"ffn"`` to prune.
        count: ``"layers"`` or ``"model"`` (see `budget_masks`).
        loss_fn: Loss for the Taylor criteria (default: causal-LM loss).

    Returns:
        ``(shrunk model, report)``; the report is `budget_masks`' plus ``masks`` and
        ``criterion``.

    Raises:
        ValueError: Bad arguments (before the model is touched).
    """
    criterion = check_choice(criterion, "criterion", CRITERIA)
    check_number(remove_fraction, "remove_fraction", 0.0, 1.0, open_high=True)
    check_choice(count, "count", ("layers", "model"))
    if not kinds or any(k not in ("heads", "ffn") for k in kinds):
        raise ValueError(f"kinds: choose from ('heads', 'ffn'), got {kinds!r}")
    if criterion != "magnitude" and batches is None:
        raise ValueError(f"batches: criterion {criterion!r} needs calibration batches")
    data = list(batches) if batches is not None else []
    stats: dict[str, Any] = {}
    if criterion in ("taylor", "taylor-vector"):
        stats["gradients"] = collect_gradients(model, data, loss_fn)
    elif criterion == "wanda":
        stats["input_norms"] = collect_input_norms(model, data)
    scores = {k: group_importance(model, k, criterion, **stats) for k in kinds}
    masks, report = budget_masks(model, scores, remove_fraction, count=count)
    smaller = shrink(model, masks)
    report.update(masks=masks, criterion=criterion)
    return smaller, report

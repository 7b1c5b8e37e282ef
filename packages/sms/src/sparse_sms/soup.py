"""Merging sparse ingredients: uniform and greedy soups, and BatchNorm recalibration.

Choices, checked against the official code (``strategies/ensembleStrategies.py`` and
``runners/baseRunner.py``):

* **What is averaged.** Every floating-point entry of the state dicts (weights, biases, BN affine
  parameters and running statistics) is averaged with the soup weights; mask buffers (bool
  ``*_mask`` entries) are *not* averaged but copied (``average_models`` skips ``'_mask'`` keys
  and copies them from one ingredient). We additionally *check* that every ingredient carries the
  same masks and raise ``ValueError`` otherwise (the official code assumes it). Integer buffers
  (``num_batches_tracked``) are copied from the first ingredient instead of being averaged into a
  float; recalibration resets them anyway.
* **Precision.** The average is `sparsecore.distributed.average_state_dicts` (shared with
  other soup users): sums are accumulated in float64 and cast back, masked weights re-multiplied
  by their mask, so the soup of ``m`` identical copies is bit-for-bit the model and pruned
  entries (exact zeros in every ingredient) stay exactly zero; the soup's zero set on the
  targets is therefore the shared mask.
* **Greedy soup.** Ingredients are sorted by validation accuracy, descending (stable: ties keep
  ingredient order); the soup starts with the best one; each further ingredient is tentatively
  added (uniform average of the selected ones), the soup is recalibrated and evaluated, and the
  ingredient is kept iff the soup's validation accuracy is ``>=`` the best so far (official
  ``GreedySoup.create_ensemble`` uses ``>=``).
* **BatchNorm recalibration.** After merging, running statistics are reset and the model is run
  in train mode (no gradients) over the first ``int(fraction * n_batches)`` batches of the
  *unshuffled* training data, ``fraction = 0.2`` (official ``recalibrate_bn``). We use at least one
  batch when ``fraction > 0`` (the official code would leave freshly reset statistics when the
  product rounds to 0 batches). Official layers keep their own momentum (exponential averaging,
  ``cumulative=False`` here); ``cumulative=True`` (the `sparse_sms.SMSConfig` default)
  uses an exact average, which a handful of batches from reset statistics needs. All
  ``_BatchNorm`` layers with running stats are recalibrated (the official code resets only
  ``BatchNorm2d``, its only BN type).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from sparsecore.distributed import average_state_dicts

__all__ = [
    "GreedyResult",
    "batches_of",
    "check_same_masks",
    "greedy_soup",
    "merge",
    "recalibrate_bn",
    "uniform_weights",
]

StateDict = Mapping[str, torch.Tensor]


def uniform_weights(count: int) -> list[float]:
    """``count`` equal soup weights ``1 / count`` (they sum to 1)."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive integer, got {count!r}")
    return [1.0 / count] * count


def _is_mask_key(key: str, value: torch.Tensor) -> bool:
    return key.endswith("_mask") and value.dtype == torch.bool


def check_same_masks(states: Sequence[StateDict]) -> None:
    """Raise ``ValueError`` unless all state dicts hold the same keys and identical masks."""
    if not states:
        raise ValueError("states: need at least one ingredient")
    keys = list(states[0].keys())
    for i, state in enumerate(states[1:], start=1):
        if list(state.keys()) != keys:
            raise ValueError(f"states: ingredient {i} has different keys from ingredient 0")
        for key in keys:
            a, b = states[0][key], state[key]
            if a.shape != b.shape or a.dtype != b.dtype:
                raise ValueError(f"states: {key!r} differs in shape or dtype in ingredient {i}")
            if _is_mask_key(key, a) and not torch.equal(a, b):
                raise ValueError(
                    f"states: mask {key!r} of ingredient {i} differs from ingredient 0; sparse "
                    "soups need ingredients that share one mask"
                )


@torch.no_grad()
def merge(states: Sequence[StateDict], weights: Sequence[float] | None = None) -> dict:
    """Weighted average of state dicts that share one mask (the soup).

    Args:
        states: Ingredient state dicts (from models set up with the same masks, or plain models).
        weights: Soup weights, non-negative and summing to 1; ``None``: uniform.

    Returns:
        A new state dict: floating-point entries averaged (float64 accumulation), masks and
        integer buffers copied from the first ingredient, masked weights multiplied by their mask.

    Raises:
        ValueError: No ingredient, mismatched keys/shapes, masks that differ, or bad weights.
    """
    check_same_masks(states)
    if weights is None:
        weights = uniform_weights(len(states))
    weights = [float(w) for w in weights]
    if len(weights) != len(states):
        raise ValueError(f"weights: need {len(states)} weights, got {len(weights)}")
    if min(weights) < 0 or abs(sum(weights) - 1.0) > 1e-6:
        raise ValueError(f"weights must be non-negative and sum to 1, got {weights}")
    return average_state_dicts(states, weights)


def _bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module,
    batches: Sequence[torch.Tensor | tuple[torch.Tensor, ...]],
    fraction: float = 0.2,
    cumulative: bool = False,
) -> int:
    """Reset BatchNorm running statistics and re-estimate them on training batches.

    Args:
        model: The (merged) model; parameters are not changed.
        batches: The training data in a fixed (unshuffled) order: input tensors or
            ``(inputs, targets, ...)`` tuples.
        fraction: Fraction of ``batches`` used (the first ``max(1, int(fraction * len))``);
            0 leaves the model untouched.
        cumulative: Use an exact average over the batches (``momentum=None``) instead of each
            layer's exponential moving average.

    Returns:
        The number of batches run (0 if the model has no BatchNorm or ``fraction`` is 0).
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    layers = _bn_layers(model)
    if not layers or fraction == 0.0:
        return 0
    batches = list(batches)
    if not batches:
        raise ValueError("batches: recalibration needs at least one batch")
    count = max(1, int(fraction * len(batches)))
    momenta = [layer.momentum for layer in layers]
    was_training = model.training
    for layer in layers:
        layer.reset_running_stats()
        if cumulative:
            layer.momentum = None
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    model.train()
    try:
        for batch in batches[:count]:
            x = batch[0] if isinstance(batch, tuple | list) else batch
            model(x.to(device))
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
        model.train(was_training)
    return count


@dataclass
class GreedyResult:
    """What `greedy_soup` returns.

    Attributes:
        state: The merged state dict of the selected ingredients.
        selected: Indices of the selected ingredients, in the order they were added.
        score: Validation score of the final soup (as evaluated during the selection).
        order: All indices sorted by their individual score, best first.
    """

    state: dict
    selected: list[int]
    score: float
    order: list[int]


def greedy_soup(
    states: Sequence[StateDict],
    scores: Sequence[float],
    evaluate: Callable[[dict], float],
) -> GreedyResult:
    """Greedy soup (Wortsman et al. 2022, as in the official ``GreedySoup``).

    Args:
        states: Ingredient state dicts sharing one mask.
        scores: Each ingredient's validation score (higher is better), measured after its own
            BN recalibration, as the official ``collect_candidate_information`` does.
        evaluate: ``evaluate(state) -> validation score`` of a candidate soup (load the state,
            recalibrate BN, evaluate).

    Returns:
        A `GreedyResult`; its score is never below the best single ingredient's.
    """
    check_same_masks(states)
    if len(scores) != len(states):
        raise ValueError(f"scores: need {len(states)} scores, got {len(scores)}")
    order = sorted(range(len(states)), key=lambda i: scores[i], reverse=True)
    selected = [order[0]]
    best = float(scores[order[0]])
    for index in order[1:]:
        candidate = [states[i] for i in [*selected, index]]
        score = float(evaluate(merge(candidate)))
        if score >= best:
            selected.append(index)
            best = score
    return GreedyResult(merge([states[i] for i in selected]), selected, best, order)


def batches_of(x: torch.Tensor, batch_size: int) -> Iterable[torch.Tensor]:
    """Split ``x`` into consecutive batches (the unshuffled order recalibration uses)."""
    return [x[i : i + batch_size] for i in range(0, len(x), batch_size)]

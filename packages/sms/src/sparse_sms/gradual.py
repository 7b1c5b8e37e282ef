"""Sparse Model Soups inside pruning *during* training: soups at the pruning steps of a gradual
schedule.

The paper (Section "SMS for pruning during training", arXiv 2306.16788) extends SMS to methods
that prune gradually while training (GMP, DPF, BIMP): between two pruning steps the mask is fixed,
so ``m`` copies can train from the same point and be averaged before the next pruning step
without losing sparsity. This module implements that for gradual magnitude pruning:

1. a dense segment ``[0, e_1)`` trains one model (copies from one random initialisation share no
   basin, so nothing is averaged before the first pruning step);
2. at pruning epoch ``e_k`` the current soup is pruned by global magnitude to
   ``s_k = s (1 - (1 - k/K)^power)`` (the Zhu & Gupta cubic schedule evaluated at the ``K``
   pruning steps, `sparsecore.schedules.Polynomial`; ``s_K = s``); masks only shrink;
3. ``m`` ingredients train the segment ``[e_k, e_{k+1})`` (the last one up to ``total_epochs``)
   on that mask, then are merged (uniform or greedy) and BN-recalibrated.

The learning rate follows the *whole run's* schedule (one linear decay from ``max_lr`` to 0
over ``total_epochs``, the official pretraining default ``(Linear, 0.1)``), not a restarted
retraining schedule: ingredients get ``schedule="global"`` with their segment's position.
With ``n_ingredients=1`` this is plain gradual magnitude pruning at the same steps, the baseline.
Which step the paper averages at is **[recall]** from the paper's description ("average before
each pruning step"); DPF/BIMP variants are left out.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable, Sequence

from torch import nn

from sparse_sms.config import SMSConfig
from sparse_sms.ingredient import EvalFn, Ingredient, TrainFn
from sparse_sms.runner import PhaseResult, SMSResult, _Phases, ingredients_for
from sparsecore.schedules import Polynomial
from sparsecore.validation import check_int
from sparsecore.window import PruningWindow, WindowNames

__all__ = ["gradual_prune_epochs", "gradual_sparsities", "run_gradual"]


def gradual_prune_epochs(
    total_epochs: int, begin_epoch: int, end_epoch: int, every: int = 1
) -> list[int]:
    """Pruning epochs for `run_gradual` from a window, the last one exactly ``end_epoch``.

    The core's ``"begin"`` grid (`sparsecore.window.PruningWindow`): ``begin_epoch``
    (when ``>= 1``), then every ``every`` epochs, and always ``end_epoch`` itself, where the
    schedule reaches the target sparsity. At least one epoch of training must follow it.

    Args:
        total_epochs: Length of the whole run.
        begin_epoch: Start of the pruning window (``0``: the first prune is at ``every``).
        end_epoch: Last pruning epoch, ``< total_epochs``.
        every: Epochs between pruning steps.

    Raises:
        TypeError: A non-integer argument (``bool`` included).
        ValueError: An empty window or ``end_epoch >= total_epochs``, naming the argument.
    """
    check_int(total_epochs, "total_epochs", 2)
    names = WindowNames(begin="begin_epoch", end="end_epoch", every="every", total="total_epochs")
    window = PruningWindow(begin_epoch, end_epoch, every, names=names)
    if end_epoch >= total_epochs:
        raise ValueError(
            f"end_epoch ({end_epoch}) must be < total_epochs ({total_epochs}): the soup of the "
            f"last pruning step needs at least one epoch of training"
        )
    return list(window.updates())


def gradual_sparsities(sparsity: float, count: int, power: float = 3.0) -> list[float]:
    """Sparsity at each of ``count`` pruning steps: ``s (1 - (1 - k/count)^power)``, k=1..count."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive integer, got {count!r}")
    if sparsity == 0:
        return [0.0] * count
    schedule = Polynomial(0.0, sparsity, 0, count, 1, power)
    return [schedule(k) for k in range(1, count + 1)]


def run_gradual(
    model: nn.Module | Callable[[], nn.Module],
    train_fn: TrainFn,
    eval_fn: EvalFn,
    config: SMSConfig,
    *,
    total_epochs: int,
    prune_epochs: Sequence[int],
    bn_batches: Sequence | None = None,
    power: float = 3.0,
) -> SMSResult:
    """Gradual magnitude pruning with a sparse soup at every pruning step.

    Args:
        model: The model at the start of training (copied) or a callable returning it.
        train_fn: As for `sparse_sms.run`; ingredients carry ``schedule="global"`` and
            ``global_epochs=(first_epoch, total_epochs)``.
        eval_fn: Validation score of a model.
        config: ``sparsity`` (final), ``n_ingredients``, ``vary`` (``"seed"`` or
            ``"weight_decay"``), ``values``, ``soup``, ``max_lr`` (required), BN options.
        total_epochs: Length of the whole run.
        prune_epochs: Strictly increasing epochs in ``(0, total_epochs)`` at which to prune
            (`gradual_prune_epochs` builds them from a window); the last one reaches
            ``config.sparsity`` exactly.
        bn_batches: Training batches in a fixed order for BN recalibration.
        power: Exponent of the gradual schedule (3: cubic).

    Returns:
        An `SMSResult`; ``phases[0]`` is the dense segment (phase 0).
    """
    if not isinstance(config, SMSConfig):
        raise TypeError(f"config must be an SMSConfig, got {type(config).__name__}")
    if config.max_lr is None:
        raise ValueError("max_lr: run_gradual needs SMSConfig.max_lr (the run's peak LR)")
    if config.vary not in ("seed", "weight_decay"):
        raise ValueError(
            f"vary: run_gradual supports 'seed' and 'weight_decay', got {config.vary!r}"
        )
    check_int(total_epochs, "total_epochs", 2)
    epochs = [int(e) for e in prune_epochs]
    if not epochs or any(b <= a for a, b in itertools.pairwise(epochs)):
        raise ValueError(f"prune_epochs must be non-empty and strictly increasing, got {epochs}")
    if epochs[0] <= 0 or epochs[-1] >= total_epochs:
        raise ValueError(f"prune_epochs must lie in (0, total_epochs={total_epochs}), got {epochs}")
    config = dataclasses.replace(config, retrain_schedule="llr")
    start = time.perf_counter()
    state = _Phases(model, train_fn, eval_fn, config, bn_batches)
    targets = gradual_sparsities(config.sparsity, len(epochs), power)
    bounds = [0, *epochs, total_epochs]
    phases: list[PhaseResult] = []
    state.prune(lambda pruner: None)  # all-ones masks for the dense segment
    dense = Ingredient(
        phase=0, index=0, seed=config.seed, epochs=bounds[1], weight_decay=config.weight_decay,
        momentum=config.momentum, max_lr=config.max_lr, schedule="global",
        global_epochs=(0, total_epochs),
    )  # fmt: skip
    result, _ = state.retrain_and_merge([dense], 0.0, keep_ingredients=False)
    phases.append(result)
    ingredients: list[nn.Module] = []
    for k, target in enumerate(targets, start=1):
        drop = state.prune(lambda pruner, s=target: pruner.prune_to(s))
        first, length = bounds[k], bounds[k + 1] - bounds[k]
        recipes = [
            dataclasses.replace(
                r,
                epochs=length,
                schedule="global",
                global_epochs=(first, total_epochs),
                start_lr=None,
            )
            for r in ingredients_for(config, k, config.max_lr, state.sparsity(), drop)
        ]
        last = k == len(targets)
        result, models = state.retrain_and_merge(recipes, drop, keep_ingredients=last)
        phases.append(result)
        ingredients = models if last else ingredients
    assert state.masks is not None
    return SMSResult(state.soup, state.masks, phases, ingredients, time.perf_counter() - start)

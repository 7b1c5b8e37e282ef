"""The whole iterative-pruning procedure on a `sparsecore.bench` task, with or without AP.

`run_cycles` drives any method with pruning rounds (sparsecore's `IMP`, sparse-lth's
`LotteryTicket`, or `ActivateWhilePruning` around either) through ``cycles + 1`` training runs
of `sparsecore.bench.train`: the dense run, then per cycle ``prune_round``, the base's rewind
(``rewind=True``) or none (prune-and-fine-tune, the iterative GMP of Han et al. 2015), and a
retraining run. After every run it records the test accuracy, the sparsity and the dynamic
dead neuron rate (`sparsecore.evaluation.dead_neuron_rate`) on the test inputs.

Choices: every run gets the same epochs and a fresh optimizer with the LR schedule restarted
(`sparsecore.bench.train` builds both); with late rewinding (``rewind_step = k``) the retraining
runs start from ``θ_k`` and train the full ``epochs`` (not ``T - k`` steps).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from sparsecore.evaluation import dead_neuron_rate
from sparsecore.method import PruningMethod
from sparsecore.validation import check_bool, check_int

__all__ = ["CycleResult", "run_cycles"]


@dataclass(frozen=True)
class CycleResult:
    """What one training run of the procedure ended with.

    Attributes:
        cycle: ``0`` for the dense run, then ``1..cycles``.
        sparsity: Masked fraction over the method's targets.
        accuracy: Test accuracy after the run.
        dnr: Dynamic dead neuron rate on the test inputs after the run.
        removed_ap: Weights the AP step removed before this run (0 without AP).
        wall_s: Seconds of this run (training and evaluation).
    """

    cycle: int
    sparsity: float
    accuracy: float
    dnr: float
    removed_ap: int
    wall_s: float

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able fields."""
        return asdict(self)


def run_cycles(
    model: nn.Module,
    task: Any,
    method: PruningMethod,
    cycles: int,
    epochs: int,
    rewind: bool = True,
    seed: int = 0,
    progress: bool = False,
    **train_options: Any,
) -> list[CycleResult]:
    """Train, then ``cycles`` times prune (and rewind) and retrain.

    Args:
        model: The model (trained in place).
        task: A `sparsecore.bench.Task`.
        method: A method with ``prune_round`` (and ``rewind`` when ``rewind``), not yet set up.
        cycles: Pruning cycles after the dense run.
        epochs: Epochs of every training run.
        rewind: Call ``method.rewind()`` after each pruning (``False``: fine-tune the pruned
            weights, iterative GMP).
        seed: Training seed of every run (batch order).
        progress: Show tqdm progress bars.
        **train_options: Passed to `sparsecore.bench.train` (``lr``, ``batch_size``, ...).

    Returns:
        ``cycles + 1`` results, the dense run first.

    Raises:
        ValueError: ``cycles`` or ``epochs`` out of range, or a method without rounds.
        TypeError: A non-bool ``rewind``.
    """
    from sparsecore.bench import train

    check_int(cycles, "cycles", 0)
    check_int(epochs, "epochs", 1)
    check_bool(rewind, "rewind")
    if not callable(getattr(method, "prune_round", None)):
        raise ValueError(f"method: {type(method).__name__} has no prune_round")
    if rewind and not callable(getattr(method, "rewind", None)):
        raise ValueError(f"method: {type(method).__name__} has no rewind (pass rewind=False)")
    if method._masks is not None:
        raise ValueError("method: pass a method that is not set up yet")
    results: list[CycleResult] = []
    removed_ap = 0
    for cycle in range(cycles + 1):
        start = time.perf_counter()
        if cycle > 0:
            before = len(getattr(method, "history", []))
            method.prune_round()
            history = getattr(method, "history", [])
            removed_ap = int(history[-1]["removed_ap"]) if len(history) > before else 0
            if rewind:
                method.rewind()  # type: ignore[attr-defined]
        result = train(
            model, task, method, epochs=epochs, seed=seed, progress=progress, **train_options
        )
        dnr = dead_neuron_rate(model, task.x_test).rate
        results.append(
            CycleResult(
                cycle=cycle,
                sparsity=method.masks.sparsity(),
                accuracy=result.accuracy,
                dnr=dnr,
                removed_ap=removed_ap,
                wall_s=time.perf_counter() - start,
            )
        )
    return results

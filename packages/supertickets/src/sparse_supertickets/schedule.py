"""The official SuperTickets schedules as pure functions of the optimizer step.

From GATECH-EIC/SuperTickets: `train.py` (the `unstructured_prune_params` block) and
`utils/prune.py` (`get_rho_scheduler`). The official loop counts epochs; these functions count
optimizer steps, so ``interval`` / ``warmup`` are the official epoch values times the steps
per epoch.

* Progressive pruning: at every step ``s`` that is a multiple of ``interval``, the global
  magnitude prune ratio is ``min((s // interval) · increment, target)`` (official:
  ``(epoch + 1) // prune_interval / 10`` capped at ``target_ratio``, every 25 epochs).
* ρ ramp (official ``scheduler: linear``, ``stepwise: True``): ``0`` before ``free`` steps,
  linear up to ``rho`` at ``warmup`` steps, ``rho`` after.
"""

from __future__ import annotations

__all__ = ["prune_events", "prune_ratio", "rho_at"]


def prune_ratio(step: int, interval: int, target: float, increment: float = 0.1) -> float | None:
    """The prune ratio of the event at ``step``, or ``None`` if ``step`` is not an event.

    Args:
        step: Optimizer steps taken so far (an event happens after step ``k · interval``).
        interval: Steps between pruning events (official 25 epochs).
        target: Final ratio (official ``target_ratio``, 0.9).
        increment: Ratio added per event (official 0.1).

    Returns:
        ``min(k · increment, target)`` for ``step = k · interval`` (``k >= 1``), else ``None``.
    """
    if step <= 0 or step % interval:
        return None
    return min(round((step // interval) * increment, 12), target)


def prune_events(
    total_steps: int, interval: int, target: float, increment: float = 0.1
) -> list[tuple[int, float]]:
    """Every ``(step, ratio)`` pruning event of a run of ``total_steps`` steps."""
    return [
        (s, prune_ratio(s, interval, target, increment) or 0.0)
        for s in range(interval, total_steps + 1, interval)
    ]


def rho_at(step: int, rho: float, free: int = 0, warmup: int = 0) -> float:
    """The L1 weight ρ at ``step``: ``0`` until ``free``, linear to ``rho`` at ``warmup``.

    Args:
        step: Optimizer steps taken so far.
        rho: Final weight (official 1.8e-4).
        free: Steps without penalty (official ``epoch_free`` 0).
        warmup: Step at which ``rho`` is reached (official ``epoch_warmup`` 25 epochs).
    """
    if step < free:
        return 0.0
    if step >= warmup:
        return rho
    return (step - free) / (warmup - free) * rho

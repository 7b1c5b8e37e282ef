"""Retraining learning-rate schedules of the official code (``runners/baseRunner.py``,
``define_retrain_schedule``), as pure functions of the step.

All schedules are per optimizer step over ``T`` retraining steps. ``W = int(warmup_fraction * T)``
warm-up steps (none for FT and LRW) rise from 0 to the start value ``a`` along a half cosine
(official: ``CosineAnnealingLR`` from lr 0 with ``eta_min=a``):
``lr_t = a (1 - cos(pi t / W)) / 2`` for ``t < W``. After the warm-up, with ``u = t - W`` and
``R = T - W``:

* ``llr`` (default; Zimmer et al. 2023, "How I learned to stop worrying and love retraining"):
  ``a = max_lr`` (the largest LR of the pretraining schedule), then linear decay
  ``a (1 - u / R)`` (``LinearLR`` from 1 to 0).
* ``allr``: LLR with an adaptive start ``a = clip(d / sqrt(q) * max_lr, min(E_r / E, 1) *
  max_lr, max_lr)``, where ``d`` is the relative L2 norm drop caused by pruning, ``q`` the
  pruned fraction, ``E_r`` / ``E`` the retraining / pretraining epochs.
* ``ft``: constant at the smallest LR of the pretraining schedule (Han et al. 2015).
* ``lrw``: the last ``T`` LRs of the pretraining schedule (Renda et al. 2020).
* ``slr``: the whole pretraining schedule compressed to ``R`` steps, after the warm-up
  (Le & Hua 2021).
* ``clr``: cosine from ``max_lr`` to the smallest pretraining LR over ``R`` steps (Le & Hua 2021).

When ingredients differ in their initial LR (``vary="lr"``) the official code forces LLR with
``a`` set to the ingredient's value; `retrain_lrs` does the same through ``start_lr``.
The pretraining's own warm-up (excluded from ``min`` in the official code) is not modelled: pass
an ``lr_history`` without it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["allr_start", "retrain_lrs", "warmup_steps"]


def warmup_steps(kind: str, total: int, warmup_fraction: float = 0.1) -> int:
    """Number of warm-up steps: ``int(warmup_fraction * total)``, 0 for ``ft`` and ``lrw``."""
    return 0 if kind in ("ft", "lrw") else int(warmup_fraction * total)


def allr_start(
    max_lr: float,
    relative_norm_drop: float,
    prune_fraction: float,
    retrain_epochs: int,
    pretrain_epochs: int,
) -> float:
    """ALLR's adaptive start value (official ``define_retrain_schedule``, ``'ALLR'`` branch)."""
    floor = min(retrain_epochs / pretrain_epochs, 1.0) * max_lr
    if prune_fraction <= 0:
        return max_lr
    scaled = relative_norm_drop / math.sqrt(prune_fraction) * max_lr
    return min(max(scaled, floor), max_lr)


def _history(lr_history: Sequence[float] | None, kind: str) -> list[float]:
    if not lr_history:
        raise ValueError(f"lr_history: retrain_schedule={kind!r} needs the pretraining LRs")
    return [float(v) for v in lr_history]


def retrain_lrs(
    kind: str,
    total: int,
    *,
    max_lr: float,
    lr_history: Sequence[float] | None = None,
    warmup_fraction: float = 0.1,
    start_lr: float | None = None,
) -> list[float]:
    """The learning rate of every retraining step.

    Args:
        kind: ``"llr"``, ``"allr"``, ``"ft"``, ``"lrw"``, ``"slr"`` or ``"clr"`` (for ``allr``
            pass the adaptive value from `allr_start` as ``start_lr``).
        total: Number of retraining steps ``T`` (>= 1).
        max_lr: Largest LR of the pretraining schedule.
        lr_history: The pretraining LR of every step (needed by ``ft``, ``lrw``, ``slr``;
            ``clr`` decays to its minimum, or to 0 without it).
        warmup_fraction: Fraction of steps in the cosine warm-up.
        start_lr: Overrides the value reached after the warm-up (forces the LLR shape).

    Returns:
        ``total`` learning rates; entry ``t`` is used by optimizer step ``t`` (0-based).
    """
    if isinstance(total, bool) or not isinstance(total, int) or total < 1:
        raise ValueError(f"total must be a positive integer, got {total!r}")
    if not max_lr > 0:
        raise ValueError(f"max_lr must be > 0, got {max_lr}")
    if start_lr is not None:
        kind = "llr"
    w = warmup_steps(kind, total, warmup_fraction)
    rest = total - w
    if kind in ("llr", "allr"):
        start = max_lr if start_lr is None else float(start_lr)
        after = [start * (1.0 - u / rest) for u in range(rest)]
    elif kind == "ft":
        start = min(_history(lr_history, kind))
        after = [start] * rest
    elif kind == "lrw":
        hist = _history(lr_history, kind)
        if len(hist) < total:
            raise ValueError(f"lr_history: lrw needs >= {total} recorded LRs, got {len(hist)}")
        after = hist[-total:]
        start = after[0]
    elif kind == "slr":
        hist = _history(lr_history, kind)
        width = len(hist) / rest
        after = [hist[int(j * width)] for j in range(rest)]
        start = max_lr
    elif kind == "clr":
        low = min(lr_history) if lr_history else 0.0
        start = max_lr
        after = [low + (start - low) * (1 + math.cos(math.pi * u / rest)) / 2 for u in range(rest)]
    else:
        raise ValueError(f"retrain_schedule must be llr/allr/ft/lrw/slr/clr, got {kind!r}")
    warm = [start * (1.0 - math.cos(math.pi * t / w)) / 2.0 for t in range(w)]
    return warm + after

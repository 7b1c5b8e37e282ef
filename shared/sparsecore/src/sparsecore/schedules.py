"""Schedules: pure functions of the optimizer step.

Every schedule is a frozen dataclass. ``schedule(step)`` returns a value (a sparsity, a drop
fraction...), and `Schedule.is_update_step` says whether a mask update is due after the
given step. ``step`` counts completed optimizer steps (the first step is ``1``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sparsecore.validation import check_int, check_number
from sparsecore.window import on_begin_grid

__all__ = [
    "Constant",
    "Cosine",
    "IterativeRounds",
    "Linear",
    "OneShot",
    "Periodic",
    "Polynomial",
    "Schedule",
]


def _check_nonneg_int(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")


def _check_unit(value: float, name: str, *, closed: bool = True) -> None:
    upper_ok = value <= 1.0 if closed else value < 1.0
    if not (isinstance(value, int | float) and value >= 0.0 and upper_ok):
        bound = "[0, 1]" if closed else "[0, 1)"
        raise ValueError(f"{name} must lie in {bound}, got {value!r}")


class Schedule:
    """Base class: a value as a function of the step, and the steps at which to update."""

    def __call__(self, step: int) -> float:
        """The scheduled value after ``step`` completed steps."""
        raise NotImplementedError

    def is_update_step(self, step: int) -> bool:
        """Whether a mask update is due after ``step`` completed steps."""
        return False


@dataclass(frozen=True)
class Constant(Schedule):
    """The same value at every step; never asks for an update."""

    value: float

    def __call__(self, step: int) -> float:  # noqa: D102
        return float(self.value)


@dataclass(frozen=True)
class OneShot(Schedule):
    """``0`` before ``at_step``, ``value`` from it on; one update, at ``at_step``."""

    value: float
    at_step: int = 0

    def __post_init__(self) -> None:
        _check_nonneg_int(self.at_step, "at_step")

    def __call__(self, step: int) -> float:  # noqa: D102
        return float(self.value) if step >= self.at_step else 0.0

    def is_update_step(self, step: int) -> bool:  # noqa: D102
        return step == self.at_step


@dataclass(frozen=True)
class Periodic(Schedule):
    """Updates every ``every`` steps in ``[begin, end]`` (``end=None``: forever). Value: 1."""

    every: int
    begin: int = 0
    end: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f"every must be a positive integer, got {self.every!r}")
        _check_nonneg_int(self.begin, "begin")
        if self.end is not None and self.end < self.begin:
            raise ValueError(f"end ({self.end}) must be >= begin ({self.begin})")

    def __call__(self, step: int) -> float:  # noqa: D102
        return 1.0

    def is_update_step(self, step: int) -> bool:  # noqa: D102
        if step < max(self.begin, 1) or (self.end is not None and step > self.end):
            return False
        return (step - self.begin) % self.every == 0


@dataclass(frozen=True)
class Polynomial(Schedule):
    """Zhu & Gupta (2017) gradual pruning: ``s_t = s_f + (s_i - s_f) (1 - p)^power``, with
    ``p = (t - begin) / (end - begin)`` clipped to ``[0, 1]``; updates every ``every`` steps from
    ``begin`` **and at** ``end`` (the ``"begin"`` grid of `sparsecore.window`), so the last
    update lands on ``end`` and reaches ``final`` exactly even when ``end - begin`` is not a
    multiple of ``every``. ``power=3`` is the cubic schedule of "To prune, or not to prune"
    (arXiv 1710.01878); ``power=1`` is linear.
    """

    initial: float
    final: float
    begin: int
    end: int
    every: int = 1
    power: float = 3.0

    def __post_init__(self) -> None:
        _check_unit(self.initial, "initial")
        _check_unit(self.final, "final")
        _check_nonneg_int(self.begin, "begin")
        check_int(self.end, "end")
        if self.end <= self.begin:
            raise ValueError(f"end ({self.end}) must be > begin ({self.begin})")
        check_int(self.every, "every", 1)
        check_number(self.power, "power", 0.0, open_low=True, finite=True)

    def __call__(self, step: int) -> float:  # noqa: D102
        progress = min(max((step - self.begin) / (self.end - self.begin), 0.0), 1.0)
        return self.final + (self.initial - self.final) * (1.0 - progress) ** self.power

    def is_update_step(self, step: int) -> bool:  # noqa: D102
        return on_begin_grid(step, self.begin, self.end, self.every)


def Linear(initial: float, final: float, begin: int, end: int, every: int = 1) -> Polynomial:
    """The linear ramp: `Polynomial` with ``power=1``."""
    return Polynomial(initial, final, begin, end, every, power=1.0)


@dataclass(frozen=True)
class Cosine(Schedule):
    """Cosine decay from ``initial`` to ``final`` over ``[0, total]`` (RigL's drop fraction:
    ``f_t = final + (initial - final)/2 * (1 + cos(pi t / total))``), constant ``final`` after.
    """

    initial: float
    total: int
    final: float = 0.0

    def __post_init__(self) -> None:
        check_int(self.total, "total", 1)

    def __call__(self, step: int) -> float:  # noqa: D102
        t = min(max(step, 0), self.total)
        return self.final + 0.5 * (self.initial - self.final) * (
            1 + math.cos(math.pi * t / self.total)
        )


@dataclass(frozen=True)
class IterativeRounds(Schedule):
    """Iterative magnitude pruning: each round removes ``fraction`` of the remaining weights.

    ``schedule(r)`` is the sparsity after round ``r``: ``1 - (1 - fraction)^r``. The argument is
    the round index, not the optimizer step.
    """

    fraction: float = 0.2
    rounds: int = 5

    def __post_init__(self) -> None:
        check_number(self.fraction, "fraction", 0.0, 1.0, open_low=True, open_high=True)
        check_int(self.rounds, "rounds", 1)

    def __call__(self, step: int) -> float:  # noqa: D102
        return 1.0 - (1.0 - self.fraction) ** min(max(step, 0), self.rounds)

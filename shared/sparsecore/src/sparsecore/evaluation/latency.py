"""Latency probe: warm-up, repeats, median; ratios measured interleaved in the same run.

Timing on a shared machine is noisy. Two rules keep comparisons honest: compare against a
reference measured *in the same run*, and interleave the two so that drifts in machine load hit
both alike (`compare_latency` alternates ``candidate, reference, reference, candidate``).
Medians, not means, summarise the repeats.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["LatencyRatio", "LatencyResult", "compare_latency", "measure_latency"]


@dataclass(frozen=True)
class LatencyResult:
    """Timings of one function.

    Attributes:
        median_s: Median seconds per call.
        all_s: Every measured call, in order.
    """

    median_s: float
    all_s: tuple[float, ...]

    @property
    def min_s(self) -> float:
        """Fastest call."""
        return min(self.all_s)


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _check(warmup: int, repeats: int) -> None:
    if warmup < 0 or repeats < 1:
        raise ValueError(f"need warmup >= 0 and repeats >= 1, got {warmup}, {repeats}")


def _time(fn: Callable[[], object]) -> float:
    _sync()
    start = time.perf_counter()
    fn()
    _sync()
    return time.perf_counter() - start


def measure_latency(fn: Callable[[], object], warmup: int = 3, repeats: int = 10) -> LatencyResult:
    """Time ``fn()``: ``warmup`` untimed calls, then ``repeats`` timed ones.

    CUDA work is synchronised around each timed call when CUDA is in use.

    Args:
        fn: A callable with no arguments (wrap the model call in a lambda).
        warmup: Untimed calls first.
        repeats: Timed calls.

    Returns:
        A `LatencyResult`.
    """
    _check(warmup, repeats)
    for _ in range(warmup):
        fn()
    times = tuple(_time(fn) for _ in range(repeats))
    return LatencyResult(statistics.median(times), times)


class LatencyRatio(float):
    """``candidate median / reference median`` as a float, with both measurements attached.

    Below 1 the candidate is faster. ``speedup`` is the inverse.

    Attributes:
        candidate: The candidate's `LatencyResult`.
        reference: The reference's `LatencyResult`.
    """

    candidate: LatencyResult
    reference: LatencyResult

    def __new__(cls, candidate: LatencyResult, reference: LatencyResult) -> LatencyRatio:
        """Build the ratio from the two measurements."""
        value = candidate.median_s / reference.median_s if reference.median_s > 0 else float("inf")
        obj = super().__new__(cls, value)
        obj.candidate = candidate
        obj.reference = reference
        return obj

    @property
    def speedup(self) -> float:
        """``reference / candidate``: how many times faster the candidate is."""
        return 1.0 / float(self) if float(self) > 0 else float("inf")


def compare_latency(
    candidate_fn: Callable[[], object],
    reference_fn: Callable[[], object],
    warmup: int = 3,
    repeats: int = 10,
) -> LatencyRatio:
    """Latency of ``candidate_fn`` relative to ``reference_fn``, measured interleaved.

    Both get ``warmup`` untimed calls; then each round times both, alternating which goes first
    (ABBA order), ``repeats`` rounds.

    Args:
        candidate_fn: The function under test (e.g. the sparse model's forward).
        reference_fn: The baseline (e.g. the dense model's forward).
        warmup: Untimed calls of each.
        repeats: Timed calls of each.

    Returns:
        A `LatencyRatio` (a float: candidate median / reference median).
    """
    _check(warmup, repeats)
    for _ in range(warmup):
        candidate_fn()
        reference_fn()
    cand: list[float] = []
    ref: list[float] = []
    for i in range(repeats):
        if i % 2 == 0:
            cand.append(_time(candidate_fn))
            ref.append(_time(reference_fn))
        else:
            ref.append(_time(reference_fn))
            cand.append(_time(candidate_fn))
    return LatencyRatio(
        LatencyResult(statistics.median(cand), tuple(cand)),
        LatencyResult(statistics.median(ref), tuple(ref)),
    )

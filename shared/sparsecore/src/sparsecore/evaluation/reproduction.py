"""What every package's reproduction does around its own experiment.

Each `sparse_<name>.reproduce` module runs its paper's protocol over seeds, writes a results
file with `write_results` and checks it against the Sparseland rules. The parts that do not
depend on the paper live here, once:

- `run_seeds` runs one seed's experiment for every seed, in worker processes when asked
  (`--jobs`), each worker limited to `threads` torch threads, and prints progress;
- `command_line` records the command that made a results file;
- `report_sparseland` checks the written results (R6 asks for 3 seeds in a full run, one is
  enough for a `--quick` smoke run) and prints the verdict;
- `default_seeds` / `configured_seeds`: the seeds a run uses (``--seeds``, else the quick or
  full default);
- `result_row`: one table row over seeds from per-seed result dicts (the metric and the finite
  ``sparsity`` / ``flops_ratio`` / ``wall_s`` entries);
- `finish_reproduction`: write the results, check them, print where they went and the verdict.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, TypeVar

import torch

from sparsecore.evaluation.protocol import Row, over_seeds, write_results
from sparsecore.evaluation.sparseland import check_sparseland

__all__ = [
    "ROW_EXTRAS",
    "command_line",
    "configured_seeds",
    "default_seeds",
    "finish_reproduction",
    "report_sparseland",
    "result_row",
    "run_seeds",
]

#: The per-seed result entries `result_row` passes to `over_seeds` when they are finite.
ROW_EXTRAS = ("sparsity", "flops_ratio", "wall_s")

T = TypeVar("T")


def _seed_in_worker(run: Callable[[int], T], seed: int, threads: int) -> T:
    """One seed inside a worker process, with the worker's torch threads set first."""
    torch.set_num_threads(threads)
    return run(seed)


def run_seeds(
    run: Callable[[int], T],
    seeds: Sequence[int],
    *,
    jobs: int = 1,
    threads: int = 1,
    log: Callable[[str], None] | None = print,
) -> dict[int, T]:
    """Run `run(seed)` for every seed; in `jobs` worker processes when `jobs > 1`.

    Args:
        run: one seed's experiment. With `jobs > 1` it must be picklable: a module-level
            function or a `functools.partial` of one.
        seeds: the seeds, in the order they are reported.
        jobs: worker processes (1 runs the seeds here, one after the other).
        threads: torch threads per worker process (the calling process keeps its own setting).
        log: where progress lines go (`None`: silent).

    Returns:
        `{seed: run(seed)}`, ordered as `seeds`.

    Raises:
        ValueError: `jobs` or `threads` below 1, or repeated seeds.
    """
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an integer >= 1, got {jobs!r}")
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {list(seeds)}")
    start = time.perf_counter()
    done: dict[int, T] = {}
    if jobs > 1 and len(seeds) > 1:
        with ProcessPoolExecutor(min(jobs, len(seeds))) as pool:
            futures = {pool.submit(_seed_in_worker, run, s, threads): s for s in seeds}
            for future in as_completed(futures):
                done[futures[future]] = future.result()
                if log is not None:
                    log(f"seed {futures[future]} done ({time.perf_counter() - start:.0f} s)")
    else:
        for seed in seeds:
            done[seed] = run(seed)
            if log is not None:
                log(f"seed {seed} done ({time.perf_counter() - start:.0f} s)")
    return {seed: done[seed] for seed in seeds}


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command that ran this reproduction, as results files record it.

    Args:
        argv: the arguments given to `main` (`None`: the process's own, `sys.argv[1:]`).

    Returns:
        `"python <script> <arguments>"`.
    """
    args = list(argv) if argv is not None else sys.argv[1:]
    return "python " + " ".join([sys.argv[0], *args])


def report_sparseland(
    data: dict[str, Any], *, quick: bool, min_seeds: int | None = None
) -> list[str]:
    """Check written results against the Sparseland rules and print the verdict.

    Args:
        data: the results as `write_results` returned them.
        quick: a `--quick` smoke run (one seed is then enough for R6).
        min_seeds: override the seeds R6 asks for (default 1 when `quick`, else 3).

    Returns:
        The problems `check_sparseland` found (declared gaps included); empty when it passes.
    """
    needed = min_seeds if min_seeds is not None else (1 if quick else 3)
    problems = check_sparseland(data, min_seeds=needed)
    print("sparseland: " + ("ok" if not problems else "; ".join(problems)))
    return problems


def default_seeds(seeds: Sequence[int] | None, quick: bool) -> list[int]:
    """The seeds of a run whose ``--seeds`` takes a list: the given ones, else the defaults.

    Args:
        seeds: ``--seeds`` (``None`` or empty: not given).
        quick: a ``--quick`` smoke run.

    Returns:
        ``list(seeds)`` when given, else ``[0]`` for a quick run and ``[0, 1, 2]`` otherwise (the
        three seeds R6 asks for).
    """
    if seeds:
        return list(seeds)
    return [0] if quick else [0, 1, 2]


def configured_seeds(settings: dict[str, Any], seeds: int | None) -> list[int]:
    """The seeds of a run whose settings hold a seed *count* (``settings["seeds"]``).

    Args:
        settings: the run's settings; ``settings["seeds"]`` is replaced by ``seeds`` when given
            (so the results file records the count used).
        seeds: ``--seeds`` as a count (``None``: keep the settings' count).

    Returns:
        ``[0, 1, ..., count - 1]``.
    """
    if seeds is not None:
        settings["seeds"] = seeds
    return list(range(settings["seeds"]))


def result_row(
    variant: str,
    seeds: Sequence[int],
    result: Callable[[int], Mapping[str, Any]],
    metric: str = "accuracy",
) -> Row:
    """One row of the table from per-seed result dicts (`over_seeds` over them).

    Args:
        variant: the row's name.
        seeds: the seeds, in the order they are reported.
        result: ``result(seed)``: that seed's result for the variant, holding ``metric`` and
            possibly the `ROW_EXTRAS` (``sparsity``, ``flops_ratio``, ``wall_s``); those that are
            missing or not finite are left out (the row then shows them as unknown).
        metric: the key (and name) of the metric.

    Returns:
        The `Row` (mean and sample standard deviation of the metric over seeds).
    """

    def run(seed: int) -> tuple[float, dict[str, float]]:
        r = result(seed)
        extras = {k: r[k] for k in ROW_EXTRAS if math.isfinite(r.get(k, math.nan))}
        return r[metric], extras

    return over_seeds(variant, seeds, run, metric=metric)


def finish_reproduction(
    out: str | os.PathLike[str],
    *,
    start: float,
    quick: bool,
    method: str,
    task: str,
    claim: str,
    holds: bool,
    rows: Sequence[Row],
    command: str,
    show_claim: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """The end of every reproduction: write, check against Sparseland, report.

    Writes the results file (`sparsecore.evaluation.write_results`), checks it
    (`report_sparseland`: prints ``sparseland: ...``), then prints ``wrote <out> (<s> s)`` and
    ``claim: holds`` / ``claim: does not hold``.

    Args:
        out: the results file.
        start: ``time.perf_counter()`` when the run began (for the printed duration).
        quick: a ``--quick`` smoke run (one seed is then enough for R6).
        method: the method the results are about.
        task: the task.
        claim: the paper's headline claim, in words.
        holds: whether it holds on this run.
        rows: the table.
        command: the command that made the file (`command_line`).
        show_claim: also print the claim after the verdict (``claim: holds (<claim>)``).
        **extra: more top-level fields of the results file, in order (``settings``,
            ``verdicts``, ``per_seed``, ``sparseland``, ...).

    Returns:
        The results as written.
    """
    data = write_results(
        out, method=method, task=task, claim=claim, holds=holds, rows=rows, command=command, **extra
    )
    report_sparseland(data, quick=quick)
    print(f"wrote {out} ({time.perf_counter() - start:.0f} s)")
    verdict = "holds" if holds else "does not hold"
    print(f"claim: {verdict} ({claim})" if show_claim else f"claim: {verdict}")
    return data

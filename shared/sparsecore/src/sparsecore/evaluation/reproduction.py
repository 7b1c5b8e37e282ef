"""What every package's reproduction does around its own experiment.

Each `sparse_<name>.reproduce` module runs its paper's protocol over seeds, writes a results
file with `write_results` and checks it against the Sparseland rules. The parts that do not
depend on the paper live here, once:

- `run_seeds` runs one seed's experiment for every seed, in worker processes when asked
  (`--jobs`), each worker limited to `threads` torch threads, and prints progress;
- `command_line` records the command that made a results file;
- `report_sparseland` checks the written results (R6 asks for 3 seeds in a full run, one is
  enough for a `--quick` smoke run) and prints the verdict.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, TypeVar

import torch

from sparsecore.evaluation.sparseland import check_sparseland

__all__ = ["command_line", "report_sparseland", "run_seeds"]

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

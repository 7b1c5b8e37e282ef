"""Where one-shot pruning of a tiny LM spends its time: CPU seconds per phase, not only wall.

Prunes a randomly initialised Llama with the config of ``pretrained_tiny_lm(SIZE)`` (the cost of
calibration and of the SparseGPT solve does not depend on the weights' values, so no pretraining
is needed) to 50% with Wanda and SparseGPT on 32 random blocks of ``seq_len`` tokens, and reports
for each method, as medians over interleaved repeats:

* ``total``: setup + sequential calibration + pruning + finalize;
* ``solve``: inside the per-Linear pruning (`Wanda`'s scores and mask, `SparseGPT`'s Cholesky
  inverse and column sweep);
* ``calibration``: the rest (capturing layer-0 inputs, the two forwards per decoder layer, the
  statistics hooks).

CPU seconds come from ``time.process_time`` (all threads of this process), so they are much less
sensitive to other jobs on a shared machine than the wall seconds printed next to them.

Run: ``python shared/sparsecore/benchmarks/oneshot_profile.py [--size tiny] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time


def run_once(model, method_name: str, blocks) -> dict[str, float]:
    """Prune a copy of ``model`` once; CPU and wall seconds in total and inside the solve."""
    from sparsecore.bench.lm_bench import build_oneshot, prune_lm

    net = copy.deepcopy(model)
    method = build_oneshot(method_name, net, 0.5)
    solve = {"cpu": 0.0, "wall": 0.0}
    original = method._prune

    def timed(module, name, stats):
        c, w = time.process_time(), time.perf_counter()
        original(module, name, stats)
        solve["cpu"] += time.process_time() - c
        solve["wall"] += time.perf_counter() - w

    method._prune = timed
    c, w = time.process_time(), time.perf_counter()
    prune_lm(net, method, blocks)
    cpu, wall = time.process_time() - c, time.perf_counter() - w
    return {
        "total_cpu_s": cpu,
        "total_wall_s": wall,
        "solve_cpu_s": solve["cpu"],
        "calibration_cpu_s": cpu - solve["cpu"],
    }


def main(argv: list[str] | None = None) -> int:
    """Print a table and one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    import torch

    from sparsecore.bench import tiny_llama
    from sparsecore.bench.pretrained import LM_SIZES

    torch.set_num_threads(args.threads)
    size = LM_SIZES[args.size]
    seq = size["seq_len"]
    model = tiny_llama(seed=0, vocab_size=256, max_position_embeddings=seq, **size["config"])
    blocks = torch.randint(0, 256, (32, seq), generator=torch.Generator().manual_seed(1))
    runs: dict[str, list[dict[str, float]]] = {"wanda": [], "sparsegpt": []}
    for _ in range(args.repeats):
        for name in runs:
            runs[name].append(run_once(model, name, blocks))
    load = os.getloadavg()[0]
    cores = os.cpu_count()
    print(f"size {args.size} {size['config']}, 32 blocks x {seq} tokens, {args.threads} "
          f"threads, median of {args.repeats}; load {load:.1f} on {cores} cores")  # fmt: skip
    print(
        f"{'method':<10} {'total CPU s':>12} {'wall s':>8} {'calib CPU s':>12} {'solve CPU s':>12}"
    )
    report = {"size": args.size, "load": load, "threads": args.threads}
    for name, rows in runs.items():
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        report[name] = med
        print(f"{name:<10} {med['total_cpu_s']:12.2f} {med['total_wall_s']:8.2f} "
              f"{med['calibration_cpu_s']:12.2f} {med['solve_cpu_s']:12.2f}")  # fmt: skip
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The lottery-ticket comparison of "Rethinking the Value of Network Pruning" (section 6).

Liu et al., ICLR 2019, arXiv 1810.05270: with the standard (large) learning rate, a winning
ticket's initialisation (IMP, rewound to θ₀) trains no better than a random re-initialisation of
the same mask; the winning ticket helps only at a small learning rate, whose accuracy is lower.

Setting: sklearn digits, `SmallVGG` widths 16-16-32-32, SGD momentum 0.9, wd 1e-4, batch 64,
``--epochs`` per run with ×0.1 at 50% / 75%, global IMP through sparse-lth's public
`LotteryExperiment` (20% of the remaining weights per level, ``--levels`` levels, rewind to
step 0 = the original lottery ticket), its ``random_reinit`` branch at the last level (the same
mask, a fresh initialisation), at two learning rates (``--lrs``, default 0.1 and 0.01).

Claim tested (printed last): at the large learning rate (the first of ``--lrs``) the winning
ticket's mean test accuracy is at most 1 point above the random re-initialisation's.
Also reported: the same difference at the small learning rate.

Usage::

    python benchmarks/lottery.py --jobs 3            # 3 seeds
    python benchmarks/lottery.py --quick             # 1 seed, tiny (same code path)
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

from sparse_lth import LotteryExperiment, TrainSpec
from sparse_rethinking import SmallVGG
from sparsecore.bench import load_task
from sparsecore.evaluation import Row, command_line, format_table, over_seeds, write_results

HERE = Path(__file__).resolve().parent


def _model(seed: int, widths: tuple[int, ...]) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SmallVGG(1, 10, widths)


def _one(seed: int, lr: float, args: dict[str, Any]) -> dict[str, float]:
    torch.set_num_threads(1)
    task = load_task("digits")
    steps_per_epoch = -(-task.num_train // 64)
    steps = args["epochs"] * steps_per_epoch
    spec = TrainSpec(
        steps=steps,
        batch_size=64,
        lr=lr,
        weight_decay=1e-4,
        schedule="step",
        milestones=(int(0.5 * steps), int(0.75 * steps)),
        gamma=0.1,
    )
    levels = args["levels"]
    with tempfile.TemporaryDirectory() as root:
        experiment = LotteryExperiment(
            root,
            functools.partial(_model, widths=args["widths"]),
            task,
            spec,
            levels=levels,
            seed=seed,
            branches=("random_reinit",),
            branch_levels=(levels,),
        )
        done = experiment.run()
    return {
        "ticket": done[f"level_{levels}/main"]["accuracy"],
        "random": done[f"level_{levels}/random_reinit"]["accuracy"],
        "dense": done["level_0/main"]["accuracy"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--levels", type=int, default=None)
    parser.add_argument("--seeds", type=int, nargs="*", default=None)
    parser.add_argument("--lrs", type=float, nargs=2, default=(0.1, 0.01))
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", default=str(HERE / "results-lottery.json"))
    args = parser.parse_args(argv)
    settings = {
        "epochs": args.epochs or (2 if args.quick else 10),
        "levels": args.levels or (1 if args.quick else 3),
        "widths": (8, 8, 16, 16) if args.quick else (16, 16, 32, 32),
    }
    seeds = args.seeds if args.seeds else ([0] if args.quick else [0, 1, 2])
    start = time.perf_counter()
    jobs = [(seed, lr) for lr in args.lrs for seed in seeds]
    with ProcessPoolExecutor(max(1, args.jobs)) as pool:
        futures = {job: pool.submit(_one, job[0], job[1], settings) for job in jobs}
        results = {job: future.result() for job, future in futures.items()}
    sparsity = 1.0 - 0.8 ** settings["levels"]
    rows: list[Row] = []
    for lr in args.lrs:
        for key, label in (
            ("dense", "dense"),
            ("ticket", "winning-ticket"),
            ("random", "random-init"),
        ):
            variant = f"{label} lr={lr}"
            rows.append(
                over_seeds(
                    variant,
                    seeds,
                    lambda s, k=key, r=lr: results[(s, r)][k],
                    sparsity=0.0 if key == "dense" else sparsity,
                )
            )
    print(format_table(rows))
    table = {r.variant: r.mean for r in rows}
    large, small = args.lrs
    gap_large = table[f"winning-ticket lr={large}"] - table[f"random-init lr={large}"]
    gap_small = table[f"winning-ticket lr={small}"] - table[f"random-init lr={small}"]
    holds = gap_large <= 0.01
    print(
        f"winning ticket - random init: lr={large}: {gap_large:+.4f}, lr={small}: {gap_small:+.4f}"
    )
    command = command_line(argv)
    write_results(
        args.out,
        method="rethinking-lottery",
        task="digits",
        claim=f"at lr={large} the winning ticket is at most 1 point above random init",
        holds=holds,
        rows=rows,
        command=command,
        settings={**settings, "seeds": seeds, "lrs": list(args.lrs), "sparsity": sparsity},
        gaps={str(large): gap_large, str(small): gap_small},
    )
    print(f"wrote {args.out} ({time.perf_counter() - start:.0f} s)")
    print(f"claim: {'holds' if holds else 'does not hold'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

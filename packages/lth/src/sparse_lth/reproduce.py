"""Reproduce the lottery-ticket claims at CPU scale (reproduction contract, ARCHITECTURE.md §7).

Default setting (issue 19: where rewinding matters): MNIST-1D (4000 train / 1000 test), the
MNIST-1D ConvBase (3 Conv1d + Linear, every weight pruned), SGD at a high peak LR 0.3 without
warm-up, momentum 0.9, wd 5e-4, cosine LR, batch 128, ``--epochs`` 10 per run (T = 320 steps;
every level and every branch gets the same budget). Global IMP removes ``--fraction`` 50% of the
remaining weights per level (OpenLTH's default is 20%; 50% reaches 94% in 4 levels at a fifth
of the cost), 4 levels. Two lottery experiments per seed, with the rewind point ``k = 0``
(original LTH) and ``k = --rewind-frac · T`` = 5% (16 steps, rewinding: Frankle et al. 2019),
each with the two OpenLTH control branches at the ``--branch-levels`` (the same mask
re-initialised at random; a random mask with the same per-layer counts; both trained from step
``k`` with the schedule at ``k``). Instability (error barrier along the linear path between two
copies trained from ``θ_k`` with different data order) for the dense net (level 0) and the
sparsest ticket.

Claim tested (primary, printed last): the papers' headline: at some level the k = 0 ticket does
not match the dense net (> 1 point of mean test accuracy below it) while the k > 0 ticket does
(within 1 point) and is >= 1 point above k = 0. Also reported: the earlier claim (the rewound
ticket beats both controls by >= 1 point at every branch level >= 90% sparsity), the paper's
stronger form (the k = 0 ticket no better than its random re-initialisation), k > 0 vs k = 0 at
the sparsest level, and whether the sparsest ticket's barrier shrinks with k.

The earlier runs (MLP, ConvBase at lr 0.1, 20% per level, 14 levels, 20 epochs, k = 3%) are
``benchmarks/results-mlp.json`` / ``results-convbase.json`` (commands in the README).

Usage::

    python benchmarks/reproduce.py             # full: ConvBase lr 0.3, 4 levels, 3 seeds
    python benchmarks/reproduce.py --quick     # same code path, tiny settings
    python benchmarks/reproduce.py --root DIR  # keep the experiments in DIR (resumable; seeds
                                               # can run in parallel with --seeds N, same DIR)
    python benchmarks/reproduce.py --arch mlp --lr 0.1 --fraction 0.2 --levels 14 --epochs 20 \
        --branch-levels 7 11 14 --rewind-frac 0.03 --out benchmarks/results-mlp.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from sparse_lth import LotteryExperiment, LotteryTicket, TrainSpec
from sparsecore.bench import load_task, make_model
from sparsecore.evaluation import Row, count_flops, format_table, over_seeds, write_results
from sparsecore.evaluation.sparseland import (
    check_sparseland,
    disclose_sparsity,
    inference_cost,
    sparseland_fields,
    training_cost,
)

HERE = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings (< 60 s)")
    parser.add_argument("--arch", default="convbase", choices=("mlp", "convbase", "resnet"))
    parser.add_argument("--model-options", default="{}", help="JSON options of make_model")
    parser.add_argument("--lr", type=float, default=0.3, help="peak SGD LR (no warm-up)")
    parser.add_argument("--fraction", type=float, default=0.5, help="pruned per level")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--levels", type=int, default=None)
    parser.add_argument("--branch-levels", type=int, nargs="*", default=None)
    parser.add_argument("--seeds", type=int, nargs="*", default=None)
    parser.add_argument("--rewind-frac", type=float, default=0.05)
    parser.add_argument("--root", default=None, help="experiment directory (default: temporary)")
    from sparsecore.evaluation.paths import default_results_path  # quick: tmp

    parser.add_argument("--out", default=default_results_path(__file__, argv))
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def settings(args: argparse.Namespace) -> dict[str, Any]:
    if args.quick:
        base = {"epochs": 2, "levels": 2, "branch_levels": [2], "seeds": [0, 1, 2], "points": 5}
    else:
        base = {"epochs": 10, "levels": 4, "branch_levels": [3, 4], "seeds": [0, 1, 2]}
        base["points"] = 15
    for key in ("epochs", "levels", "branch_levels", "seeds"):
        if getattr(args, key) is not None:
            base[key] = getattr(args, key)
    return base


def sparseland_entry(root, args, cfg, spec, k, top, by_name, levels, probe, x1) -> dict:
    """The `sparseland` entry, disclosed on seed 0's rewound ticket at the sparsest level.

    Baselines (R5): the dense net, random pruning with the ticket's per-layer counts (OpenLTH's
    ``random_prune`` branch, layer-wise), and IMP without rewinding (``k = 0``, the magnitude
    baseline of the paper). Training (R3): the pretraining to ``k`` plus ``levels + 1`` runs of
    ``T - k`` steps, all with dense compute (masked weights) so ``relative_to_dense`` counts
    steps. Inference (R4): MACs on non-zeros, theoretical (no sparse kernel measured).
    """
    seed = cfg["seeds"][0]
    exp = root / f"{args.arch}-k{k}-seed{seed}"
    masks = load_file(str(exp / f"level_{top}" / "mask.safetensors"))
    probe.load_state_dict(load_file(str(exp / f"level_{top}" / "main" / "final.safetensors")))
    flops = count_flops(probe, x1)
    dense_params = sum(p.numel() for n, p in probe.named_parameters())
    nnz = sum(int(m.sum()) for m in masks.values())
    numel = sum(m.numel() for m in masks.values())
    steps = k + (levels + 1) * (spec.steps - k)
    return sparseland_fields(
        sparsity=disclose_sparsity(masks, None),
        training=training_cost(
            float(spec.steps), float(steps), epochs=cfg["epochs"] * steps / spec.steps
        ),
        inference=inference_cost(
            flops.dense, flops.effective, dense_params - numel + nnz, dense_params
        ),
        allocation="global",
        baselines=["dense (k=0)", f"random prune k={k}, L{top}", f"ticket k=0, L{top}"],
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = settings(args)
    task = load_task("mnist1d")
    if args.quick:  # a quarter of the data keeps the quick path under a minute
        task = task.subset(num_train=640, num_test=500)
    per_epoch = math.ceil(len(task.y_train) / 128)
    spec = TrainSpec(steps=cfg["epochs"] * per_epoch, batch_size=128, lr=args.lr, schedule="cosine")
    options = json.loads(args.model_options)
    k = max(1, round(args.rewind_frac * spec.steps))
    levels, branch_levels = cfg["levels"], cfg["branch_levels"]
    top = max(branch_levels)

    def model_fn(seed: int) -> torch.nn.Module:
        return make_model(args.arch, task, seed=seed, **options)

    root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="lth-"))
    print(f"experiments in {root}; T = {spec.steps} steps, k = {k}, {len(cfg['seeds'])} seeds")
    start = time.perf_counter()
    results: dict[tuple[int, int], dict[str, Any]] = {}
    for seed in cfg["seeds"]:
        for rewind in (0, k):
            exp = LotteryExperiment(
                root / f"{args.arch}-k{rewind}-seed{seed}",
                model_fn,
                task,
                spec,
                levels=levels,
                fraction=args.fraction,
                rewind_step=rewind,
                seed=seed,
                branches=("random_reinit", "random_prune"),
                branch_levels=branch_levels,
                instability_levels=(0, top),
                points=cfg["points"],
                checkpoint_every=spec.steps // 4,
                progress=True,
            )
            results[(seed, rewind)] = exp.run()
            print(f"seed {seed}, k={rewind}: done ({time.perf_counter() - start:.0f} s)")

    probe = model_fn(0)
    LotteryTicket().setup(probe)
    x1 = task.x_test[:1]

    def flops_ratio(seed: int, rewind: int, run: str) -> float:
        path = root / f"{args.arch}-k{rewind}-seed{seed}" / run / "final.safetensors"
        probe.load_state_dict(load_file(str(path)))
        return count_flops(probe, x1).ratio

    def row(variant: str, rewind: int, run: str) -> Row:
        def one(seed: int) -> tuple[float, dict[str, float]]:
            m = results[(seed, rewind)][run]
            extras = {"sparsity": m["sparsity"], "wall_s": m["wall_s"]}
            extras["flops_ratio"] = flops_ratio(seed, rewind, run)
            return m["accuracy"], extras

        return over_seeds(variant, cfg["seeds"], one)

    rows = [row("dense (k=0)", 0, "level_0/main")]
    for level in range(1, levels + 1):
        rows.append(row(f"ticket k=0, L{level}", 0, f"level_{level}/main"))
        rows.append(row(f"ticket k={k}, L{level}", k, f"level_{level}/main"))
        if level in branch_levels:
            for rewind in (0, k):
                rows.append(
                    row(
                        f"random reinit k={rewind}, L{level}",
                        rewind,
                        f"level_{level}/random_reinit",
                    )
                )
                rows.append(
                    row(f"random prune k={rewind}, L{level}", rewind, f"level_{level}/random_prune")
                )
    barriers = {}
    for rewind in (0, k):
        for level in (0, top):
            run = f"level_{level}/instability"
            values = [results[(s, rewind)][run]["barrier"] for s in cfg["seeds"]]
            sparsity = results[(cfg["seeds"][0], rewind)][f"level_{level}/main"]["sparsity"]
            barriers[(rewind, level)] = Row(
                f"instability barrier k={rewind}, L{level}", sparsity, math.nan, "error_barrier",
                sum(values) / len(values),
                float(torch.tensor(values).std()) if len(values) > 1 else 0.0, values, 0.0,
            )  # fmt: skip
    wall = time.perf_counter() - start
    by_name = {r.variant: r for r in rows}
    print(format_table(rows))
    print()
    print(format_table(list(barriers.values())))

    checks = []
    high = [lv for lv in branch_levels if by_name[f"ticket k={k}, L{lv}"].sparsity >= 0.9 - 1e-9]
    checked = high or [top]  # --quick has no level >= 90%: its sparsest level stands in
    for level in checked:
        ticket = by_name[f"ticket k={k}, L{level}"]
        for control in ("random reinit", "random prune"):
            other = by_name[f"{control} k={k}, L{level}"]
            checks.append(ticket.mean >= other.mean + 0.01)
    controls_hold = bool(checks) and all(checks)
    levels_text = ", ".join(f"{by_name[f'ticket k={k}, L{lv}'].sparsity:.1%}" for lv in checked)
    if not high:
        levels_text += ": no level reaches 90% here, the sparsest stands in"
    top_k, top_0 = by_name[f"ticket k={k}, L{top}"], by_name[f"ticket k=0, L{top}"]
    rewinding_ok = top_k.mean >= top_0.mean - 0.01
    stabler = barriers[(k, top)].mean < barriers[(0, top)].mean
    controls_claim = (
        f"the rewound ticket (k={k} of T={spec.steps} steps) beats both random re-initialisation "
        "and random pruning at the same sparsity by >= 1 point of mean test accuracy at every "
        f"branch level with sparsity >= 90% ({levels_text})"
    )
    dense = by_name["dense (k=0)"].mean
    matches = {  # level -> (k=0 ticket matches dense, k>0 ticket matches dense), within 1 point
        lv: (
            by_name[f"ticket k=0, L{lv}"].mean >= dense - 0.01,
            by_name[f"ticket k={k}, L{lv}"].mean >= dense - 0.01,
        )
        for lv in range(1, levels + 1)
    }
    rescued_levels = [
        lv
        for lv, (m0, mk) in matches.items()
        if not m0
        and mk
        and by_name[f"ticket k={k}, L{lv}"].mean >= by_name[f"ticket k=0, L{lv}"].mean + 0.01
    ]
    no_better = [
        lv
        for lv in branch_levels
        if by_name[f"ticket k=0, L{lv}"].mean < by_name[f"random reinit k=0, L{lv}"].mean + 0.01
    ]
    holds = bool(rescued_levels)
    claim = (
        f"rewinding rescues IMP (Frankle et al.): at some level the k=0 ticket falls > 1 point "
        f"of mean test accuracy below the dense net while the k={k} ticket (of T={spec.steps} "
        f"steps) is within 1 point of it and >= 1 point above k=0 (MNIST-1D {args.arch}, lr "
        f"{args.lr} without warm-up, {len(cfg['seeds'])} seeds; rescued levels: "
        f"{rescued_levels or 'none'})"
    )
    extra_claims = {
        controls_claim: controls_hold,
        f"rewinding k={k} at least as good as k=0 at L{top} (within 1 point)": rewinding_ok,
        f"instability barrier at L{top} smaller with k={k} than with k=0": stabler,
        # the paper's headline (Frankle et al. 2019/2020): at a sparsity where the k=0 ticket
        # does not match the dense net (> 1 point below), the k > 0 ticket does (within 1
        # point) and is >= 1 point above k=0; levels where that happens:
        # the paper's stronger form (VGG-19 / ResNet-20): the k=0 ticket is no better than
        # its random re-initialisation (< 1 point above it) at some branch level
        f"k=0 ticket no better than random reinit (levels {no_better})": bool(no_better),
    }
    fields = sparseland_entry(root, args, cfg, spec, k, top, by_name, levels, probe, x1)
    command = "python benchmarks/reproduce.py " + " ".join(sys.argv[1:] if argv is None else argv)
    write_results(
        args.out,
        "lth",
        f"mnist1d-{args.arch}",
        claim,
        holds,
        rows + list(barriers.values()),
        command.strip(),
        settings={
            **cfg,
            "steps": spec.steps,
            "rewind_step": k,
            "fraction": args.fraction,
            "lr": args.lr,
            "arch": args.arch,
            "model_options": options,
        },
        extra_claims=extra_claims,
        matches_dense={f"L{lv}": {"k=0": m0, f"k={k}": mk} for lv, (m0, mk) in matches.items()},
        instability={
            f"k={rw}, L{lv}": {
                str(s): results[(s, rw)][f"level_{lv}/instability"]["errors"] for s in cfg["seeds"]
            }
            for rw, lv in barriers
        },
        total_wall_s=wall,
        sparseland=fields,
    )
    problems = check_sparseland(json.loads(Path(args.out).read_text()), len(cfg["seeds"]))
    print("sparseland: " + ("ok" if not problems else "; ".join(problems)))
    print(f"\ntotal wall time {wall:.0f} s; results in {args.out}")
    for text, ok in extra_claims.items():
        print(f"also: {'holds' if ok else 'does not hold'}: {text}")
    print(f"claim: {'holds' if holds else 'does not hold'}: {claim}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

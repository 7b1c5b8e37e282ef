"""Reproduce the consensus sub-network claim at CPU scale (reproduction contract).

Zhi et al., "Learning a Consensus Sub-Network with Polarization Regularization and One Pass
Training", arXiv 2302.10798 (no official code).

Setting: sklearn digits (8×8, 1438 train / 359 test), the core's BatchNorm ResNet (3 stages of 2
basic blocks, width ``--width``), SGD lr 0.05, momentum 0.9, wd 1e-4, cosine, batch 64, ``E =
--epochs``. Variants (per seed, same initial weights):

* ``dense``: the plain ResNet, E epochs;
* ``consensus``: gates on the 4 identity-shortcut blocks and on the inner channels of all 6
  blocks, one pass of E epochs with task + FLOPs target (50%) + ``ḡ(1−ḡ)`` polarization, then
  the static sub-network (training-set average < 0.5 removed, gates dropped, physically shrunk);
  ``consensus/dynamic`` is the gated model itself (input-dependent gates) on the test set;
* ``consensus/no-polarization``: the same gates and target without the polarizer (ablation);
* ``l1+finetune``: Li et al.'s L1-norm filter pruning of each block's first conv on the trained
  dense model, at the consensus model's FLOPs (bisection), fine-tuned ``E // 2`` epochs (lr 0.01);
  ``random-channels+finetune``: the same per-layer counts at random (Sparseland R5);
* ``scratch-E`` / ``scratch-B``: the consensus architecture re-initialised and trained for E
  epochs / for the dense run's computation (`sparsecore.evaluation.scratch_budgets`, uncapped).

``--task mnist1d``: the same protocol on MNIST-1D (4000 train / 1000 test sequences of length 40,
regenerated offline) with the 1-D version of the same ResNet (Conv1d), a task that does not
saturate; it writes its results with ``--out benchmarks/results-mnist1d.json``.

Claim tested (printed last): at about 50% FLOPs the one-pass consensus sub-network loses less
than 1 pp of the dense accuracy, and less than L1-norm pruning + fine-tuning at equal FLOPs.

Usage::

    python benchmarks/reproduce.py --jobs 3   # full: E = 12, 3 seeds (in parallel)
    python benchmarks/reproduce.py --quick    # same code path, tiny settings (< 60 s, 1 seed)
    python benchmarks/reproduce.py --jobs 3 --task mnist1d --out benchmarks/results-mnist1d.json
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from typing import Any

import torch

from sparse_consensus.experiment import ExperimentConfig, run_seed
from sparsecore.bench import load_task
from sparsecore.evaluation import (
    Row,
    command_line,
    default_seeds,
    finish_reproduction,
    format_table,
    inference_cost,
    over_seeds,
    run_seeds,
    sparseland_fields,
    training_cost,
)

VARIANTS = (
    "dense",
    "consensus",
    "consensus/dynamic",
    "consensus/no-polarization",
    "l1+finetune",
    "random-channels+finetune",
    "scratch-E",
    "scratch-B",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings (< 60 s, 1 seed)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seeds", type=int, nargs="*", default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--task", default="digits", choices=("digits", "mnist1d"))
    parser.add_argument("--sparsity", type=float, default=0.5, help="FLOPs fraction removed")
    parser.add_argument("--polarization-weight", type=float, default=1.0)
    from sparsecore.evaluation.paths import default_results_path  # quick: tmp

    parser.add_argument("--out", default=str(default_results_path(__file__, argv)))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1, help="seeds run in parallel processes")
    return parser.parse_args(argv)


def _row(results: dict[int, Any], seeds: list[int], variant: str) -> Row:
    source, key = (
        ("consensus", "dynamic_accuracy")
        if variant == "consensus/dynamic"
        else (variant, "accuracy")
    )

    def run(seed: int) -> tuple[float, dict[str, float]]:
        r = results[seed][source]
        extras = {"wall_s": r["wall_s"]}
        if variant != "consensus/dynamic":
            extras["flops_ratio"] = r["flops_ratio"]
        return r[key], extras

    row = over_seeds(variant, seeds, run)
    rs = [results[s][source] for s in seeds]

    def mean(k: str) -> float:
        return sum(r[k] for r in rs) / len(rs)

    notes = [f"epochs {'/'.join(str(e) for e in sorted({r['epochs'] for r in rs}))}"]
    notes.append(f"train cost {mean('train_cost'):.2f}x dense")
    if "consensus_rate" in rs[0] and variant != "consensus/dynamic":
        notes.append(f"consensus {mean('consensus_rate'):.3f}")
        notes.append(f"gap {100 * mean('gap'):+.2f} pp")
        notes.append(f"latency {mean('latency_ratio'):.2f}x dense")
    if variant == "consensus/dynamic":
        notes.append(f"gated latency {mean('gated_latency_ratio'):.2f}x dense")
    row.note = "; ".join(notes)
    return row


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = ExperimentConfig(
        epochs=args.epochs or (3 if args.quick else 12),
        width=args.width or (8 if args.quick else 16),
        sparsity=args.sparsity,
        polarization_weight=args.polarization_weight,
    )
    quick = {"batch_size": 32, "latency_repeats": 5, "bisection_steps": 6} if args.quick else {}
    cfg = ExperimentConfig(**{**cfg.__dict__, "finetune_epochs": max(1, cfg.epochs // 2), **quick})
    seeds = default_seeds(args.seeds, args.quick)
    task = load_task(args.task)
    if args.quick:
        task = task.subset(num_train=384, num_test=500)
    start = time.perf_counter()
    results = run_seeds(partial(run_seed, task, cfg), seeds, jobs=args.jobs, threads=args.threads)

    rows = [_row(results, seeds, v) for v in VARIANTS]
    table = {r.variant: r for r in rows}
    print(format_table(rows))
    dense = table["dense"].mean
    drop = {v: dense - table[v].mean for v in table}
    flops = table["consensus"].flops_ratio
    verdicts = {
        "consensus_drop_pp": 100 * drop["consensus"],
        "l1_drop_pp": 100 * drop["l1+finetune"],
        "consensus_flops_ratio": flops,
        "drop_below_1pp": drop["consensus"] < 0.01,
        "at_about_half_flops": flops <= args.sparsity + 0.05,
        "lower_drop_than_l1_finetune": drop["consensus"] < drop["l1+finetune"],
        "polarization_raises_consensus": _mean(results, seeds, "consensus", "consensus_rate")
        > _mean(results, seeds, "consensus/no-polarization", "consensus_rate"),
        "consensus_ge_scratch_b": table["consensus"].mean >= table["scratch-B"].mean,
    }
    holds = (
        verdicts["drop_below_1pp"]
        and verdicts["at_about_half_flops"]
        and verdicts["lower_drop_than_l1_finetune"]
    )
    for k, v in verdicts.items():
        print(f"{k}: {v if not isinstance(v, float) else round(v, 3)}")

    first = results[seeds[0]]["consensus"]
    dense_macs = results[seeds[0]]["dense"]["macs"]
    per_layer = {f"{b} (block)": 1.0 for b in first["removed_blocks"]}
    widths = {f"stages.{i}.conv1": cfg.width * 2 ** (i // 2) for i in range(6)}
    for layer, width in widths.items():
        block = layer.rpartition(".")[0]
        if block not in first["removed_blocks"]:
            per_layer[f"{layer} (channels)"] = first["removed_channels"].get(layer, 0) / width
    fields = sparseland_fields(
        sparsity={
            "target": args.sparsity,
            "achieved": 1.0 - first["flops_ratio"],
            "param_set": {
                "included": sorted(per_layer),
                "excluded": ["stem", "shortcut convs", "residual-stream channels", "fc"],
                "unit": "FLOPs (MACs) of the model; blocks and inner channels are gated",
                "numel": int(dense_macs),
            },
            "per_layer": per_layer,
        },
        training=training_cost(
            dense_train_flops=results[seeds[0]]["dense"]["train_flops"],
            train_flops=first["train_flops"],
            epochs=cfg.epochs,
        ),
        inference=inference_cost(
            dense_macs,
            first["flops_ratio"] * dense_macs,
            first["params"],
            _dense_params(cfg, task),
            kernel="structure removal: nn.Identity blocks + Torch-Pruning channel removal",
        ),
        allocation="learned",
        baselines=["dense", "random-channels+finetune", "l1+finetune"],
    )
    command = command_line(argv)
    claim = (
        "at ~50% FLOPs the one-pass consensus sub-network loses < 1 pp of dense accuracy, "
        "and less than L1-norm pruning + fine-tuning at equal FLOPs"
    )
    finish_reproduction(
        args.out,
        start=start,
        quick=args.quick,
        show_claim=True,
        method="consensus",
        task=args.task,
        claim=claim,
        holds=holds,
        rows=rows,
        command=command,
        settings={**cfg.__dict__, "seeds": seeds, "quick": args.quick},
        verdicts=verdicts,
        per_seed={
            str(s): {
                v: {k: x for k, x in r.items() if k != "removed_channels"} for v, r in res.items()
            }
            for s, res in results.items()
        },
        sparseland=fields,
    )
    return 0


def _mean(results: dict[int, Any], seeds: list[int], variant: str, key: str) -> float:
    return sum(results[s][variant][key] for s in seeds) / len(seeds)


def _dense_params(cfg: ExperimentConfig, task: Any) -> int:
    from sparsecore.bench.models import ResNet

    model = ResNet(task.input_shape, task.num_classes, cfg.width, cfg.blocks)
    return sum(p.numel() for p in model.parameters())


if __name__ == "__main__":
    raise SystemExit(main())

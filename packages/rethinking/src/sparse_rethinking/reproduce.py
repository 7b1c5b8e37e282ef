"""Reproduce "Rethinking the Value of Network Pruning" at CPU scale (reproduction contract).

Liu et al., ICLR 2019, arXiv 1810.05270 (official code Eric-mingjie/rethinking-network-pruning).

Setting: sklearn digits (8×8, 1438 train / 359 test), `SmallVGG` (four 3×3 conv-BN-ReLU layers,
widths ``--widths``), SGD lr 0.1, momentum 0.9, wd 1e-4, batch 64, ×0.1 at 50% / 75%, ``E =
--epochs`` for the large model and Scratch-E; Scratch-B by the official CIFAR rule
``int(E · FLOPs_large / FLOPs_pruned)`` (``--mode imagenet``: capped at 2E, steps of epochs/3).
Methods: L1-norm filter pruning (predefined: every conv keeps ``1 - --channel-sparsity`` of its
filters), network slimming (L1 penalty ``s = 1e-4`` on γ during the large run, one global γ
threshold: automatic architecture), weight-level magnitude pruning (one global threshold over conv
weights, ``--weight-sparsity``). Each: fine-tuned (inherited weights, ``E // 2`` epochs at lr
0.01), Scratch-E, Scratch-B, and the Sparseland R5 baseline random-fine-tuned (random channels or
weights with the same per-layer counts, fine-tuned the same way).

Claim tested (printed last): for **structured** pruning (L1 and slimming), training the pruned
architecture from scratch with the same computation (Scratch-B) gives a mean test accuracy at
least that of fine-tuning the pruned model (the paper's main finding). Also reported (not part of
the verdict): Scratch-E ≥ fine-tuned per method; weight-level Scratch-B ≥ fine-tuned.

The lottery-ticket comparison is ``benchmarks/lottery.py``; ImageNet-scale networks are not
reproduced.

Usage::

    python benchmarks/reproduce.py --jobs 3   # full: E = 10, 3 seeds (in parallel)
    python benchmarks/reproduce.py --quick    # same code path, tiny settings (< 60 s, 1 seed)
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from pathlib import Path

import torch

from sparse_rethinking import ProtocolConfig, run_seed
from sparsecore.bench import load_task
from sparsecore.evaluation import (
    Row,
    command_line,
    default_seeds,
    finish_reproduction,
    format_table,
    inference_cost,
    result_row,
    run_seeds,
    sparseland_fields,
    training_cost,
)

HERE = Path(__file__).resolve().parent
STAGES = ("pruned", "fine-tuned", "random-fine-tuned", "scratch-E", "scratch-B")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings (< 60 s, 1 seed)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seeds", type=int, nargs="*", default=None)
    parser.add_argument("--widths", type=int, nargs=4, default=None)
    parser.add_argument("--mode", default="cifar", choices=("cifar", "imagenet"))
    parser.add_argument("--channel-sparsity", type=float, default=0.5)
    parser.add_argument("--weight-sparsity", type=float, default=0.7)
    parser.add_argument("--finetune-epochs", type=int, default=None, help="default E // 2")
    parser.add_argument("--finetune-lr", type=float, default=0.01)
    from sparsecore.evaluation.paths import default_results_path  # quick: tmp

    parser.add_argument("--out", default=str(default_results_path(__file__, argv)))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1, help="seeds run in parallel processes")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    epochs = args.epochs or (5 if args.quick else 10)
    seeds = default_seeds(args.seeds, args.quick)
    widths = tuple(args.widths or ((8, 8, 16, 16) if args.quick else (16, 16, 32, 32)))
    cfg = ProtocolConfig(
        epochs=epochs,
        channel_sparsity=args.channel_sparsity,
        weight_sparsity=args.weight_sparsity,
        mode=args.mode,
        widths=widths,
        finetune_epochs=args.finetune_epochs,
        finetune_lr=args.finetune_lr,
    )
    task = load_task("digits")
    start = time.perf_counter()
    results = run_seeds(partial(run_seed, task, cfg), seeds, jobs=args.jobs, threads=args.threads)

    def row(variant: str) -> Row:
        out = result_row(variant, seeds, lambda seed: results[seed][variant])
        epochs_used = {results[s][variant].get("epochs") for s in seeds} - {None}
        if epochs_used:
            out.note = "epochs " + "/".join(str(e) for e in sorted(epochs_used))
        return out

    variants = ["dense", "slimming/dense"] + [
        f"{m}/{stage}" for m in ("l1", "slimming", "weight") for stage in STAGES
    ]
    rows = [row(v) for v in variants]
    table = {r.variant: r for r in rows}
    print(format_table(rows))

    verdicts = {}
    for method in ("l1", "slimming", "weight"):
        tuned = table[f"{method}/fine-tuned"].mean
        verdicts[method] = {
            "scratch_b_ge_finetuned": table[f"{method}/scratch-B"].mean >= tuned,
            "scratch_e_ge_finetuned": table[f"{method}/scratch-E"].mean >= tuned,
            "finetuned_ge_random": tuned >= table[f"{method}/random-fine-tuned"].mean,
        }
    holds = (
        verdicts["l1"]["scratch_b_ge_finetuned"] and verdicts["slimming"]["scratch_b_ge_finetuned"]
    )
    for method, v in verdicts.items():
        print(f"{method}: " + ", ".join(f"{k}={'yes' if ok else 'no'}" for k, ok in v.items()))

    # Sparseland fields, anchored on L1 filter pruning (predefined per-layer widths) of seed 0
    first = results[seeds[0]]
    pruned = first["l1/pruned"]
    n_train = task.num_train
    b_epochs = first["l1/scratch-B"]["epochs"]
    kept, sizes = sum(pruned["kept"].values()), sum(pruned["sizes"].values())
    fields = sparseland_fields(
        sparsity={
            "target": cfg.channel_sparsity,
            "achieved": 1.0 - kept / sizes,
            "param_set": {
                "included": sorted(pruned["per_layer"]),
                "excluded": ["classifier (its outputs are the classes)"],
                "unit": "conv channels (with their BatchNorm and next-layer input slices)",
                "numel": sizes,
            },
            "per_layer": pruned["per_layer"],
        },
        # Scratch-B's budget: forward + backward ~ 3x the forward MACs per example
        training=training_cost(
            dense_train_flops=3.0 * pruned["dense_macs"] * n_train * epochs,
            train_flops=3.0 * pruned["macs"] * n_train * b_epochs,
            epochs=b_epochs,
        ),
        inference=inference_cost(
            pruned["dense_macs"], pruned["macs"], pruned["weights"], pruned["dense_weights"]
        ),
        allocation="uniform",
        baselines=["dense", "l1/random-fine-tuned", "l1/fine-tuned"],
    )
    command = command_line(argv)
    claim = (
        "structured pruning (L1 filters, network slimming): Scratch-B mean accuracy >= "
        "fine-tuned mean accuracy"
    )
    finish_reproduction(
        args.out,
        start=start,
        quick=args.quick,
        method="rethinking",
        task="digits",
        claim=claim,
        holds=holds,
        rows=rows,
        command=command,
        settings={**cfg.__dict__, "seeds": seeds, "quick": args.quick},
        verdicts=verdicts,
        sparseland=fields,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Reproduce the YOLOv8 compression recipe at CPU scale (reproduction contract).

Sabaghian et al., arXiv 2509.12918 (fork melika-sce/YOLOv8_pruning); CWD: Shu et al., ICCV 2021.

Setting: synthetic aerial-like 64×64 scenes (`sparse_cwd.scenes`: vehicles, buildings, trees on
textured ground; 256 train / 192 test images, drawn per seed), `TinyDetector` (C2f backbone and
neck, CenterNet head at stride 4, width 8), ultralytics-style SGD. Dense 12 epochs (lr 0.02) →
sparsity training 6 epochs (λ₀ = 2e-2, decaying; β term 10·λ₀; fork's ignore list) → 50% BN
channel pruning (paper's per-layer rule), physical rebuild (`sparsecore.export.remove_channels`)
→ fine-tune 6 epochs (lr 0.01) with and without CWD (τ = 4, α = 1, teacher = dense, on the C2f
outputs ``stage2`` and ``neck``). Also: the fork's global threshold, pruning without sparsity
training (same total epochs), and random channels at the same widths (Sparseland R5).
Metric: mAP@0.5 (torchmetrics MeanAveragePrecision, pycocotools backend).

Claim tested (printed last), thresholds fixed before running: the pruned model fine-tuned with
CWD has at most 60% of the dense parameters and MACs, loses at most 0.05 mAP@0.5 (absolute,
mean over seeds) against the dense model trained for the same epochs, and CWD's mean mAP@0.5 is
higher than fine-tuning without it.

Usage::

    python benchmarks/reproduce.py --jobs 2   # full: 3 seeds
    python benchmarks/reproduce.py --quick    # same code path, tiny settings (1 seed)
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from functools import partial

import torch

from sparse_cwd.experiment import ExperimentConfig, run_seed
from sparsecore.evaluation import (
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

ROWS = (
    "dense/start",
    "dense",
    "sparsity-trained",
    "pruned",
    "fine-tuned",
    "fine-tuned+cwd",
    "global/fine-tuned",
    "no-l1/pruned",
    "no-l1/fine-tuned",
    "random/fine-tuned",
)
QUICK = {
    "train_images": 128,
    "test_images": 64,
    "dense_epochs": 3,
    "sparse_epochs": 1,
    "finetune_epochs": 1,
    "latency_repeats": 3,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings (1 seed)")
    parser.add_argument("--seeds", type=int, nargs="*", default=None)
    parser.add_argument("--dense-epochs", type=int, default=None)
    parser.add_argument("--sparse-epochs", type=int, default=None)
    parser.add_argument("--finetune-epochs", type=int, default=None)
    parser.add_argument("--alpha", type=float, default=None, help="CWD weight α")
    parser.add_argument("--tau", type=float, default=None, help="CWD temperature τ")
    from sparsecore.evaluation.paths import default_results_path  # quick: tmp

    parser.add_argument("--out", default=str(default_results_path(__file__, argv)))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1, help="seeds run in parallel processes")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    changes = dict(QUICK) if args.quick else {}
    for field in ("dense_epochs", "sparse_epochs", "finetune_epochs", "alpha", "tau"):
        if getattr(args, field) is not None:
            changes[field] = getattr(args, field)
    cfg = dataclasses.replace(ExperimentConfig(), **changes)
    seeds = default_seeds(args.seeds, args.quick)
    start = time.perf_counter()
    results = run_seeds(partial(run_seed, cfg), seeds, jobs=args.jobs, threads=args.threads)

    def row(name: str):
        def one(seed: int):
            r = results[seed][name]
            dense = results[seed]["dense"]
            extras = {"flops_ratio": r["macs"] / dense["macs"], "wall_s": r["wall_s"]}
            extras["sparsity"] = 1.0 - r["params"] / dense["params"]
            return r["map50"], extras

        out = over_seeds(name, seeds, one, metric="map50")
        speed = [results[s][name].get("speedup") for s in seeds]
        if all(v is not None for v in speed):
            out.note = f"CPU images/s x{sum(speed) / len(speed):.2f} vs dense"
        return out

    rows = [row(name) for name in ROWS]
    table = {r.variant: r for r in rows}
    print(format_table(rows))
    first = results[seeds[0]]
    params_ratio = sum(
        results[s]["fine-tuned+cwd"]["params"] / results[s]["dense"]["params"] for s in seeds
    ) / len(seeds)
    macs_ratio = table["fine-tuned+cwd"].flops_ratio
    drop = table["dense"].mean - table["fine-tuned+cwd"].mean
    cwd_gain = table["fine-tuned+cwd"].mean - table["fine-tuned"].mean
    verdicts = {
        "params_ratio": params_ratio,
        "macs_ratio": macs_ratio,
        "map50_drop_vs_dense": drop,
        "cwd_gain": cwd_gain,
        "small_model": params_ratio <= 0.6 and macs_ratio <= 0.6,
        "small_loss": drop <= 0.05,
        "cwd_recovers": cwd_gain > 0,
        "l1_helps": table["fine-tuned"].mean > table["no-l1/fine-tuned"].mean,
        "gamma_beats_random": table["fine-tuned"].mean > table["random/fine-tuned"].mean,
    }
    holds = verdicts["small_model"] and verdicts["small_loss"] and verdicts["cwd_recovers"]
    for key, value in verdicts.items():
        print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")

    pruned = first["pruned"]
    kept, sizes = sum(pruned["kept"].values()), sum(pruned["sizes"].values())
    n_train = cfg.train_images
    dense_macs, small_macs = first["dense"]["macs"], pruned["macs"]
    before = cfg.dense_epochs + cfg.sparse_epochs
    fields = sparseland_fields(
        sparsity={
            "target": cfg.ratio,
            "achieved": 1.0 - kept / sizes,
            "param_set": {
                "included": sorted(pruned["kept"]),
                "excluded": [
                    "BatchNorm groups of residual bottlenecks (fork's get_ignore_bn)",
                    "detection head (fork's get_ignore_bn) and its output convolutions",
                ],
                "unit": "conv channels (with their BatchNorm and next-layer input slices)",
                "numel": sizes,
            },
            "per_layer": {k: 1.0 - pruned["kept"][k] / pruned["sizes"][k] for k in pruned["kept"]},
        },
        # forward + backward ~ 3x the forward MACs per image; CWD adds a teacher forward
        training=training_cost(
            dense_train_flops=3.0 * dense_macs * n_train * (before + cfg.finetune_epochs),
            train_flops=3.0 * n_train * (dense_macs * before + small_macs * cfg.finetune_epochs)
            + dense_macs * n_train * cfg.finetune_epochs,
            epochs=before + cfg.finetune_epochs,
        ),
        inference=inference_cost(
            dense_macs,
            small_macs,
            first["fine-tuned+cwd"]["params"],
            first["dense"]["params"],
            kernel="channel removal (dense conv, measured images/s)",
        ),
        allocation="uniform",
        baselines=["dense", "random/fine-tuned", "no-l1/fine-tuned"],
    )
    claim = (
        "50% BN channel pruning after sparsity training: <= 60% of dense params and MACs, "
        "mAP@0.5 within 0.05 of equal-budget dense after fine-tuning with CWD, and CWD > no CWD"
    )
    finish_reproduction(
        args.out,
        start=start,
        quick=args.quick,
        method="cwd",
        task="synthetic aerial scenes (64x64), TinyDetector",
        claim=claim,
        holds=holds,
        rows=rows,
        command=command_line(argv),
        settings={**dataclasses.asdict(cfg), "seeds": seeds, "quick": args.quick},
        verdicts=verdicts,
        per_seed=results,
        sparseland=fields,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

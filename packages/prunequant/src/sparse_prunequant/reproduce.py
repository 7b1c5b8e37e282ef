"""Reproduce "Integrating Pruning with Quantization" (arXiv 2509.04244) at CPU scale.

SPQ (FPGM soft pruning + APoT quantization-aware training at once) and PPQ (FPGM, hard prune,
then APoT fine-tuning) against prune-only (FPGM), quantize-only (APoT) and dense FP32, at
30% / 50% filters x 4 / 3 bits (the paper's range: ResNet-20..110 on CIFAR-10, 30-50% filters,
2-5 bits), on sklearn digits with the core's BatchNorm ResNet (stem + 3 basic blocks, 8x8
inputs), every variant trained for the same number of epochs. Each run is finalized, compacted
(`sparsecore.export.remove_channels`), encoded (`sparse_prunequant.export_compact`) and
measured: test accuracy of the *compact* model, stored bytes, BOPs (`count_bops`, batch 1).

The claim line checks the paper's headline: a combined schedule (SPQ or PPQ) at 30% / 4 bits
is smaller in bytes and in BOPs than both single techniques at the same setting, with mean
accuracy at most 2 points below dense.

    python packages/prunequant/benchmarks/reproduce.py            # full: 3 seeds
    python packages/prunequant/benchmarks/reproduce.py --quick    # < 60 s, 1 seed
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from functools import partial
from typing import Any

import torch
from tqdm import tqdm

from sparse_prunequant import PruneQuant, export_compact
from sparse_prunequant.config import ppq, spq
from sparsecore.bench import load_task, make_model, train
from sparsecore.bench.train import evaluate
from sparsecore.evaluation import (
    command_line,
    count_bops,
    count_flops,
    count_params,
    default_seeds,
    finish_reproduction,
    format_table,
    inference_cost,
    result_row,
    run_seeds,
    sparseland_fields,
    training_cost,
)
from sparsecore.export import remove_channels


def variants(
    rates: list[float], bits: list[int], ablation: bool = True
) -> dict[str, dict[str, Any] | None]:
    """Variant name -> `PruneQuant` options builder key (``None``: dense)."""
    out: dict[str, dict[str, Any] | None] = {"dense fp32": None}
    for r in rates:
        out[f"prune-only {r:.0%}"] = {"kind": "prune", "rate": r}
    for b in bits:
        out[f"quant-only {b}-bit"] = {"kind": "quant", "bits": b}
    for r in rates:
        for b in bits:
            out[f"SPQ {r:.0%} {b}-bit"] = {"kind": "spq", "rate": r, "bits": b}
            out[f"PPQ {r:.0%} {b}-bit"] = {"kind": "ppq", "rate": r, "bits": b}
    if ablation:
        out[f"SPQ {rates[-1]:.0%} {bits[0]}-bit, hard FPGM (ablation)"] = {
            "kind": "hard",
            "rate": rates[-1],
            "bits": bits[0],
        }
    return out


def options(spec: dict[str, Any], shape: tuple[int, ...], epoch: int, total: int) -> dict:
    kind = spec["kind"]
    if kind == "prune":
        return {"sparsity": spec["rate"], "weight_bits": None, "input_shape": shape,
                "prune_every": epoch}  # fmt: skip
    if kind == "quant":
        return {"sparsity": 0.0, "weight_bits": spec["bits"]}
    if kind == "spq":
        return spq(spec["rate"], spec["bits"], shape, epoch)
    if kind == "ppq":
        return ppq(spec["rate"], spec["bits"], shape, epoch, prune_end=total // 2)
    return {**spq(spec["rate"], spec["bits"], shape, epoch), "prune_end": 0}  # hard from step 0


def run_one(task, spec, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    if args.task == "digits":
        model = make_model("resnet", task, seed=seed, width=args.width)
    else:
        model = make_model("convbase", task, seed=seed)
    example = task.x_test[:1]
    dense_params = count_params(model)[0]
    dense_layers = _layer_numel(model)
    dense_macs = count_flops(model, example).dense
    dense_bops = count_bops(model, example).total
    epoch = math.ceil(task.num_train / args.batch_size)
    total = epoch * args.epochs
    method = None
    if spec is not None:
        method = PruneQuant(seed=seed + 1, **options(spec, task.input_shape, epoch, total))
    start = time.perf_counter()
    train(model, task, method, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
          seed=seed, progress=False)  # fmt: skip
    wall = time.perf_counter() - start
    final = method.finalize() if method is not None else model
    final.eval()
    if spec is not None and spec["kind"] != "prune":
        export = export_compact(final, example)
        compact, nbytes = export.model, export.nbytes
    else:
        compact = final
        if spec is not None:
            remove_channels(compact, example)
        nbytes = 4 * sum(t.numel() for t in compact.state_dict().values() if t.is_floating_point())
    params = count_params(compact)[0]
    layers = _layer_numel(compact)
    per_layer = {n: 1.0 - layers.get(n, 0) / v for n, v in dense_layers.items()}
    macs = count_flops(compact, example).dense
    return {
        "accuracy": evaluate(compact, task.x_test, task.y_test),
        "sparsity": 1.0 - params / dense_params,
        "flops_ratio": macs / dense_macs,
        "wall_s": wall,
        "bytes": nbytes,
        "bops": count_bops(compact, example).total,
        "dense_bops": dense_bops,
        "params": params,
        "dense_params": dense_params,
        "macs": macs,
        "dense_macs": dense_macs,
        "per_layer": per_layer,
    }


def _layer_numel(model: torch.nn.Module) -> dict[str, int]:
    return {
        name: m.weight.numel()
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Conv1d | torch.nn.Conv2d | torch.nn.Linear)
    }


def run_seed(task, specs, seed: int, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Every variant for one seed (one process when ``--jobs`` > 1)."""
    torch.set_num_threads(args.threads)
    out = {}
    for name, spec in tqdm(specs.items(), desc=f"seed {seed}", file=sys.stderr):
        out[name] = run_one(task, spec, seed, args)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings (< 60 s, 1 seed)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seeds", type=int, nargs="*", default=None)
    parser.add_argument("--task", default="digits", choices=("digits", "mnist1d"))
    parser.add_argument("--grid", default="full", choices=("full", "small"))
    parser.add_argument("--width", type=int, default=8, help="ResNet width (digits)")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1, help="seeds run in parallel processes")
    from sparsecore.evaluation.paths import default_results_path  # quick: a temporary path

    parser.add_argument("--out", default=str(default_results_path(__file__, argv)))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    args.epochs = args.epochs or (2 if args.quick else 12)
    seeds = default_seeds(args.seeds, args.quick)
    small = args.quick or args.grid == "small"
    rates, bits = ([0.5], [4]) if args.quick else ([0.3], [4]) if small else ([0.3, 0.5], [4, 3])
    task = load_task(args.task)
    if args.quick:
        task = task.subset(num_train=384)
    specs = variants(rates, bits, ablation=not small)
    results: dict[str, dict[int, dict[str, Any]]] = {name: {} for name in specs}
    start = time.perf_counter()
    by_seed = run_seeds(partial(run_seed, task, specs, args=args), seeds, jobs=args.jobs)
    for seed, per_variant in by_seed.items():
        for name, result in per_variant.items():
            results[name][seed] = result

    def row(name: str):
        out = result_row(name, seeds, lambda seed: results[name][seed])
        mean = {k: statistics.mean(results[name][s][k] for s in seeds) for k in ("bytes", "bops")}
        dense = results["dense fp32"]
        dense_bytes = statistics.mean(dense[s]["bytes"] for s in seeds)
        dense_bops = statistics.mean(dense[s]["bops"] for s in seeds)
        out.note = (
            f"bytes {mean['bytes']:.0f} ({dense_bytes / mean['bytes']:.1f}x smaller), "
            f"BOPs {mean['bops'] / 1e6:.1f}M ({dense_bops / mean['bops']:.1f}x fewer)"
        )
        return out, mean

    summary = {name: row(name) for name in specs}
    rows = [r for r, _ in summary.values()]
    print(format_table(rows, note_width=200))
    for r in rows:
        print(f"{r.variant}: {r.note}")

    dense_acc = summary["dense fp32"][0].mean
    r0, b0 = rates[0], bits[0]
    singles = [summary[f"prune-only {r0:.0%}"][1], summary[f"quant-only {b0}-bit"][1]]
    verdicts = {}
    for kind in ("SPQ", "PPQ"):
        row_, size = summary[f"{kind} {r0:.0%} {b0}-bit"]
        verdicts[kind] = {
            "smaller_bytes_than_both": all(size["bytes"] < s["bytes"] for s in singles),
            "fewer_bops_than_both": all(size["bops"] < s["bops"] for s in singles),
            "accuracy_drop_pp": 100 * (dense_acc - row_.mean),
        }
        verdicts[kind]["holds"] = (
            verdicts[kind]["smaller_bytes_than_both"]
            and verdicts[kind]["fewer_bops_than_both"]
            and verdicts[kind]["accuracy_drop_pp"] <= 2.0
        )
        print(f"{kind}: {verdicts[kind]}")
    holds = any(v["holds"] for v in verdicts.values())
    # Pareto view (reported beside the claim): which single-technique variants some combined
    # variant beats on both axes (no more bytes, at least the mean accuracy)
    combined = [n for n in specs if n.startswith(("SPQ ", "PPQ ")) and "ablation" not in n]
    pareto = {}
    for single in (n for n in specs if n.startswith(("prune-only", "quant-only"))):
        row_, size = summary[single]
        pareto[single] = [
            c
            for c in combined
            if summary[c][1]["bytes"] <= size["bytes"] and summary[c][0].mean >= row_.mean
        ]
        print(f"{single}: dominated by {pareto[single] or 'no combined variant'}")

    first = results[f"SPQ {r0:.0%} {b0}-bit"][seeds[0]]
    fields = sparseland_fields(
        sparsity={
            "target": r0,
            "achieved": first["sparsity"],
            "param_set": {
                "included": ["every conv / linear weight in a prunable channel group"],
                "excluded": ["classifier (its outputs are the classes)"],
                "unit": "parameters removed by channel pruning (filters, BatchNorm, inputs)",
                "numel": first["dense_params"],
            },
            "per_layer": first["per_layer"],
        },
        training=training_cost(
            dense_train_flops=3.0 * first["dense_macs"] * task.num_train * args.epochs,
            epochs=args.epochs,
        ),
        inference=inference_cost(
            first["dense_macs"], first["macs"], first["params"], first["dense_params"]
        ),
        allocation="uniform",
        baselines=["dense fp32", f"prune-only {r0:.0%}", f"quant-only {b0}-bit"],
    )
    command = command_line(argv)
    claim = (
        f"SPQ or PPQ at {r0:.0%} filters / {b0} bits stores fewer bytes and needs fewer BOPs "
        "than both prune-only and quantize-only at that setting, within 2 pp of dense accuracy"
    )
    compression = {
        name: {"bytes": s["bytes"], "bops": s["bops"]} for name, (_, s) in summary.items()
    }
    finish_reproduction(
        args.out,
        start=start,
        quick=args.quick,
        show_claim=True,
        method="prunequant",
        task=args.task,
        claim=claim,
        holds=holds,
        rows=rows,
        command=command,
        settings={
            "epochs": args.epochs,
            "seeds": seeds,
            "width": args.width,
            "lr": args.lr,
            "batch_size": args.batch_size,
            "quick": args.quick,
            "model": "core ResNet (stem + 3 basic blocks), digits 8x8"
            if args.task == "digits"
            else "MNIST-1D ConvBase (3 Conv1d + Linear)",
        },
        compression=compression,
        verdicts=verdicts,
        pareto=pareto,
        sparseland=fields,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

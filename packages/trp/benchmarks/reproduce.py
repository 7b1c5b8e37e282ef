"""Reproduce TRP's central claim at CPU scale: trained low rank beats post-hoc SVD at equal FLOPs.

Main experiment (the claim): sklearn digits (8×8, 10 classes) with sparsecore's small ResNet
(BatchNorm, 3×3 convolutions; ``make_model("resnet", load_task("digits"))``), 5 seeds, 12 epochs
for every trained model (SGD, lr 0.1, momentum 0.9, weight decay 5e-4, cosine). Rows:

* ``dense``: ordinary training.
* ``trp``: TRP without the nuclear norm (NC, substitution every step, energy 0.9), decomposed
  with the official criterion (σ ≥ 0.05), no retraining.
* ``trp+nu``: TRP with the nuclear-norm sub-gradient (λ = 3e-4), decomposed the same way.
* ``trp+nu+ft``: ``trp+nu`` retrained for ``ft`` = 3 epochs (lr 0.02, cosine).
* ``svd``: the trained dense model decomposed post hoc (NC) with one energy threshold for all
  TRP-eligible layers, chosen so that its MACs are *at least* those of the ``trp+nu`` model of
  the same seed (the baseline never gets fewer FLOPs); no retraining.
* ``svd+ft``: ``svd`` retrained for the same ``ft`` epochs.

Secondary experiment (reported, not part of the claim): MNIST-1D with the ConvBase CNN (Conv1d,
no BatchNorm), 3 seeds, 20 epochs; TRP+Nu at the default energy 0.9 and at 0.98, the SVD
baseline matched to the 0.98 variant.

Columns: ``sparsity`` = fraction of the model's parameters removed by the decomposition;
``flops`` = MACs of the model as run / MACs of the dense model (``sparsecore.evaluation.
count_flops``). The CPU latency of the decomposed model against the dense one (one thread,
interleaved medians) is printed next to its FLOPs ratio, on the task's inputs and, for the
ResNet, on 32×32 inputs where convolutions dominate.

Claim tested: on digits, TRP+Nu reaches a ≥ 2× FLOPs reduction with mean accuracy within 1 point
of dense, and its mean accuracy is higher than post-hoc SVD at equal or higher FLOPs, both
without retraining (``trp+nu`` vs ``svd``) and after the same retraining (``trp+nu+ft`` vs
``svd+ft``).

Usage: ``python benchmarks/reproduce.py [--quick] [--out PATH]``.
"""

from __future__ import annotations

import argparse
import copy
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

from sparse_trp import TRP, decompose, eligible_layers, plan_at_macs
from sparsecore.bench import evaluate, load_task, make_model, train
from sparsecore.evaluation import (
    compare_latency,
    count_flops,
    count_params,
    format_table,
    over_seeds,
    write_results,
)

HERE = Path(__file__).resolve().parent

#: Per task: model, epochs, TRP variants ``(row name, TRP options)``, the variant whose FLOPs the
#: SVD baseline is matched to, and the variant retrained for ``+ft``.
EXPERIMENTS: dict[str, dict[str, Any]] = {
    "digits": {
        "model": "resnet",
        "trp": [("trp", {"nuclear_weight": None}), ("trp+nu", {})],
        "match": "trp+nu",
    },
    "mnist1d": {
        "model": "convbase",
        "trp": [("trp+nu", {}), ("trp+nu e=0.98", {"energy": 0.98})],
        "match": "trp+nu e=0.98",
    },
}


def settings(quick: bool) -> dict[str, Any]:
    if quick:
        return {
            "digits": {"epochs": 2, "ft": 1, "options": {"width": 8}, "subset": 256},
            "mnist1d": {"epochs": 1, "ft": 1, "options": {}, "subset": 256},
            "seeds": {"digits": [0, 1, 2], "mnist1d": [0, 1, 2]},
            "latency_repeats": 2,
        }
    return {
        "digits": {"epochs": 12, "ft": 3, "options": {"width": 16}, "subset": None},
        "mnist1d": {"epochs": 20, "ft": 3, "options": {}, "subset": None},
        "seeds": {"digits": [0, 1, 2, 3, 4], "mnist1d": [0, 1, 2]},
        "latency_repeats": 31,
    }


def finetune(model: torch.nn.Module, task: Any, epochs: int, seed: int) -> float:
    """Retrain a decomposed model (plain SGD, lr 0.02, cosine); returns test accuracy."""
    model.train()
    result = train(
        model, task, epochs=epochs, lr=0.02, weight_decay=5e-4, seed=seed + 100, progress=False
    )
    model.eval()
    return result.accuracy


def run_seed(
    seed: int, task: Any, exp: dict[str, Any], cfg: dict[str, Any]
) -> tuple[dict[str, tuple[float, dict]], dict[str, torch.nn.Module]]:
    """Every variant of one task for one seed: ``{variant: (accuracy, extras)}``, models."""
    example = task.x_test[:1]
    out: dict[str, tuple[float, dict]] = {}
    models: dict[str, torch.nn.Module] = {}

    def build() -> torch.nn.Module:
        return make_model(exp["model"], task, seed=seed, **cfg["options"])

    def stats(model: torch.nn.Module, wall: float) -> dict:
        params, dense_params = count_params(model)[0], count_params(models["dense"])[0]
        dense_macs = count_flops(models["dense"], example).dense
        return {
            "sparsity": 1.0 - params / dense_params,
            "flops_ratio": count_flops(model, example).dense / dense_macs,
            "wall_s": wall,
            "params": params,
            "macs": count_flops(model, example).dense,
        }

    start = time.perf_counter()
    dense = models["dense"] = build()
    train(dense, task, epochs=cfg["epochs"], seed=seed, progress=False)
    dense.eval()
    dense_wall = time.perf_counter() - start
    out["dense"] = (evaluate(dense, task.x_test, task.y_test), stats(dense, dense_wall))

    walls = {}
    for name, options in exp["trp"]:
        start = time.perf_counter()
        model = build()
        method = TRP(**{"scheme": "NC", "energy": 0.9, "nuclear_weight": 3e-4, **options})
        train(model, task, method=method, epochs=cfg["epochs"], seed=seed, progress=False)
        method.finalize()
        model.eval()
        small, plan = method.decompose()  # official criterion: sigma >= 0.05
        small.eval()
        walls[name] = time.perf_counter() - start
        models[name] = small
        out[name] = (evaluate(small, task.x_test, task.y_test), stats(small, walls[name]))
        out[name][1]["ranks"] = plan["ranks"]

    match = exp["match"]
    tuned = copy.deepcopy(models[match])
    start = time.perf_counter()
    accuracy = finetune(tuned, task, cfg["ft"], seed)
    out[f"{match}+ft"] = (accuracy, stats(tuned, walls[match] + time.perf_counter() - start))

    start = time.perf_counter()
    target = count_flops(models[match], example).dense
    layers = eligible_layers(dense)  # the layers TRP acts on
    svd_plan, threshold = plan_at_macs(dense, layers, "NC", target, example)
    svd = models["svd"] = decompose(dense, svd_plan)
    svd.eval()
    svd_wall = dense_wall + time.perf_counter() - start
    out["svd"] = (evaluate(svd, task.x_test, task.y_test), stats(svd, svd_wall))
    out["svd"][1].update(ranks=svd_plan["ranks"], energy=threshold)
    tuned = copy.deepcopy(svd)
    start = time.perf_counter()
    accuracy = finetune(tuned, task, cfg["ft"], seed)
    out["svd+ft"] = (accuracy, stats(tuned, svd_wall + time.perf_counter() - start))
    return out, models


def latency(dense: torch.nn.Module, small: torch.nn.Module, x: torch.Tensor, repeats: int) -> dict:
    """Interleaved CPU latency of the decomposed model vs the dense one, with the FLOPs ratio.

    Each timed call runs the forward pass ``calls`` times (chosen so that one timed call of the
    dense model lasts >= 20 ms): on a loaded machine, sub-millisecond calls measure the scheduler.
    """
    with torch.inference_mode():
        start = time.perf_counter()
        dense(x)
        calls = max(1, min(200, int(0.02 / max(time.perf_counter() - start, 1e-6)) + 1))

        def run(model: torch.nn.Module) -> None:
            for _ in range(calls):
                model(x)

        ratio = compare_latency(lambda: run(small), lambda: run(dense), warmup=2, repeats=repeats)
    return {
        "input": list(x.shape),
        "threads": torch.get_num_threads(),
        "calls_per_timing": calls,
        "dense_ms": 1e3 * ratio.reference.median_s / calls,
        "decomposed_ms": 1e3 * ratio.candidate.median_s / calls,
        "latency_ratio": float(ratio),
        "flops_ratio": count_flops(small, x[:1]).dense / count_flops(dense, x[:1]).dense,
    }


def run_task(name: str, cfg: dict[str, Any], seeds: list[int], repeats: int) -> dict[str, Any]:
    exp = EXPERIMENTS[name]
    task = load_task(name)
    if cfg["subset"]:
        task = task.subset(num_train=cfg["subset"])
    variants = ["dense", "svd", "svd+ft", *(v for v, _ in exp["trp"]), f"{exp['match']}+ft"]
    # one-time process warm-up (lazy kernel set-up), so it is not charged to the first variant
    warm = make_model(exp["model"], task, seed=0, **cfg["options"])
    torch.nn.functional.cross_entropy(warm(task.x_train[:128]), task.y_train[:128]).backward()
    per_seed, lat = {}, {}
    for seed in seeds:
        print(f"{name}: seed {seed} ...", file=sys.stderr, flush=True)
        per_seed[seed], models = run_seed(seed, task, exp, cfg)
        if seed == seeds[0]:
            small, dense = models[exp["match"]], models["dense"]
            lat["task input"] = latency(dense, small, task.x_test[:256], repeats)
            if name == "digits":  # the same models on 32x32 inputs: where FLOPs dominate
                big = torch.randn(64, 1, 32, 32, generator=torch.Generator().manual_seed(0))
                lat["32x32 input"] = latency(dense, small, big, repeats)
    rows = [over_seeds(v, seeds, lambda s, v=v: _strip(per_seed[s][v])) for v in variants]
    return {
        "rows": rows,
        "latency": lat,
        "variant": exp["match"],
        "details": {str(s): per_seed[s] for s in seeds},
    }


def verdict(rows: list[Any], variant: str) -> tuple[bool, float]:
    """Whether ``variant`` has >= 2x fewer FLOPs, is within 1 point of dense, and beats SVD."""
    by = {r.variant: r for r in rows}
    reduction = 1.0 / by[variant].flops_ratio
    within = by["dense"].mean - by[variant].mean <= 0.01
    beats = by[variant].mean > by["svd"].mean and by[f"{variant}+ft"].mean > by["svd+ft"].mean
    return reduction >= 2.0 and within and beats, reduction


def show(name: str, result: dict[str, Any]) -> None:
    print(f"\n== {name} ==")
    print(format_table(result["rows"]))
    first = next(iter(result["details"].values()))
    sizes = ", ".join(
        f"{v} {extras['params']} params / {extras['macs']} MACs" for v, (_, extras) in first.items()
    )
    print(f"model sizes (first seed): {sizes}")
    for where, lat in result["latency"].items():
        print(
            f"latency ({where} {lat['input']}, CPU, {lat['threads']} thread, median): dense "
            f"{lat['dense_ms']:.2f} ms, {result['variant']} decomposed {lat['decomposed_ms']:.2f} "
            f"ms, ratio {lat['latency_ratio']:.3f} (FLOPs ratio {lat['flops_ratio']:.3f})"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings (CI)")
    from sparsecore.evaluation.paths import default_results_path  # quick: tmp

    parser.add_argument(
        "--out", default=default_results_path(__file__, argv), help="JSON output path"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # shared 2-core machine: one thread per process is fastest

    cfg = settings(args.quick)
    results = {
        name: run_task(name, cfg[name], cfg["seeds"][name], cfg["latency_repeats"])
        for name in EXPERIMENTS
    }
    secondary, _ = verdict(results["mnist1d"]["rows"], results["mnist1d"]["variant"])
    show("mnist1d / convbase (secondary)", results["mnist1d"])
    print(f"mnist1d: the same criteria {'hold' if secondary else 'do not hold'} for trp+nu e=0.98")
    show("digits / resnet (the claim)", results["digits"])

    holds, reduction = verdict(results["digits"]["rows"], "trp+nu")
    claim = (
        "on digits/ResNet, TRP+Nu (NC, e=0.9, lambda=3e-4, decomposed at sigma >= 0.05) reaches "
        f"a >= 2x FLOPs reduction (measured {reduction:.2f}x) with mean accuracy within 1 point "
        "of dense, and has higher mean accuracy than post-hoc SVD at equal or higher FLOPs, "
        "both without retraining and after the same retraining budget"
    )
    command = ("python benchmarks/reproduce.py " + shlex.join(sys.argv[1:])).strip()
    write_results(
        args.out,
        "trp",
        "digits/resnet (+ mnist1d/convbase secondary)",
        claim,
        holds,
        results["digits"]["rows"],
        command,
        settings=cfg,
        latency=results["digits"]["latency"],
        details=results["digits"]["details"],
        secondary={
            "task": "mnist1d/convbase",
            "holds": secondary,
            "rows": [r.to_dict() for r in results["mnist1d"]["rows"]],
            "latency": results["mnist1d"]["latency"],
            "details": results["mnist1d"]["details"],
        },
    )
    print(f"claim: {'holds' if holds else 'does not hold'}: {claim}")
    return 0


def _strip(result: tuple[float, dict]) -> tuple[float, dict]:
    value, extras = result
    return value, {k: extras[k] for k in ("sparsity", "flops_ratio", "wall_s")}


if __name__ == "__main__":
    sys.exit(main())

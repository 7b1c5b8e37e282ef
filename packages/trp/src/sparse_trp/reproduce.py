"""Reproduce TRP's central claim at CPU scale: trained low rank beats post-hoc SVD at equal FLOPs.

Main experiment (the claim): MNIST-1D with the ConvBase CNN (Conv1d, no BatchNorm), a task where
low rank costs accuracy (post-hoc SVD at half the FLOPs loses ~10 points), 3 seeds, 20 epochs for
every trained model (SGD, lr 0.1, momentum 0.9, weight decay 5e-4, cosine). Rows:

* ``dense``: ordinary training.
* ``trp+nu``: TRP with the nuclear-norm sub-gradient (NC, substitution every step, energy 0.9,
  λ = 3e-4), decomposed with the official criterion (σ ≥ 0.05), no retraining.
* ``trp e=0.98``: TRP substitution alone (no nuclear norm), energy 0.98.
* ``nu-only e=0.98``: the nuclear-norm sub-gradient alone (``substitute=False``), the ablation of
  the substitution.
* ``trp+nu e=0.98``: both, energy 0.98; ``+ft`` retrained for ``ft`` = 3 epochs (lr 0.02, cosine).
* ``svd``: the trained dense model decomposed post hoc (NC) with one energy threshold for all
  TRP-eligible layers, chosen so that its MACs are *at least* those of ``trp+nu e=0.98`` of the
  same seed (the baseline never gets fewer FLOPs); no retraining. ``svd+ft``: retrained the same.

Secondary experiment (reported, not part of the claim): sklearn digits (8×8) with sparsecore's
small ResNet (BatchNorm, 3×3 Conv2d), 5 seeds, 12 epochs; NC and VH (spatial-wise, the paper's
other Conv2d scheme) TRP+Nu rows, each with its own post-hoc SVD baseline in the same scheme at
equal or higher MACs, and the nuclear-norm-only ablation. Dense digits is saturated (~99%), so
it shows compression, not a hard accuracy trade-off.

Columns: ``sparsity`` = fraction of the model's parameters removed by the decomposition;
``flops`` = MACs of the model as run / MACs of the dense model (``sparsecore.evaluation.
count_flops``). Layers are decomposed only where that lowers MACs (``only_if_smaller`` with the
task's example input). The CPU latency of the decomposed model against the dense one (one thread,
interleaved medians) is printed next to its FLOPs ratio, on the task's inputs and, for the
ResNet, on 32×32 inputs where convolutions dominate.

Claim tested: on MNIST-1D/ConvBase, TRP+Nu (e = 0.98) reaches a ≥ 2× FLOPs reduction and its mean
accuracy is higher than post-hoc SVD at equal or higher FLOPs, both without retraining
(``trp+nu e=0.98`` vs ``svd``) and after the same retraining (``+ft`` vs ``svd+ft``).

Sparseland entry (``sparsecore.evaluation.sparseland_entry``): anchored on ``trp+nu e=0.98`` of
the first seed; per-layer "sparsity" is the fraction of a layer's weights removed by its two
factor layers; baselines ``dense`` and ``svd`` (post-hoc truncated SVD: the singular-value
magnitude criterion); the matched-random baseline (a random factorisation with the same
per-layer ranks) is not run, and the entry records that gap.

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
    report_sparseland,
    sparseland_entry,
    write_results,
)
from sparsecore.evaluation.sparseland_entry import layer_weights

HERE = Path(__file__).resolve().parent

#: Per task: model, epochs, TRP variants ``(row name, TRP options)``, the variant whose FLOPs the
#: SVD baseline is matched to, and the variant retrained for ``+ft``.
EXPERIMENTS: dict[str, dict[str, Any]] = {
    "mnist1d": {
        "model": "convbase",
        "trp": [
            ("trp+nu", {}),
            ("trp e=0.98", {"energy": 0.98, "nuclear_weight": None}),
            ("nu-only e=0.98", {"energy": 0.98, "substitute": False}),
            ("trp+nu e=0.98", {"energy": 0.98}),
        ],
        "match": "trp+nu e=0.98",
        "svd": [("svd", "NC", "trp+nu e=0.98")],
    },
    "digits": {
        "model": "resnet",
        "trp": [
            ("trp", {"nuclear_weight": None}),
            ("nu-only", {"substitute": False}),
            ("trp+nu", {}),
            ("trp+nu VH", {"scheme": "VH"}),
        ],
        "match": "trp+nu",
        "svd": [("svd", "NC", "trp+nu"), ("svd VH", "VH", "trp+nu VH")],
    },
}
#: The task the claim is judged on.
CLAIM_TASK = "mnist1d"


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
        # official criterion (sigma >= 0.05); a layer is decomposed only where MACs drop
        small, plan = method.decompose(example=example)
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

    layers = eligible_layers(dense)  # the layers TRP acts on
    for svd_name, scheme, matched in exp["svd"]:
        start = time.perf_counter()
        target = count_flops(models[matched], example).dense
        svd_plan, threshold = plan_at_macs(dense, layers, scheme, target, example)
        svd = models[svd_name] = decompose(dense, svd_plan)
        svd.eval()
        svd_wall = dense_wall + time.perf_counter() - start
        out[svd_name] = (evaluate(svd, task.x_test, task.y_test), stats(svd, svd_wall))
        out[svd_name][1].update(ranks=svd_plan["ranks"], energy=threshold)
        if matched == match:
            tuned = copy.deepcopy(svd)
            start = time.perf_counter()
            accuracy = finetune(tuned, task, cfg["ft"], seed)
            out[f"{svd_name}+ft"] = (
                accuracy,
                stats(tuned, svd_wall + time.perf_counter() - start),
            )
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
    svds = [name for name, _, _ in exp["svd"]]
    svds += [f"{name}+ft" for name, _, matched in exp["svd"] if matched == exp["match"]]
    variants = ["dense", *svds, *(v for v, _ in exp["trp"]), f"{exp['match']}+ft"]
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
        "anchor": {"dense": dense, "small": small, "task": task},
    }


def lowrank_sparsity(dense: torch.nn.Module, small: torch.nn.Module) -> dict[str, Any]:
    """Sparseland R1 for a decomposed model: weights removed per TRP layer by its factor pair.

    The parameter set is the layers TRP acts on (`eligible_layers`); one it left full rank
    (``only_if_smaller``) counts 0. Every other weight layer is declared excluded.
    """
    dense_w = {n: w.numel() for n, w in layer_weights(dense).items()}
    small_w = {n: w.numel() for n, w in layer_weights(small).items()}
    included = sorted(f"{name}.weight" for name in eligible_layers(dense))
    per_layer = {}
    for name in included:
        prefix = name.removesuffix(".weight")
        factors = [f"{prefix}.0.weight", f"{prefix}.1.weight"]
        kept = sum(small_w[f] for f in factors) if all(f in small_w for f in factors) else None
        per_layer[name] = 0.0 if kept is None else 1.0 - kept / dense_w[name]
    total = sum(dense_w[n] for n in included)
    removed = sum(per_layer[n] * dense_w[n] for n in included)
    return {
        "target": None,
        "achieved": removed / total if total else 0.0,
        "param_set": {
            "included": included,
            "excluded": sorted(set(dense_w) - set(included)),
            "numel": total,
            "unit": "weights of a layer's two factor layers vs the dense layer (low rank)",
        },
        "per_layer": per_layer,
    }


def verdict(rows: list[Any], variant: str) -> tuple[dict[str, bool], float]:
    """The claim's parts: ``variant`` has >= 2x fewer FLOPs and beats SVD (with and without ft).

    Whether it is within 1 point of dense is reported too (a part only on the saturated task).
    """
    by = {r.variant: r for r in rows}
    reduction = 1.0 / by[variant].flops_ratio
    ft = f"{variant}+ft"
    return {
        f">= 2x fewer FLOPs ({reduction:.2f}x)": reduction >= 2.0,
        f"{variant} ({by[variant].mean:.4f}) > svd ({by['svd'].mean:.4f})": (
            by[variant].mean > by["svd"].mean
        ),
        f"{ft} ({by[ft].mean:.4f}) > svd+ft ({by['svd+ft'].mean:.4f})": (
            by[ft].mean > by["svd+ft"].mean
        ),
        f"within 1 point of dense ({by['dense'].mean:.4f})": (
            by["dense"].mean - by[variant].mean <= 0.01
        ),
    }, reduction


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
    secondary_task = next(name for name in EXPERIMENTS if name != CLAIM_TASK)
    secondary_parts, _ = verdict(
        results[secondary_task]["rows"], results[secondary_task]["variant"]
    )
    show(f"{secondary_task} (secondary)", results[secondary_task])
    for part, ok in secondary_parts.items():
        print(f"  {secondary_task}: {part}: {'yes' if ok else 'no'}")
    secondary = all(secondary_parts.values())
    variant = results[CLAIM_TASK]["variant"]
    show(f"{CLAIM_TASK} (the claim)", results[CLAIM_TASK])
    parts, reduction = verdict(results[CLAIM_TASK]["rows"], variant)
    parts = {k: v for k, v in parts.items() if not k.startswith("within")}  # not on this task
    for part, ok in parts.items():
        print(f"  {CLAIM_TASK}: {part}: {'yes' if ok else 'no'}")
    holds = all(parts.values())
    claim = (
        f"on MNIST-1D/ConvBase, TRP+Nu (NC, e=0.98, lambda=3e-4, decomposed at sigma >= 0.05) "
        f"reaches a >= 2x FLOPs reduction (measured {reduction:.2f}x) and has higher mean "
        "accuracy than post-hoc SVD at equal or higher FLOPs, both without retraining and after "
        "the same retraining budget"
    )
    command = ("python benchmarks/reproduce.py " + shlex.join(sys.argv[1:])).strip()
    anchor = results[CLAIM_TASK]["anchor"]
    epochs = cfg[CLAIM_TASK]["epochs"]
    entry = sparseland_entry(
        anchor["small"],
        anchor["task"].x_test[:1],
        dense_model=anchor["dense"],
        sparsity=lowrank_sparsity(anchor["dense"], anchor["small"]),
        target=None,
        allocation="learned",
        epochs=epochs,
        train_examples=anchor["task"].num_train * epochs,
        kernel="dense factor layers, torch CPU (see latency)",
        baselines={"dense": "dense", "matched_random": None, "magnitude": "svd"},
        gap_notes={
            "matched_random": "a random factorisation with the same per-layer ranks is not run"
        },
        notes=f"anchor: {variant}, first seed; TRP trains full rank (dense training cost)",
    )
    data = write_results(
        args.out,
        "trp",
        f"{CLAIM_TASK}/convbase (+ {secondary_task}/resnet secondary)",
        claim,
        holds,
        results[CLAIM_TASK]["rows"],
        command,
        parts=parts,
        settings=cfg,
        latency=results[CLAIM_TASK]["latency"],
        details=results[CLAIM_TASK]["details"],
        secondary={
            "task": f"{secondary_task}/resnet",
            "holds": secondary,
            "parts": secondary_parts,
            "rows": [r.to_dict() for r in results[secondary_task]["rows"]],
            "latency": results[secondary_task]["latency"],
            "details": results[secondary_task]["details"],
        },
        sparseland=entry,
    )
    report_sparseland(data, quick=args.quick, min_seeds=3)
    print(f"claim: {'holds' if holds else 'does not hold'}: {claim}")
    return 0


def _strip(result: tuple[float, dict]) -> tuple[float, dict]:
    value, extras = result
    return value, {k: extras[k] for k in ("sparsity", "flops_ratio", "wall_s")}


if __name__ == "__main__":
    sys.exit(main())

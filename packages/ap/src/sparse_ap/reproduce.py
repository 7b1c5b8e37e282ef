"""Reproduce the AP claim at CPU scale (reproduction contract, ARCHITECTURE.md §7).

Paper: Liu, Ghosh, Tan & Motani, "AP: Selective Activation for De-sparsifying Pruned Neural
Networks", TMLR 2023, arXiv 2212.06145.

Setting: three models, each a dense run and then ``--cycles`` pruning cycles that remove
``--fraction`` (p) of the remaining weights each, every run the same ``epochs`` (SGD lr 0.1,
momentum 0.9, wd 5e-4, cosine LR restarted per run, batch 128):

* ResNet-8 (sparsecore's ``resnet``, width 8, one basic block per stage) on sklearn digits;
* the MNIST-1D ConvBase (3 Conv1d + Linear) and the MNIST-1D MLP (2 × 256) on MNIST-1D.

Three base methods, each alone at p and with AP (base at p - p_AP, AP step p_AP; the per-cycle
total is the same ``ceil(p · nnz)``, so every pair has *equal sparsity at every cycle*):

* ``imp``: sparsecore's IMP, global magnitude, rewind to the initialisation (the official
  code's ``--prune_type lt``);
* ``gmp-iter``: the same global magnitude rounds without rewinding: prune, then fine-tune the
  surviving weights (iterative pruning of Han et al. 2015);
* ``lth``: sparse-lth's lottery ticket with late rewinding to step ``k = --rewind-frac · T``.

After every run: test accuracy and the dynamic dead neuron rate (DNR, on the test inputs).
Sparseland R5 baseline: ``<model>/random c<last>``, random masks with exactly the per-layer
counts of IMP + AP's last cycle (`sparsecore.evaluation.MatchedRandomPruning`), trained from
the same initialisation for ``epochs``; ``imp c0`` is the dense row and ``imp c<last>`` the
magnitude row of the Sparseland entry (anchored on the first model, IMP + AP, seed 0).

Claim tested (printed last): for every model and every base method, AP's accuracy averaged over
the pruned cycles (and seeds) is higher than the base's, and AP's DNR after retraining averaged
the same way is lower.

Usage::

    python benchmarks/reproduce.py            # full: 3 models, 5 cycles, 3 seeds
    python benchmarks/reproduce.py --quick    # same code path, tiny settings (< 60 s)
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from sparse_ap import ActivateWhilePruning, run_cycles
from sparsecore import IMP
from sparsecore.bench import load_task, make_model, train
from sparsecore.evaluation import (
    MatchedRandomPruning,
    Row,
    format_table,
    report_sparseland,
    sparseland_entry,
    write_results,
)
from sparsecore.registry import available_methods

HERE = Path(__file__).resolve().parent
BASES = ("imp", "gmp-iter", "lth")
CLAIM = (
    "AP improves each base method at equal sparsity (mean test accuracy over the pruned cycles "
    "higher than the base's: IMP, iterative GMP, LTH with rewinding), and the DNR after "
    "retraining is lower, on every model"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings (< 60 s)")
    parser.add_argument("--cycles", type=int, default=None)
    parser.add_argument("--seeds", type=int, nargs="*", default=None)
    parser.add_argument("--fraction", type=float, default=0.4, help="p, pruned per cycle")
    parser.add_argument("--ap-fraction", type=float, default=0.04, help="p_AP, AP's part of p")
    parser.add_argument("--rewind-frac", type=float, default=0.05, help="LTH: k = frac · T")
    parser.add_argument("--models", nargs="*", default=None, help="resnet convbase mlp")
    parser.add_argument("--bases", nargs="*", default=list(BASES), choices=BASES)
    parser.add_argument(
        "--any-sign",
        action="store_true",
        help="ablation: the AP step ranks every weight by |w - w_prev| (negative_only=False)",
    )
    from sparsecore.evaluation.paths import default_results_path  # quick: tmp

    parser.add_argument("--out", default=str(default_results_path(__file__, argv)))
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


#: model -> (task, epochs per run in the full setting)
MODELS = {"resnet": ("digits", 10), "convbase": ("mnist1d", 15), "mlp": ("mnist1d", 15)}
#: model builder options: ResNet-8 at width 8 (20k weights), so that the sparse end of the
#: cycles is not saturated at 99% on digits as the width-16 net is (measured: 99.2% at 92%)
MODEL_OPTIONS: dict[str, dict[str, Any]] = {"resnet": {"width": 8}}


def settings(args: argparse.Namespace) -> dict[str, Any]:
    if args.quick:
        cfg = {"cycles": 2, "seeds": [0, 1], "epochs": {m: 1 for m in MODELS}, "subset": 256}
    else:
        cfg = {"cycles": 5, "seeds": [0, 1, 2], "epochs": {m: e for m, (_, e) in MODELS.items()}}
        cfg["subset"] = None
    if args.cycles is not None:
        cfg["cycles"] = args.cycles
    if args.seeds is not None:
        cfg["seeds"] = args.seeds
    cfg["models"] = args.models or list(MODELS)
    return cfg


def make_method(base: str, with_ap: bool, args: argparse.Namespace, k: int, seed: int) -> Any:
    """The base alone at p, or AP around it (base at p - p_AP)."""
    method_seed = 1000 + seed  # never the integer that seeded the weights
    lth = "lth" in available_methods()
    if with_ap:
        name = "lth" if base == "lth" and lth else "imp"
        options = {"rewind_step": k} if base == "lth" else {}
        return ActivateWhilePruning(
            base=name,
            base_options=options,
            fraction=args.fraction,
            ap_fraction=args.ap_fraction,
            negative_only=not args.any_sign,
            seed=method_seed,
        )
    if base == "lth" and lth:
        return available_methods()["lth"](fraction=args.fraction, rewind_step=k, seed=method_seed)
    rewind_step = k if base == "lth" else 0
    return IMP(fraction=args.fraction, rewind_step=rewind_step, seed=method_seed)


def matched_random(
    model_name: str, task: Any, masks: dict[str, torch.Tensor], epochs: int, seed: int
) -> dict[str, float]:
    """Sparseland R5: random masks with `masks`' per-layer counts, trained from the init."""
    model = make_model(model_name, task, seed=seed, **MODEL_OPTIONS.get(model_name, {}))
    method = MatchedRandomPruning(masks, seed=3000 + seed)
    result = train(model, task, method, epochs=epochs, seed=seed, batch_size=128, lr=0.1)
    return {"accuracy": result.accuracy, "sparsity": result.sparsity, "wall_s": result.wall_s}


def summarise(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def plot(results: dict, cfg: dict, path: Path, bases: list[str]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    models = cfg["models"]
    fig = Figure(figsize=(4.2 * len(models), 7))
    FigureCanvasAgg(fig)
    colors = dict(zip(BASES, ("tab:blue", "tab:orange", "tab:green"), strict=True))
    for col, model in enumerate(models):
        for row, metric in enumerate(("accuracy", "dnr")):
            ax = fig.add_subplot(2, len(models), row * len(models) + col + 1)
            for base in bases:
                for with_ap in (False, True):
                    runs = results[model][(base, with_ap)]
                    xs = [
                        statistics.fmean(r[c]["sparsity"] for r in runs)
                        for c in range(len(runs[0]))
                    ]
                    ys = [statistics.fmean(r[c][metric] for r in runs) for c in range(len(runs[0]))]
                    label = f"{base}{' + AP' if with_ap else ''}"
                    style = "-" if with_ap else "--"
                    ax.plot(xs, ys, style, marker="o", color=colors[base], label=label, ms=3)
            ax.set(xlabel="sparsity", ylabel=metric, title=f"{model} ({MODELS[model][0]})")
            ax.grid(alpha=0.3)
            if row == 0 and col == 0:
                ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = settings(args)
    start = time.perf_counter()
    lth_source = "sparse-lth" if "lth" in available_methods() else "sparsecore IMP(rewind_step=k)"
    print(f"lth rows use {lth_source}; p = {args.fraction}, p_AP = {args.ap_fraction}")
    results: dict[str, dict] = {}
    rows: list[Row] = []
    dnr_rows: list[Row] = []
    pairs: list[dict[str, Any]] = []
    k_steps: dict[str, int] = {}
    anchor: dict[str, Any] = {}
    for model_name in cfg["models"]:
        task_name, _ = MODELS[model_name]
        task = load_task(task_name)
        if cfg["subset"]:
            task = task.subset(num_train=cfg["subset"], num_test=cfg["subset"])
        epochs = cfg["epochs"][model_name]
        steps = epochs * math.ceil(task.num_train / 128)
        k = max(1, round(args.rewind_frac * steps))
        k_steps[model_name] = k
        results[model_name] = {}
        for base in args.bases:
            for with_ap in (False, True):
                runs = []
                random_runs: list[dict[str, float]] = []
                for seed in cfg["seeds"]:
                    model = make_model(
                        model_name, task, seed=seed, **MODEL_OPTIONS.get(model_name, {})
                    )
                    method = make_method(base, with_ap, args, k, seed)
                    out = run_cycles(
                        model,
                        task,
                        method,
                        cfg["cycles"],
                        epochs,
                        rewind=base != "gmp-iter",
                        seed=seed,
                        batch_size=128,
                        lr=0.1,
                    )
                    runs.append([r.to_dict() for r in out])
                    if base == "imp" and with_ap:
                        masks = {n: m.clone() for n, m in method.masks.masks().items()}
                        random_runs.append(matched_random(model_name, task, masks, epochs, seed))
                        if not anchor:
                            anchor = {"model": model, "name": model_name, "task": task}
                            anchor["epochs"] = epochs * (cfg["cycles"] + 1)
                    print(
                        f"[{time.perf_counter() - start:6.0f} s] {model_name} {base}"
                        f"{' + AP' if with_ap else ''} seed {seed}: acc "
                        + " ".join(f"{r.accuracy:.3f}" for r in out)
                        + " | dnr "
                        + " ".join(f"{r.dnr:.3f}" for r in out),
                        flush=True,
                    )
                results[model_name][(base, with_ap)] = runs
                variant = f"{model_name}/{base}{'+ap' if with_ap else ''}"
                for c in range(cfg["cycles"] + 1):
                    sp = statistics.fmean(r[c]["sparsity"] for r in runs)
                    wall = statistics.fmean(r[c]["wall_s"] for r in runs)
                    for metric, table in (("accuracy", rows), ("dnr", dnr_rows)):
                        values = [r[c][metric] for r in runs]
                        mean, std = summarise(values)
                        table.append(
                            Row(f"{variant} c{c}", sp, math.nan, metric, mean, std, values, wall)
                        )
                if random_runs:
                    values = [r["accuracy"] for r in random_runs]
                    mean, std = summarise(values)
                    sp = statistics.fmean(r["sparsity"] for r in random_runs)
                    wall = statistics.fmean(r["wall_s"] for r in random_runs)
                    last = f"{model_name}/random c{cfg['cycles']}"
                    rows.append(Row(last, sp, math.nan, "accuracy", mean, std, values, wall))
            pair = {"model": model_name, "base": base}
            for metric in ("accuracy", "dnr"):
                diffs = [
                    statistics.fmean(
                        ap_run[c][metric] - base_run[c][metric] for c in range(1, cfg["cycles"] + 1)
                    )
                    for base_run, ap_run in zip(
                        results[model_name][(base, False)],
                        results[model_name][(base, True)],
                        strict=True,
                    )
                ]
                pair[f"d_{metric}"] = statistics.fmean(diffs)
                pair[f"d_{metric}_seeds"] = diffs
                last = cfg["cycles"]
                pair[f"d_{metric}_last"] = statistics.fmean(
                    a[last][metric] - b[last][metric]
                    for b, a in zip(
                        results[model_name][(base, False)],
                        results[model_name][(base, True)],
                        strict=True,
                    )
                )
            pair["holds"] = pair["d_accuracy"] > 0 and pair["d_dnr"] < 0
            pairs.append(pair)

    print("\ntest accuracy (mean ± std over seeds) per cycle:")
    print(format_table(rows))
    print("\nDNR after retraining (mean ± std over seeds) per cycle:")
    print(format_table(dnr_rows))
    print("\nAP - base, mean over pruned cycles (last cycle in brackets):")
    for p in pairs:
        print(
            f"  {p['model']:<9} {p['base']:<9} accuracy {100 * p['d_accuracy']:+.2f} pp "
            f"[{100 * p['d_accuracy_last']:+.2f}]  DNR {p['d_dnr']:+.4f} [{p['d_dnr_last']:+.4f}]"
            f"  {'ok' if p['holds'] else 'NOT'}"
        )
    holds = all(p["holds"] for p in pairs)
    claim = f"ablation, AP without its sign rule: {CLAIM}" if args.any_sign else CLAIM
    acc_wins = sum(p["d_accuracy"] > 0 for p in pairs)
    dnr_wins = sum(p["d_dnr"] < 0 for p in pairs)
    out = Path(args.out)
    figure = out.with_suffix(".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    plot(results, cfg, figure, args.bases)
    command = "python benchmarks/reproduce.py " + " ".join(sys.argv[1:] if argv is None else argv)
    first, last = anchor["name"], cfg["cycles"]
    entry = sparseland_entry(
        anchor["model"],
        anchor["task"].x_test[:1],
        target=1.0 - (1.0 - args.fraction) ** last,
        allocation="global",
        epochs=anchor["epochs"],
        train_examples=anchor["task"].num_train * anchor["epochs"],
        baselines={
            "dense": f"{first}/imp c0",
            "matched_random": f"{first}/random c{last}",
            "magnitude": f"{first}/imp c{last}",
        },
        notes=f"anchor: {first}/imp+ap c{last}, seed {cfg['seeds'][0]}; epochs: all "
        f"{last + 1} runs; masked training counted as dense compute (no sparse kernel)",
    )
    data = write_results(
        out,
        "ap",
        "digits (ResNet-8), mnist1d (ConvBase, MLP)",
        claim,
        holds,
        rows + dnr_rows,
        command.strip(),
        settings={
            **cfg,
            "bases": args.bases,
            "any_sign_ablation": args.any_sign,
            "fraction": args.fraction,
            "ap_fraction": args.ap_fraction,
            "rewind_k": k_steps,
            "lth_rows": lth_source,
            "quick": args.quick,
        },
        pairs=pairs,
        cycles={
            m: {f"{b}{'+ap' if a else ''}": runs for (b, a), runs in per.items()}
            for m, per in results.items()
        },
        plot=figure.name,
        wall_s=time.perf_counter() - start,
        sparseland=entry,
    )
    report_sparseland(data, quick=args.quick)
    print(f"\nwrote {out} and {figure} ({time.perf_counter() - start:.0f} s)")
    print(
        f"accuracy higher with AP in {acc_wins}/{len(pairs)} (model, base) pairs, "
        f"DNR lower in {dnr_wins}/{len(pairs)}"
    )
    print(f"claim: {'holds' if holds else 'does not hold'}: {claim}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

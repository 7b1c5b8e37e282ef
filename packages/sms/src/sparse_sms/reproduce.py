"""Reproduce the central claim of Sparse Model Soups at CPU scale.

Claim (Zimmer et al., ICLR 2024): at equal sparsity, the sparse model soup is at least as good as
its ingredients (mean and best) and beats IMP, even IMP given m× the retraining budget.

Protocol, per task and seed (data fixed, seeds vary the initialisation, batch order and the
ingredients' seeds):

1. split the training set 90/10 into train / validation (official ``get_dataloaders``);
2. pretrain a dense model (SGD, momentum 0.9, weight decay 1e-4, linear LR decay from 0.1: the
   official default ``(Linear, 0.1)``); its LR history gives the retraining peak LR;
3. run, from that same pretrained model, at the preset's sparsity (95% full, 90% in the
   ``short-retrain`` preset and ``--quick``) in P = 3 phases (2 in ``--quick``):
   * IMP: one ingredient per phase (``n_ingredients=1``), E_r epochs per phase;
   * IMP with m× the retraining budget: one ingredient, m·E_r epochs per phase;
   * SMS uniform soup and SMS greedy soup: m = 3 ingredients (different seeds / batch orders),
     E_r epochs each per phase, BN recalibration on 20% of the unshuffled training batches;
   * the final-phase ingredients of the uniform run: their mean and their best (an oracle: the
     highest *test* accuracy, an upper bound on picking one ingredient);
4. for the tasks listed under ``gradual`` (MNIST-1D in the full run), pruning during
   training: gradual magnitude pruning (cubic schedule, 3 pruning steps) with one model vs with
   a 3-ingredient soup at every pruning step, from scratch, same total epochs; and, so that the
   baseline is not limited to the soups' 3 steps, sparsecore's global GMP on the same cubic
   schedule and window pruning at every epoch (``GMP, pruning every epoch``).

Sparseland R5 baseline: ``random (soup's per-layer counts)``, random masks with exactly the
uniform soup's per-layer counts (``sparsecore.evaluation.MatchedRandomPruning``) retrained from
the same pretrained model for the whole retraining budget of one ingredient (P · E_r epochs,
linear decay from the pretraining peak LR); ``IMP`` (global magnitude) is the magnitude row.
The ``sparseland`` entry is anchored on the first task's uniform soup of the first seed.

All retraining uses the LLR schedule (10% cosine warm-up to the pretraining peak LR, then linear
decay to 0). The claim holds iff, on every task, the uniform soup's mean test accuracy is
>= the mean ingredient, >= the best ingredient, > IMP and >= IMP with m× budget.

Usage: ``python benchmarks/reproduce.py [--quick] [--out PATH] [--jobs N]
[--preset full|short-retrain] [--from-raw PATH]``. ``--jobs`` runs (task, seed) pairs in
parallel processes with one thread each; ``--from-raw`` re-tabulates a saved ``*.raw.json``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import multiprocessing
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

import sparse_sms as sms
from sparsecore import GMP
from sparsecore.bench import evaluate, load_task, make_model, train
from sparsecore.evaluation import (
    MatchedRandomPruning,
    Row,
    format_table,
    report_sparseland,
    sparseland_entry,
    write_results,
)
from sparsecore.evaluation.sparseland_entry import layer_weights

Result = dict[str, tuple[float, float, float]]

FULL = {
    "tasks": [
        {"task": "digits", "arch": "resnet", "options": {"width": 8}, "batch": 64, "epochs": 20},
        {"task": "mnist1d", "arch": "convbase", "options": {}, "batch": 128, "epochs": 60},
    ],
    "seeds": [0, 1, 2],
    "sparsity": 0.95,
    "phases": 3,
    "m": 3,
    "retrain_epochs": 8,
    "gradual": ["mnist1d"],
    "gradual_prune_epochs": [12, 24, 36],
}
#: The first full configuration tried (90% sparsity, short retraining: 3 epochs per phase);
#: kept to reproduce the results reported in the README (``--preset short-retrain``).
SHORT_RETRAIN = {
    "tasks": [
        {"task": "digits", "arch": "resnet", "options": {"width": 16}, "batch": 64, "epochs": 20},
        {"task": "mnist1d", "arch": "convbase", "options": {}, "batch": 128, "epochs": 30},
    ],
    "seeds": [0, 1, 2],
    "sparsity": 0.9,
    "phases": 3,
    "m": 3,
    "retrain_epochs": 3,
    "gradual": ["mnist1d"],
    "gradual_prune_epochs": [6, 12, 18],
}
QUICK = {
    "tasks": [
        {"task": "digits", "arch": "resnet", "options": {"width": 8}, "batch": 128, "epochs": 4},
    ],
    "seeds": [0, 1],
    "sparsity": 0.9,
    "phases": 2,
    "m": 2,
    "retrain_epochs": 2,
    "gradual": ["digits"],
    "gradual_prune_epochs": [2, 3],
}


def split(task, fraction: float = 0.1):
    """A fixed 90/10 train/validation split of the task's training set."""
    order = torch.randperm(task.num_train, generator=torch.Generator().manual_seed(12345))
    n_val = max(1, int(fraction * task.num_train))
    val, tr = order[:n_val], order[n_val:]
    train_task = dataclasses.replace(task, x_train=task.x_train[tr], y_train=task.y_train[tr])
    return train_task, task.x_train[val], task.y_train[val]


def sparsity_of(masks: dict[str, torch.Tensor]) -> float:
    total = sum(m.numel() for m in masks.values())
    return 1.0 - sum(int(m.sum()) for m in masks.values()) / total


def run_seed(
    spec: dict, cfg: dict, seed: int, gradual: bool, anchor: bool = False
) -> dict[str, Any]:
    """All variants for one seed: ``{variant: (test accuracy, sparsity, wall seconds)}``.

    With ``anchor``, also ``"_sparseland"``: the Sparseland entry of the uniform soup.
    """
    task = load_task(spec["task"], seed=0)
    train_task, x_val, y_val = split(task)
    x_tr, y_tr = train_task.x_train, train_task.y_train
    batch, epochs = spec["batch"], spec["epochs"]
    out: dict[str, tuple[float, float, float]] = {}

    start = time.perf_counter()
    model = make_model(spec["arch"], task, seed=seed, **spec["options"])
    train(
        model,
        train_task,
        epochs=epochs,
        lr=0.1,
        batch_size=batch,
        momentum=0.9,
        weight_decay=1e-4,
        lr_schedule="linear",
        seed=seed,
        progress=False,
    )
    steps = epochs * math.ceil(train_task.num_train / batch)
    lr_history = [0.1 * (1 - t / steps) for t in range(steps)]
    out["dense (pretrained)"] = (
        evaluate(model, task.x_test, task.y_test),
        0.0,
        time.perf_counter() - start,
    )

    def test_acc(m: torch.nn.Module) -> float:
        return evaluate(m, task.x_test, task.y_test)

    def val_acc(m: torch.nn.Module) -> float:
        return evaluate(m, x_val, y_val)

    train_fn = sms.make_train_fn(x_tr, y_tr, batch_size=batch, lr_history=lr_history)
    bn_batches = sms.batches_of(x_tr, batch)
    base = sms.SMSConfig(
        sparsity=cfg["sparsity"],
        n_phases=cfg["phases"],
        n_ingredients=cfg["m"],
        retrain_epochs=cfg["retrain_epochs"],
        seed=100 * seed,
    )
    runs = {
        "IMP": dict(n_ingredients=1),
        f"IMP ({cfg['m']}x retrain budget)": dict(
            n_ingredients=1, retrain_epochs=cfg["m"] * cfg["retrain_epochs"]
        ),
        "SMS uniform soup": dict(soup="uniform"),
        "SMS greedy soup": dict(soup="greedy"),
    }
    for name, overrides in runs.items():
        t0 = time.perf_counter()
        result = sms.run(
            model,
            train_fn,
            val_acc,
            dataclasses.replace(base, **overrides),
            bn_batches=bn_batches,
            lr_history=lr_history,
        )
        wall = time.perf_counter() - t0
        sparsity = sparsity_of(result.masks)
        out[name] = (test_acc(result.model), sparsity, wall)
        if name == "SMS uniform soup":
            accs = [test_acc(m) for m in result.ingredients]
            out["ingredients (mean)"] = (statistics.fmean(accs), sparsity, wall)
            out["best ingredient (oracle, max test)"] = (max(accs), sparsity, wall)
            soup_model, soup_masks = result.model, result.masks

    # Sparseland R5: random masks with the soup's per-layer counts, retrained the same budget
    t0 = time.perf_counter()
    rand = copy.deepcopy(model)
    method = MatchedRandomPruning(soup_masks, targets=tuple(soup_masks), seed=3000 + seed)
    budget = cfg["phases"] * cfg["retrain_epochs"]
    train(
        rand, train_task, method=method, epochs=budget, lr=0.1, batch_size=batch, momentum=0.9,
        weight_decay=1e-4, lr_schedule="linear", seed=seed + 1, progress=False,
    )  # fmt: skip
    out[RANDOM] = (test_acc(rand), method.masks.sparsity(), time.perf_counter() - t0)
    if anchor:
        label = f"{spec['task']}/{spec['arch']}"
        total = epochs + cfg["phases"] * cfg["m"] * cfg["retrain_epochs"]
        out["_sparseland"] = sparseland_entry(
            soup_model,
            task.x_test[:1],
            masks=soup_masks,
            excluded=[n for n in layer_weights(soup_model) if n not in soup_masks],
            target=cfg["sparsity"],
            allocation="global",
            epochs=total,
            train_examples=train_task.num_train * total,
            baselines={
                "dense": f"{label}: dense (pretrained)",
                "matched_random": f"{label}: {RANDOM}",
                "magnitude": f"{label}: IMP",
            },
            notes=f"anchor: {label} SMS uniform soup, seed {seed}; epochs: pretraining + "
            "P x m x E_r retraining; masked training counted as dense compute",
        )

    if gradual:
        total = epochs
        soups = [("GMP during training", 1), ("GMP + soups at pruning steps", cfg["m"])]
        for name, m in soups:
            t0 = time.perf_counter()
            init = make_model(spec["arch"], task, seed=seed, **spec["options"])
            config = dataclasses.replace(base, n_ingredients=m, max_lr=0.1)
            result = sms.run_gradual(
                init,
                train_fn,
                val_acc,
                config,
                total_epochs=total,
                prune_epochs=cfg["gradual_prune_epochs"],
                bn_batches=bn_batches,
            )
            out[name] = (
                test_acc(result.model),
                sparsity_of(result.masks),
                time.perf_counter() - t0,
            )
        # GMP as usually run: global magnitude pruning on the same cubic schedule over the same
        # window, but at every epoch (not only at the soups' 3 pruning steps), same total epochs
        # and LR (linear decay from 0.1): the baseline is not limited to the soups' step count
        t0 = time.perf_counter()
        init = make_model(spec["arch"], task, seed=seed, **spec["options"])
        per_epoch = math.ceil(train_task.num_train / batch)
        gmp = GMP(
            sparsity=cfg["sparsity"],
            scope="global",
            begin_step=0,
            end_step=cfg["gradual_prune_epochs"][-1] * per_epoch,
            update_every=per_epoch,
            seed=seed,
        )
        train(
            init, train_task, method=gmp, epochs=total, lr=0.1, batch_size=batch, momentum=0.9,
            weight_decay=1e-4, lr_schedule="linear", seed=seed, progress=False,
        )  # fmt: skip
        out["GMP, pruning every epoch"] = (
            test_acc(init),
            gmp.masks.sparsity(),
            time.perf_counter() - t0,
        )
    return out


RANDOM = "random (soup's per-layer counts)"


def _init() -> None:
    torch.set_num_threads(1)


def _job(job: tuple) -> Result:
    spec, cfg, seed, gradual = job
    print(f"[{spec['task']}/{spec['arch']}] seed {seed} ...", file=sys.stderr, flush=True)
    anchor = spec is cfg["tasks"][0] and seed == cfg["seeds"][0]
    return run_seed(spec, cfg, seed, gradual, anchor)


def _gradual_verdicts(label: str, means: dict[str, float]) -> list[tuple[str, str, bool]]:
    soups = means["GMP + soups at pruning steps"]
    return [
        (label, "(extra) gradual soups > GMP", soups > means["GMP during training"]),
        (
            label,
            "(extra) gradual soups > GMP pruning every epoch",
            soups > means["GMP, pruning every epoch"],
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings (< 60 s)")
    from sparsecore.evaluation.paths import default_results_path  # quick: tmp

    parser.add_argument("--out", default=default_results_path(__file__))
    parser.add_argument(
        "--jobs", type=int, default=2, help="parallel (task, seed) runs, 1 thread each"
    )
    parser.add_argument("--preset", choices=("full", "short-retrain"), default="full")
    parser.add_argument(
        "--from-raw", default=None, help="re-tabulate a saved <out>.raw.json instead of running"
    )
    parser.add_argument(
        "--gradual-tasks-only",
        action="store_true",
        help="run only the tasks listed under 'gradual' (every variant)",
    )
    args = parser.parse_args()
    cfg = QUICK if args.quick else (SHORT_RETRAIN if args.preset == "short-retrain" else FULL)
    start = time.perf_counter()
    jobs = [(spec, cfg, seed, spec["task"] in cfg["gradual"]) for spec in cfg["tasks"]
            for seed in cfg["seeds"]]  # fmt: skip
    if args.gradual_tasks_only:
        jobs = [job for job in jobs if job[3]]
    if args.from_raw:
        saved = json.loads(Path(args.from_raw).read_text())
        lookup = {(r["task"], r["seed"]): r["result"] for r in saved}
        done = [lookup[(spec["task"], seed)] for spec, _, seed, _ in jobs]
    elif args.jobs > 1:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(args.jobs, mp_context=context, initializer=_init) as pool:
            done = list(pool.map(_job, jobs))
    else:
        _init()
        done = [_job(job) for job in jobs]
    if not args.from_raw:
        raw = [
            {"task": s["task"], "seed": seed, "result": r}
            for (s, _, seed, _), r in zip(jobs, done, strict=True)
        ]
        Path(args.out).with_suffix(".raw.json").write_text(json.dumps(raw, indent=1))
    rows: list[Row] = []
    verdicts: list[tuple[str, str, bool]] = []
    for spec in cfg["tasks"]:
        label = f"{spec['task']}/{spec['arch']}"
        per_seed = [r for (s, _, _, _), r in zip(jobs, done, strict=True) if s is spec]
        if not per_seed:  # a task left out (--gradual-tasks-only)
            continue
        means = {}
        for variant in (v for v in per_seed[0] if not v.startswith("_")):
            accs = [r[variant][0] for r in per_seed]
            means[variant] = statistics.fmean(accs)
            rows.append(Row(
                variant=f"{label}: {variant}",
                sparsity=statistics.fmean(r[variant][1] for r in per_seed),
                flops_ratio=math.nan, metric="accuracy", mean=means[variant],
                std=statistics.stdev(accs) if len(accs) > 1 else 0.0, seeds=accs,
                wall_s=statistics.fmean(r[variant][2] for r in per_seed),
            ))  # fmt: skip
        soup = means["SMS uniform soup"]
        imp_mx = next(v for k, v in means.items() if k.startswith("IMP ("))
        verdicts += [
            (label, "uniform soup >= mean ingredient", soup >= means["ingredients (mean)"]),
            (label, "uniform soup >= best ingredient (oracle)",
             soup >= means["best ingredient (oracle, max test)"]),
            (label, "uniform soup > IMP", soup > means["IMP"]),
            (label, f"uniform soup >= IMP with {cfg['m']}x budget", soup >= imp_mx),
        ]  # fmt: skip
        if "GMP during training" in means:
            verdicts += _gradual_verdicts(label, means)
    print(format_table(rows))
    print()
    for label, text, ok in verdicts:
        print(f"  [{label}] {text}: {'yes' if ok else 'no'}")
    holds = all(ok for _, text, ok in verdicts if not text.startswith("(extra)"))
    claim = (
        f"At {cfg['sparsity']:.0%} sparsity (P={cfg['phases']} phases, m={cfg['m']} "
        "ingredients), the uniform sparse model soup's mean test accuracy over seeds is >= its "
        "mean and best final-phase ingredient, > IMP and >= IMP with m x the retraining budget, "
        "on every task"
    )
    command = "python benchmarks/reproduce.py" + (" --quick" if args.quick else "")
    command += f" --jobs {args.jobs}"
    if args.preset != "full":
        command += f" --preset {args.preset}"
    if args.gradual_tasks_only:
        command += " --gradual-tasks-only"
        holds = None  # "on every task": not tested by this subset
    entry = next((r["_sparseland"] for r in done if "_sparseland" in r), None)
    data = write_results(
        args.out, "sms", "+".join(s["task"] for s in cfg["tasks"]), claim, holds, rows, command,
        settings={**cfg, "jobs": args.jobs}, subclaims=[
            {"task": label, "claim": text, "holds": ok} for label, text, ok in verdicts
        ], total_wall_s=None if args.from_raw else time.perf_counter() - start,
        sparseland=entry,
    )  # fmt: skip
    report_sparseland(data, quick=args.quick)
    if not args.from_raw:
        print(f"total wall time: {time.perf_counter() - start:.0f} s")
    print(f"claim: {'holds' if holds else 'does not hold'}: {claim}")


if __name__ == "__main__":
    main()

"""The ``list``, ``run``, ``bench`` and ``report`` subcommands of ``sparse``."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import torch

from sparsecore import registry
from sparsecore.cli.common import (
    BASELINES,
    DEFAULT_MODELS,
    applicability,
    check_common,
    fixed_sparsity,
    one_line,
    parse_sparsity,
    run_variant,
)

__all__ = ["cmd_bench", "cmd_list", "cmd_report", "cmd_run"]


def cmd_list(args: argparse.Namespace) -> int:
    """``sparse list``: installed methods, their patterns and the tasks they apply to."""
    from sparsecore.bench import TASKS, make_model, task_spec

    models = {t: make_model(DEFAULT_MODELS[t], task_spec(t)) for t in TASKS}
    lines = [("method", "class", "patterns", "calibration", "tasks")]
    for name, cls in registry.available_methods().items():
        patterns = ",".join(p.__name__ for p in cls.supported_patterns)
        reasons = {t: applicability(cls, t, models[t]) for t in TASKS}
        tasks = [t for t, reason in reasons.items() if reason is None]
        if not tasks and len(set(reasons.values())) == 1:
            tasks = [f"({reasons['mnist1d']})"]
        origin = f"{cls.__module__}:{cls.__qualname__}"
        calib = "yes" if cls.needs_calibration else "no"
        lines.append((name, origin, patterns, calib, " ".join(tasks) or "-"))
    widths = [max(len(line[i]) for line in lines) for i in range(5)]
    for k, line in enumerate(lines):
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))
    broken = getattr(args, "plugin_log", None)
    if broken is not None and broken.messages:
        print("\nplugins that failed to load:")
        for message in broken.messages:
            print(f"  {message}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """``sparse run METHOD``: train over seeds, print the table, save the models."""
    from sparsecore.bench import make_model, task_spec
    from sparsecore.evaluation import format_table, over_seeds, write_results

    check_common(args)
    sparsity = parse_sparsity(args.sparsity)
    name = args.method.lower()
    methods = registry.available_methods()
    if name != "dense":
        if name not in methods:
            raise ValueError(f"unknown method {args.method!r}; installed: {', '.join(methods)}")
        model = make_model(args.model, task_spec(args.task))
        reason = applicability(methods[name], args.task, model)
        if reason:
            raise ValueError(f"method {name!r} does not apply to task {args.task!r}: {reason}")
        if fixed_sparsity(methods[name]):
            sparsity = None
    out = Path(args.out or f"sparse-results/{name}-{args.task}")
    out.mkdir(parents=True, exist_ok=True)
    saved, macs = [], (0, 0)

    def one(seed: int) -> tuple[float, dict[str, Any]]:
        nonlocal macs
        accuracy, extras = run_variant(name, sparsity, seed, args)
        tag = "dense" if name == "dense" else "default" if sparsity is None else f"s{sparsity:g}"
        path = out / f"{name}-{args.task}-{tag}-seed{seed}.pt"
        torch.save(extras.pop("model").state_dict(), path)
        saved.append(path)
        macs = extras.pop("macs")
        return accuracy, extras

    row = over_seeds(name, range(args.seeds), one)
    print(format_table([row]))
    print(f"MACs per example: dense {macs[0]:,}, effective {macs[1]:,}")
    command = "sparse " + " ".join(args.argv)
    write_results(
        out / "results.json",
        name,
        args.task,
        f"sparse run {name}",
        None,
        [row],
        command,
        model=args.model,
        epochs=args.epochs,
    )
    print(f"saved {len(saved)} model(s) and results.json in {out}")
    return 0


def _bench_plan(args: argparse.Namespace) -> list[tuple[str, float | None, str | None]]:
    from sparsecore.bench import make_model, task_spec

    methods = registry.available_methods()
    if args.methods:
        chosen = [m.strip().lower() for m in args.methods.split(",") if m.strip()]
        unknown = [m for m in chosen if m not in methods and m != "dense"]
        if unknown:
            raise ValueError(
                f"unknown method(s) {', '.join(unknown)}; installed: {', '.join(methods)}"
            )
    else:
        chosen = [b for b in BASELINES if b in methods]
        chosen += [m for m in methods if m not in BASELINES]
    sparsities = [parse_sparsity(s) for s in args.sparsities.split(",") if s.strip()]
    if not sparsities:
        raise ValueError("--sparsities is empty")
    model = make_model(args.model, task_spec(args.task))
    plan: list[tuple[str, float | None, str | None]] = [("dense", None, None)]
    for name in (m for m in chosen if m != "dense"):
        cls = methods[name]
        reason = applicability(cls, args.task, model)
        if reason:
            plan.append((name, None, f"skipped: {reason}"))
        elif fixed_sparsity(cls):
            plan.append((name, None, None))
        else:
            plan.extend((name, s, None) for s in sparsities)
    return plan


def cmd_bench(args: argparse.Namespace) -> int:
    """``sparse bench``: dense + baselines + every applicable method; JSON, PNG and a table."""
    from tqdm.auto import tqdm

    from sparsecore.evaluation import failed_row, format_table, over_seeds, plot_rows, write_results

    if args.task == "stdlib-lm":  # one-shot LM rows: sparsecore.bench.lm_bench
        from sparsecore.bench.lm_bench import bench_command

        return bench_command(args)
    check_common(args)
    plan = _bench_plan(args)
    out = Path(args.out or f"sparse-results/bench-{args.task}")
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    bar = tqdm(plan, desc="bench", disable=not args.progress)
    for name, sparsity, skip in bar:
        bar.set_postfix_str(f"{name} {'' if sparsity is None else sparsity}")
        if skip:
            rows.append(failed_row(name, skip, math.nan if sparsity is None else sparsity))
            continue

        def one(seed: int, name: str = name, sparsity: float | None = sparsity) -> Any:
            accuracy, extras = run_variant(name, sparsity, seed, args, args.max_run_seconds)
            extras.pop("model"), extras.pop("macs")
            return accuracy, extras

        try:
            rows.append(over_seeds(name, range(args.seeds), one))
        except Exception as err:  # one broken method must not stop the bench
            rows.append(failed_row(name, one_line(err), math.nan if sparsity is None else sparsity))
    bar.close()
    print(format_table(rows))
    command = "sparse " + " ".join(args.argv)
    write_results(
        out / "results.json",
        "bench",
        args.task,
        "benchmark (no claim tested)",
        None,
        rows,
        command,
        model=args.model,
        epochs=args.epochs,
    )
    plot_rows(
        rows, out / "accuracy_vs_sparsity.png", f"{args.task} / {args.model}, {args.epochs} ep"
    )
    print(f"wrote {out / 'results.json'} and {out / 'accuracy_vs_sparsity.png'}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """``sparse report CHECKPOINT``: the sparsity report of a saved state_dict."""
    from sparsecore.evaluation import SparsityReport, load_checkpoint
    from sparsecore.patterns import parse_pattern

    state = load_checkpoint(args.checkpoint)
    report = SparsityReport.from_state_dict(state, parse_pattern(args.pattern))
    print(report)
    return 0

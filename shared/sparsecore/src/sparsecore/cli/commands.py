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
    method_options_for,
    one_line,
    parse_sparsity,
    run_variant,
)
from sparsecore.cli.output import (
    atomic_write,
    check_finite_model,
    check_finite_value,
    check_output_folder,
    create_output_folder,
)
from sparsecore.taxonomy import taxonomy_rows

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
    print("\nSparseland taxonomy (Liu & Wang, arXiv 2302.02596):")
    _print_table(taxonomy_rows(registry.available_methods()))
    procedures = registry.available_procedures()
    if procedures:
        print("\nprocedures (they make something other than the weights sparse):")
        rows = taxonomy_rows(procedures)
        for row, cls in zip(rows, procedures.values(), strict=True):
            row["class"] = f"{cls.__module__}:{cls.__qualname__}"
            row["bench"] = getattr(cls, "bench_scenario", None) or "-"
        _print_table(rows)
    broken = getattr(args, "plugin_log", None)
    if broken is not None and broken.messages:
        print("\nplugins that failed to load:")
        for message in broken.messages:
            print(f"  {message}")
    return 0


def _print_table(rows: list[dict[str, str]]) -> None:
    """Rows of equal keys as an aligned text table with a header rule."""
    if not rows:
        return
    keys = list(rows[0])
    widths = [max(len(k), *(len(r[k]) for r in rows)) for k in keys]
    print("  ".join(k.ljust(w) for k, w in zip(keys, widths, strict=True)).rstrip())
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(r[k].ljust(w) for k, w in zip(keys, widths, strict=True)).rstrip())


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
        args.method_options = method_options_for(args, [name], methods)
    out = Path(args.out or f"sparse-results/{name}-{args.task}")
    check_output_folder(out, args.overwrite)  # before training; creates nothing
    models: dict[Path, dict[str, torch.Tensor]] = {}
    macs = (0, 0)

    def one(seed: int) -> tuple[float, dict[str, Any]]:
        nonlocal macs
        accuracy, extras = run_variant(name, sparsity, seed, args)
        model = extras.pop("model")
        check_finite_model(model, f"seed {seed}")
        check_finite_value(accuracy, f"seed {seed}")
        tag = "dense" if name == "dense" else "default" if sparsity is None else f"s{sparsity:g}"
        models[out / f"{name}-{args.task}-{tag}-seed{seed}.pt"] = model.state_dict()
        macs = extras.pop("macs")
        return accuracy, extras

    row = over_seeds(name, range(args.seeds), one)
    print(format_table([row]))
    print(f"MACs per example: dense {macs[0]:,}, effective {macs[1]:,}")
    command = "sparse " + " ".join(args.argv)
    # Everything trained and finite: only now the folder is created and written (atomically).
    create_output_folder(out, args.overwrite)
    for path, state in models.items():
        atomic_write(path, lambda tmp, state=state: torch.save(state, tmp))
    atomic_write(
        out / "results.json",
        lambda tmp: write_results(
            tmp,
            name,
            args.task,
            f"sparse run {name}",
            None,
            [row],
            command,
            model=args.model,
            epochs=args.epochs,
        ),
    )
    print(f"saved {len(models)} model(s) and results.json in {out}")
    return 0


def _bench_groups(args: argparse.Namespace) -> list[Any]:
    from sparsecore.bench.scenarios import plan_bench, scenario_names

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
    args.sparsity_list = (
        [parse_sparsity(s) for s in args.sparsities.split(",") if s.strip()]
        if args.sparsities
        else None
    )
    if args.sparsities is not None and not args.sparsity_list:
        raise ValueError("--sparsities is empty")
    args.method_options = method_options_for(args, [m for m in chosen if m != "dense"], methods)
    args.scenario_filter = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    known = scenario_names()
    unknown = [s for s in args.scenario_filter if s not in known]
    if unknown:
        raise ValueError(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return plan_bench(args, methods, chosen, BASELINES)


def cmd_bench(args: argparse.Namespace) -> int:
    """``sparse bench``: each method in its scenario beside dense and the core baselines."""
    from tqdm.auto import tqdm

    from sparsecore.bench.scenarios import run_planned
    from sparsecore.evaluation import failed_row, format_table, over_seeds, plot_rows, write_results

    if args.task == "stdlib-lm":  # one-shot LM rows: sparsecore.bench.lm_bench
        from sparsecore.bench.lm_bench import bench_command

        return bench_command(args)
    epochs, seeds = args.epochs, args.seeds
    args.epochs, args.seeds = args.epochs or 1, args.seeds or 1  # validated; scenarios fill them
    check_common(args)
    args.epochs, args.seeds = epochs, seeds
    methods = registry.available_methods()
    groups = _bench_groups(args)
    out = Path(args.out or f"sparse-results/bench-{args.task}")
    check_output_folder(out, args.overwrite)  # before training; creates nothing
    all_rows: list[Any] = []
    figures: list[tuple[Path, list[Any], str]] = []
    sections: list[dict[str, Any]] = []
    total = sum(len(g.plan) for g in groups)
    bar = tqdm(total=total, desc="bench", disable=not args.progress)
    for group in groups:
        rows = []
        scenario = group.scenario
        if scenario.runner is not None and all(skip for _, _, skip in group.plan):
            rows = [failed_row(n, skip or "") for n, _, skip in group.plan]
            bar.update(len(group.plan))
        elif scenario.runner is not None:  # a custom scenario (e.g. a language-model task)
            bar.set_postfix_str(scenario.name)
            variants = [(n, s) for n, s, skip in group.plan if not skip]
            try:
                rows = list(scenario.runner(scenario, variants, group.args))
            except Exception as err:  # one broken scenario must not stop the bench
                rows = [failed_row(n, one_line(err)) for n, _ in variants]
            rows += [failed_row(n, skip) for n, _, skip in group.plan if skip]
            group.notes.extend(scenario.options.pop("notes", []))
            bar.update(len(group.plan))
        for name, sparsity, skip in [] if scenario.runner is not None else group.plan:
            bar.set_postfix_str(f"{scenario.name}: {name} {'' if sparsity is None else sparsity}")
            bar.update(1)
            if skip:
                rows.append(failed_row(name, skip, math.nan if sparsity is None else sparsity))
                continue

            def one(
                seed: int, name: str = name, sparsity: float | None = sparsity, group: Any = group
            ) -> Any:
                accuracy, extras = run_planned(
                    group, name, sparsity, seed, methods, args.max_run_seconds
                )
                check_finite_model(extras.pop("model"), f"seed {seed}")  # a diverged run fails
                check_finite_value(accuracy, f"seed {seed}")
                extras.pop("macs")
                return accuracy, extras

            try:
                rows.append(over_seeds(name, range(group.args.seeds), one))
            except Exception as err:  # one broken method must not stop the bench
                reason = one_line(err)
                rows.append(failed_row(name, reason, math.nan if sparsity is None else sparsity))
        figure = out / f"{scenario.name}.png"
        title = scenario.title
        if scenario.runner is None:
            title += f" ({group.args.epochs} ep, {group.args.seeds} seed(s))"
        figures.append((figure, rows, title))
        sections.append(
            {
                "scenario": scenario.name,
                "title": scenario.title,
                "task": group.args.task,
                "model": group.args.model,
                "epochs": group.args.epochs,
                "seeds": group.args.seeds,
                "figure": figure.name,
                "notes": group.notes,
                "variants": [row.variant for row in rows],
            }
        )
        all_rows.extend(rows)
        bar.clear()
        print(f"\n== {scenario.name}: {title}")
        print(format_table(rows))
        for note in group.notes:
            print(f"note: {note}")
    bar.close()
    command = "sparse " + " ".join(args.argv)
    create_output_folder(out, args.overwrite)
    atomic_write(
        out / "results.json",
        lambda tmp: write_results(
            tmp,
            "bench",
            args.task,
            "benchmark (no claim tested)",
            None,
            all_rows,
            command,
            scenarios=sections,
            quick=bool(args.quick),
        ),
    )
    for figure, rows, title in figures:
        atomic_write(figure, lambda tmp, rows=rows, title=title: plot_rows(rows, tmp, title))
    print(f"wrote {out / 'results.json'} and one figure per scenario in {out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """``sparse report CHECKPOINT``: the sparsity report of a saved state_dict."""
    from sparsecore.evaluation import SparsityReport, load_checkpoint
    from sparsecore.patterns import parse_pattern

    state = load_checkpoint(args.checkpoint)
    pattern = parse_pattern(args.pattern)
    report = SparsityReport.from_state_dict(state, pattern)
    print(report)
    if not report.valid:
        bad = [t.name for t in report.tensors if not t.valid]
        print(f"sparse: {len(bad)} tensor(s) do not respect {pattern}: {', '.join(bad[:5])}")
        return 1
    return 0

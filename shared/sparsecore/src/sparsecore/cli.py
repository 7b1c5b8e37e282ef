"""The ``sparse`` command: list methods, train one, benchmark them all, report a checkpoint.

.. code-block:: console

    $ sparse list
    $ sparse run rigl --task mnist1d --sparsity 0.9 --seeds 3 --epochs 20 --out runs/rigl
    $ sparse bench                      # dense + every applicable method, < 3 min on 2 cores
    $ sparse report runs/rigl/rigl-mnist1d-s0.9-seed0.pt

Methods come from :func:`sparsecore.available_methods` (the ``sparsecore.methods`` entry points).
A method applies to a task when its class does not restrict ``tasks`` (an optional ``ClassVar``
of task names) and its default pattern fits every target of the task's default model. Bad input
exits with status 1 (2 for a malformed command line) and one line on stderr; set
``SPARSE_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import torch

from sparsecore import __version__
from sparsecore.bench.train import applicability, build_method, fixed_sparsity
from sparsecore.registry import available_methods

__all__ = ["DEFAULT_MODELS", "applicability", "build_method", "main", "run_variant"]

#: Model used for each task unless ``--model`` says otherwise.
DEFAULT_MODELS = {"mnist1d": "mlp", "mnist1d-large": "mlp", "digits": "resnet"}
#: Baselines, in table order; every other applicable method follows alphabetically.
BASELINES = ("magnitude", "random", "snip", "gmp", "set", "rigl")


class _TimeLimit(Exception):
    pass


class _PluginLog(logging.Handler):
    """Collects the registry's warnings (plugins that fail to load) instead of printing them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message not in self.messages:
            self.messages.append(message)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"sparse: error: {message} (see sparse --help)\n")


def run_variant(
    name: str, sparsity: float | None, seed: int, args: argparse.Namespace, time_limit: float = 0
) -> tuple[float, dict[str, Any]]:
    """Train one variant for one seed; returns ``(accuracy, extras)`` for ``over_seeds``.

    ``extras`` holds ``sparsity``, ``flops_ratio``, ``wall_s``, ``macs`` and the finalized
    ``model``.

    Args:
        name: ``"dense"`` or a method name.
        sparsity: Target sparsity (``None``: the method's default).
        seed: Seed of the model, the method and the training run.
        args: Parsed options (``task``, ``model``, ``epochs``, ``lr``, ``batch_size``,
            ``progress``).
        time_limit: Abort the run after this many seconds of process CPU time (0: no limit).
            CPU time, not wall time, so that a busy machine does not fail runs.
    """
    import time

    from sparsecore.bench import load_task, make_model, train
    from sparsecore.evaluation import count_flops

    task = load_task(args.task)
    model = make_model(args.model, task, seed=seed)
    example = task.x_test[:1]
    dense_macs = count_flops(model, example).dense
    method = None
    if name != "dense":
        steps = args.epochs * math.ceil(task.num_train / args.batch_size)
        method = build_method(
            available_methods()[name], sparsity, seed, steps, input_shape=task.input_shape
        )
    start = time.process_time()

    def guard(step: int, _model: torch.nn.Module) -> None:
        if time_limit and time.process_time() - start > time_limit:
            raise _TimeLimit(f"CPU time limit of {time_limit:g} s exceeded at step {step}")

    result = train(
        model,
        task,
        method,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        seed=seed,
        progress=args.progress,
        callbacks=(guard,),
    )
    if method is not None:
        model = method.finalize()
    macs = count_flops(model, example)
    extras = {
        "sparsity": result.sparsity,
        "flops_ratio": macs.effective / dense_macs,
        "wall_s": result.wall_s,
        "macs": (macs.dense, macs.effective),
        "model": model,
    }
    return result.accuracy, extras


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _parse_sparsity(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"sparsity must be a number, got {text!r}") from None
    if math.isnan(value) or not 0.0 < value < 1.0:
        raise ValueError(f"sparsity must lie in (0, 1), got {text}")
    return value


def _check_common(args: argparse.Namespace) -> None:
    from sparsecore.bench import MODELS, TASKS, make_model, task_spec

    args.task = args.task.strip().lower()
    if args.task not in TASKS:
        raise ValueError(f"unknown task {args.task!r}; available: {', '.join(TASKS)}")
    args.model = (args.model or DEFAULT_MODELS[args.task]).lower()
    if args.model not in MODELS:
        raise ValueError(f"unknown model {args.model!r}; available: {', '.join(MODELS)}")
    if args.epochs < 1 or args.seeds < 1 or args.batch_size < 1 or not args.lr > 0:
        raise ValueError("--epochs, --seeds, --batch-size and --lr must be positive")
    make_model(args.model, task_spec(args.task))  # raises if the model does not fit the task
    if args.threads:
        torch.set_num_threads(args.threads)


def cmd_list(args: argparse.Namespace) -> int:
    """``sparse list``: installed methods, their patterns and the tasks they apply to."""
    from sparsecore.bench import TASKS, make_model, task_spec

    models = {t: make_model(DEFAULT_MODELS[t], task_spec(t)) for t in TASKS}
    lines = [("method", "class", "patterns", "calibration", "tasks")]
    for name, cls in available_methods().items():
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

    _check_common(args)
    sparsity = _parse_sparsity(args.sparsity)
    name = args.method.lower()
    methods = available_methods()
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

    methods = available_methods()
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
    sparsities = [_parse_sparsity(s) for s in args.sparsities.split(",") if s.strip()]
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

    _check_common(args)
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
            rows.append(
                failed_row(name, _one_line(err), math.nan if sparsity is None else sparsity)
            )
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


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sparse", description="Sparse training and pruning methods.")
    parser.add_argument("--version", action="version", version=f"sparse (sparsecore {__version__})")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("list", help="installed methods, patterns, tasks").set_defaults(func=cmd_list)

    def training(p: argparse.ArgumentParser, epochs: int, seeds: int) -> None:
        p.add_argument("--task", default="mnist1d", help="mnist1d | mnist1d-large | digits")
        p.add_argument("--model", default=None, help="mlp | convbase | resnet (default per task)")
        p.add_argument("--epochs", type=int, default=epochs)
        p.add_argument("--seeds", type=int, default=seeds, help="seeds 0..N-1")
        p.add_argument("--lr", type=float, default=0.1)
        p.add_argument("--batch-size", type=int, default=128)
        p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch default)")
        p.add_argument("--out", default=None, help="output folder")
        p.add_argument("--no-progress", dest="progress", action="store_false")

    run = sub.add_parser("run", help="train one method over seeds and save the models")
    run.add_argument("method", help="a method from `sparse list`, or dense")
    run.add_argument("--sparsity", default="0.9")
    training(run, epochs=20, seeds=3)
    run.set_defaults(func=cmd_run)
    bench = sub.add_parser("bench", help="dense + baselines + installed methods; JSON + PNG")
    bench.add_argument("--methods", default="", help="comma-separated (default: all applicable)")
    bench.add_argument("--sparsities", default="0.5,0.9,0.95")
    bench.add_argument(
        "--max-run-seconds", type=float, default=60.0, help="fail runs over this CPU time (0: none)"
    )
    training(bench, epochs=20, seeds=1)
    bench.set_defaults(func=cmd_bench)
    report = sub.add_parser("report", help="sparsity report of a saved state_dict")
    report.add_argument("checkpoint")
    report.add_argument("--pattern", default="unstructured", help="pattern to validate, e.g. 2:4")
    report.set_defaults(func=cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sparse`` console script.

    Args:
        argv: Arguments without the program name (default ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 1 on bad input or a failed run (one line on stderr), 2 on
        a malformed command line, 130 when interrupted.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    args.argv = argv
    # Broken plugins are listed by `sparse list`, not printed in the middle of other output.
    registry_log = logging.getLogger("sparsecore.method")
    args.plugin_log, propagate = _PluginLog(), registry_log.propagate
    registry_log.addHandler(args.plugin_log)
    registry_log.propagate = bool(os.environ.get("SPARSE_DEBUG"))
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("sparse: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, FileNotFoundError, RuntimeError, OSError, KeyError) as err:
        if os.environ.get("SPARSE_DEBUG"):
            raise
        print(f"sparse: error: {_one_line(err)}", file=sys.stderr)
        return 1
    finally:
        registry_log.removeHandler(args.plugin_log)
        registry_log.propagate = propagate


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

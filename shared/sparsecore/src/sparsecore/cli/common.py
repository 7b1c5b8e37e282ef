"""Helpers shared by the ``sparse`` subcommands: parsing, checks and one training run."""

from __future__ import annotations

import argparse
import logging
import math
from typing import Any, NoReturn

import torch

from sparsecore import registry
from sparsecore.bench.train import applicability, build_method, fixed_sparsity

__all__ = [
    "BASELINES",
    "DEFAULT_MODELS",
    "applicability",
    "build_method",
    "check_common",
    "fixed_sparsity",
    "method_options_for",
    "one_line",
    "parse_sparsity",
    "run_variant",
]

#: Model used for each task unless ``--model`` says otherwise.
DEFAULT_MODELS = {"mnist1d": "mlp", "mnist1d-large": "mlp", "digits": "resnet"}
#: Baselines, in table order; every other applicable method follows alphabetically.
BASELINES = ("magnitude", "random", "snip", "gmp", "set", "rigl")


class TimeLimit(Exception):
    pass


class PluginLog(logging.Handler):
    """Collects the registry's warnings (plugins that fail to load) instead of printing them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message not in self.messages:
            self.messages.append(message)


class Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

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
        options = getattr(args, "method_options", {}).get(name)
        method = build_method(
            registry.get_method(name), sparsity, seed, steps, task.input_shape, options
        )
    start = time.process_time()

    def guard(step: int, _model: torch.nn.Module) -> None:
        if time_limit and time.process_time() - start > time_limit:
            raise TimeLimit(f"CPU time limit of {time_limit:g} s exceeded at step {step}")

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


def method_options_for(
    args: argparse.Namespace, names: list[str], methods: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """``--set`` / ``--config`` options per method, checked against each method's config.

    With several methods an option applies to those whose config has the field; an option no
    chosen method has is an error. Each method's config is built once with its options (and
    the bench's fitted schedule), so a bad value fails here, naming the field, before any run.
    """
    from sparsecore.options import method_options

    sets = list(getattr(args, "set", None) or [])
    config_file = getattr(args, "config", None)
    if not sets and config_file is None:
        return {}
    names = [n for n in names if n in methods]
    if not names:
        raise ValueError("--set / --config need a method (dense has no options)")
    out: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    for name in names:
        cls = methods[name]
        try:
            options = method_options(cls.config_class, sets, config_file)
        except ValueError as err:
            if len(names) == 1:
                raise ValueError(f"{name}: {err}") from None
            errors[name] = str(err)
            continue
        build_method(cls, None, 0, 100, None, options)  # validates the values
        out[name] = options
    if not out:
        raise ValueError(f"no chosen method accepts these options: {next(iter(errors.values()))}")
    return out


def one_line(err: BaseException) -> str:
    """An error as one line of at most 300 characters."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def parse_sparsity(text: str) -> float:
    """A sparsity from the command line, in (0, 1), or a ``ValueError``."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"sparsity must be a number, got {text!r}") from None
    if math.isnan(value) or not 0.0 < value < 1.0:
        raise ValueError(f"sparsity must lie in (0, 1), got {text}")
    return value


def check_common(args: argparse.Namespace) -> None:
    """Validate the training options (task, model, epochs, ...) before anything runs."""
    from sparsecore.bench import MODELS, TASKS, make_model, task_spec

    args.task = args.task.strip().lower()
    if args.task not in TASKS:
        raise ValueError(f"unknown task {args.task!r}; available: {', '.join(TASKS)}")
    args.model = (args.model or DEFAULT_MODELS[args.task]).lower()
    if args.model not in MODELS:
        raise ValueError(f"unknown model {args.model!r}; available: {', '.join(MODELS)}")
    if args.epochs < 1 or args.seeds < 1 or args.batch_size < 1 or not args.lr > 0:
        raise ValueError("--epochs, --seeds, --batch-size and --lr must be positive")
    if not math.isfinite(args.lr):
        raise ValueError(f"--lr must be finite, got {args.lr}")
    limit = getattr(args, "max_run_seconds", 0.0)
    if not (math.isfinite(limit) and limit >= 0):
        raise ValueError(f"--max-run-seconds must be >= 0 (0: no limit), got {limit}")
    make_model(args.model, task_spec(args.task))  # raises if the model does not fit the task
    if args.threads:
        torch.set_num_threads(args.threads)

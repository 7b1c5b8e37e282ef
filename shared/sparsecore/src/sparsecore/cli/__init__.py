"""The ``sparse`` command: list methods, train one, benchmark them all, report a checkpoint.

```console
$ sparse list
$ sparse run rigl --task mnist1d --sparsity 0.9 --seeds 3 --epochs 20 --out runs/rigl
$ sparse bench                      # dense + every applicable method, < 3 min on 2 cores
$ sparse report runs/rigl/rigl-mnist1d-s0.9-seed0.pt
```

Methods come from `sparsecore.available_methods` (the ``sparsecore.methods`` entry points).
A method applies to a task when its class does not restrict ``tasks`` (an optional ``ClassVar``
of task names) and its default pattern fits every target of the task's default model. Bad input
exits with status 1 (2 for a malformed command line) and one line on stderr; set
``SPARSE_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from sparsecore import __version__
from sparsecore.cli import oneshot, reproduce
from sparsecore.cli.commands import cmd_bench, cmd_list, cmd_report, cmd_run
from sparsecore.cli.common import (
    DEFAULT_MODELS,
    Parser,
    PluginLog,
    applicability,
    build_method,
    one_line,
    run_variant,
)

__all__ = ["DEFAULT_MODELS", "applicability", "build_method", "main", "run_variant"]


def _parser() -> argparse.ArgumentParser:
    parser = Parser(prog="sparse", description="Sparse training and pruning methods.")
    parser.add_argument("--version", action="version", version=f"sparse (sparsecore {__version__})")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    sub.add_parser("list", help="installed methods, patterns, tasks").set_defaults(func=cmd_list)

    def training(p: argparse.ArgumentParser, epochs: int | None, seeds: int | None) -> None:
        per = " (default: the scenario's)" if epochs is None else ""
        p.add_argument("--task", default="mnist1d", help="mnist1d | mnist1d-large | digits")
        p.add_argument("--model", default=None, help="mlp | convbase | resnet (default per task)")
        p.add_argument("--epochs", type=int, default=epochs, help=f"training epochs{per}")
        p.add_argument("--seeds", type=int, default=seeds, help=f"seeds 0..N-1{per}")
        p.add_argument("--lr", type=float, default=0.1, help="peak learning rate")
        p.add_argument("--batch-size", type=int, default=128, help="training batch size")
        p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch default)")
        p.add_argument("--out", default=None, help="output folder (new or empty)")
        p.add_argument(
            "--overwrite",
            action="store_true",
            help="accept a non-empty --out: replace the *.pt / results.json / *.png files in it",
        )
        p.add_argument("--no-progress", dest="progress", action="store_false", help="no bars")
        p.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="FIELD=VALUE",
            help="method config option, repeatable (e.g. --set drop_fraction=0.5)",
        )
        p.add_argument("--config", default=None, help="JSON or TOML file of method options")

    run = sub.add_parser("run", help="train one method over seeds and save the models")
    run.add_argument("method", help="a method from `sparse list`, or dense")
    run.add_argument("--sparsity", default="0.9", help="target sparsity in (0, 1)")
    training(run, epochs=20, seeds=3)
    run.set_defaults(func=cmd_run)
    bench = sub.add_parser(
        "bench", help="each method in its scenario beside dense and baselines; JSON + PNGs"
    )
    bench.add_argument("--methods", default="", help="comma-separated (default: all installed)")
    bench.add_argument(
        "--scenarios", default="", help="comma-separated scenario names (default: all)"
    )
    bench.add_argument(
        "--sparsities", default=None, help="comma-separated (default: the scenario's)"
    )
    bench.add_argument("--quick", action="store_true", help="1 seed, few epochs, one sparsity")
    bench.add_argument(
        "--max-run-seconds", type=float, default=60.0, help="fail runs over this CPU time (0: none)"
    )
    training(bench, epochs=None, seeds=None)
    bench.set_defaults(func=cmd_bench)
    report = sub.add_parser("report", help="sparsity report of a saved state_dict")
    report.add_argument("checkpoint")
    report.add_argument("--pattern", default="unstructured", help="pattern to validate, e.g. 2:4")
    report.set_defaults(func=cmd_report)
    reproduce.add_parser(sub)
    oneshot.register(sub)
    return parser


#: Optional modules and the ``sparse-core`` extra that installs them.
EXTRAS = {
    "tqdm": "bench",
    "mnist1d": "bench",
    "sklearn": "bench",
    "matplotlib": "bench",
    "transformers": "hf",
    "accelerate": "hf",
    "torch_pruning": "structured",
}


def missing_extra_message(err: ModuleNotFoundError, command: str) -> str:
    """One line naming the extra that provides the missing module (or the module itself)."""
    module = (err.name or "").split(".")[0]
    extra = EXTRAS.get(module)
    if extra is None:
        return f"`sparse {command}` needs the module {module!r}, which is not installed"
    return (
        f"`sparse {command}` needs the {extra!r} extra (missing module {module!r}): "
        f"pip install 'sparse-core[{extra}]'"
    )


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
    args.plugin_log, propagate = PluginLog(), registry_log.propagate
    registry_log.addHandler(args.plugin_log)
    registry_log.propagate = bool(os.environ.get("SPARSE_DEBUG"))
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("sparse: interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as err:  # an optional extra is not installed
        if os.environ.get("SPARSE_DEBUG"):
            raise
        print(f"sparse: error: {missing_extra_message(err, args.command)}", file=sys.stderr)
        return 1
    except (ValueError, TypeError, FileNotFoundError, RuntimeError, OSError, KeyError) as err:
        if os.environ.get("SPARSE_DEBUG"):
            raise
        print(f"sparse: error: {one_line(err)}", file=sys.stderr)
        return 1
    finally:
        registry_log.removeHandler(args.plugin_log)
        registry_log.propagate = propagate

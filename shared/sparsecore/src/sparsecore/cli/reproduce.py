"""`sparse reproduce NAME [--quick]`: run a package's reproduction and report its claim.

The reproduction is found in this order:

1. the module `sparse_<name>.reproduce` (shipped inside the wheel);
2. `benchmarks/reproduce.py` of a source checkout, located from the package's `__file__`
   (`packages/<name>/src/sparse_<name>/__init__.py` -> `packages/<name>/benchmarks/`).

Its `main(argv)` (or `main()` reading `sys.argv`) runs; it prints its table and writes the
results JSON (`--out`; with `--quick` and no `--out` a temporary file, never the committed
results, see `sparsecore.evaluation.paths`). The exit status comes from that JSON's `holds`:
0 when the claim holds (or none is tested), 1 when it does not, and the script's own non-zero
status if it failed.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import json
import shlex
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["add_parser", "call_main", "cmd_reproduce", "find_reproduction"]


def _package_name(name: str) -> str:
    key = name.strip().lower().replace("-", "_")
    key = key.removeprefix("sparse_")
    if not key.isidentifier():
        raise ValueError(f"reproduce: {name!r} is not a package name (e.g. granet)")
    return f"sparse_{key}"


def find_reproduction(name: str) -> tuple[ModuleType, str]:
    """The reproduction module of package `name` and where it came from.

    Raises:
        ValueError: The package is not installed or ships no reproduction.
    """
    package = _package_name(name)
    try:
        return importlib.import_module(f"{package}.reproduce"), f"{package}.reproduce"
    except ModuleNotFoundError as err:
        if err.name not in (package, f"{package}.reproduce"):
            raise
    try:
        module = importlib.import_module(package)
    except ModuleNotFoundError:
        raise ValueError(
            f"reproduce: package {package!r} is not installed (pip install "
            f"sparse-{package.removeprefix('sparse_')})"
        ) from None
    init = Path(getattr(module, "__file__", "") or "")
    script = init.parent.parent.parent / "benchmarks" / "reproduce.py"
    if not script.is_file():
        raise ValueError(
            f"reproduce: {package} ships no reproduction (no {package}.reproduce module and no "
            f"{script})"
        )
    spec = importlib.util.spec_from_file_location(f"_{package}_reproduce", script)
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = loaded
    spec.loader.exec_module(loaded)
    return loaded, str(script)


def call_main(main: Callable[..., Any], argv: list[str], origin: str) -> Any:
    """Call a reproduction's `main` with `argv` (as its argument, or in `sys.argv`)."""
    saved = sys.argv
    sys.argv = [origin, *argv]  # for scripts whose main() reads sys.argv
    try:
        if inspect.signature(main).parameters:
            return main(argv)
        return main()
    finally:
        sys.argv = saved


def cmd_reproduce(args: argparse.Namespace) -> int:
    """Run the reproduction; 0 if its claim holds, 1 if not."""
    module, origin = find_reproduction(args.name)
    main = getattr(module, "main", None)
    if not callable(main):
        raise ValueError(f"reproduce: {origin} has no main()")
    out = Path(args.out) if args.out else None
    if out is None:
        folder = Path(tempfile.gettempdir()) / "sparse-reproduce"
        folder.mkdir(parents=True, exist_ok=True)
        suffix = "-quick" if args.quick else ""
        out = folder / f"{_package_name(args.name).removeprefix('sparse_')}{suffix}.json"
    argv = [*(["--quick"] if args.quick else []), "--out", str(out), *args.extra]
    print(f"sparse reproduce: {origin} {' '.join(argv)}")
    status = call_main(main, argv, origin)
    if isinstance(status, int) and status != 0:
        return status
    if not out.is_file():
        raise RuntimeError(f"reproduce: {origin} wrote no results to {out}")
    holds = json.loads(out.read_text()).get("holds")
    verdict = {True: "holds", False: "does NOT hold", None: "not tested"}[holds]
    print(f"claim {verdict}; results in {out}")
    return 1 if holds is False else 0


def add_parser(sub: Any) -> None:
    """Register `reproduce` on the `sparse` subparsers."""
    p = sub.add_parser("reproduce", help="run a package's reproduction; exit 1 if its claim fails")
    p.add_argument("name", help="package name, e.g. granet (sparse-granet)")
    p.add_argument("--quick", action="store_true", help="tiny settings, same code path")
    p.add_argument("--out", default=None, help="results JSON (default: a temporary file)")
    p.add_argument(
        "--args",
        dest="extra",
        type=shlex.split,
        default=[],
        help="further options for the reproduction, quoted (e.g. --args '--jobs 2')",
    )
    p.set_defaults(func=cmd_reproduce)

"""Where a reproduction writes its results: quick runs never overwrite the committed full run.

A package's reproduction lives in the package itself, `sparse_<name>/reproduce.py`, so that it
ships inside the wheel (`sparse reproduce NAME`, `python -m sparse_<name>.reproduce`); the
documented `python packages/<name>/benchmarks/reproduce.py` of a checkout is a thin wrapper
that calls it. `default_results_path` finds the right folder from either file:

* from a checkout (`packages/<name>/src/sparse_<name>/reproduce.py` or
  `packages/<name>/benchmarks/reproduce.py`), a full run writes the committed
  `packages/<name>/benchmarks/results.json` (which `tools/results_page.py` publishes);
* from an installed wheel (no `benchmarks/` folder beside the package), a full run writes
  `<tmp>/sparse-reproduce/<name>-results.json` (pass `--out` to choose);
* a `--quick` run without `--out` always writes `<tmp>/sparse-quick/<name>-results.json`.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["benchmarks_folder", "default_results_path", "package_of"]


def package_of(script_file: str | os.PathLike[str]) -> str:
    """The package name (`granet`) of a reproduction file, in a checkout or a wheel."""
    script = Path(script_file).resolve()
    if script.parent.name == "benchmarks":
        return script.parent.parent.name
    if script.parent.name.startswith("sparse_"):
        return script.parent.name.removeprefix("sparse_")
    return script.stem


def benchmarks_folder(script_file: str | os.PathLike[str]) -> Path | None:
    """The checkout's `packages/<name>/benchmarks/` of a reproduction file; `None` from a wheel.

    Args:
        script_file: `__file__` of `benchmarks/reproduce.py` or of `sparse_<name>/reproduce.py`.
    """
    script = Path(script_file).resolve()
    if script.parent.name == "benchmarks":
        return script.parent
    if script.parent.parent.name == "src":  # packages/<name>/src/sparse_<name>/reproduce.py
        folder = script.parent.parent.parent / "benchmarks"
        if folder.is_dir():
            return folder
    return None


def default_results_path(
    script_file: str | os.PathLike[str],
    argv: Sequence[str] | None = None,
    filename: str = "results.json",
) -> str:
    """The default `--out` of a reproduction (see the module docstring for the three cases).

    Use as `parser.add_argument("--out", default=default_results_path(__file__, argv))`.

    Args:
        script_file: The reproduction's `__file__` (`sparse_<name>/reproduce.py`, or a
            `benchmarks/*.py` script of a checkout).
        argv: The arguments the script parses (`None`: `sys.argv[1:]`); only `--quick` is
            looked for.
        filename: The results file name.

    Returns:
        The path, as a string.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    package = package_of(script_file)
    if "--quick" in args:
        return str(Path(tempfile.gettempdir()) / "sparse-quick" / f"{package}-{filename}")
    folder = benchmarks_folder(script_file)
    if folder is not None:
        return str(folder / filename)
    return str(Path(tempfile.gettempdir()) / "sparse-reproduce" / f"{package}-{filename}")

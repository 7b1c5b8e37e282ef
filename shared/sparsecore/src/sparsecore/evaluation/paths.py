"""Where a reproduction writes its results: quick runs never overwrite the committed full run."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["default_results_path"]


def default_results_path(
    script_file: str | os.PathLike[str],
    argv: Sequence[str] | None = None,
    filename: str = "results.json",
) -> str:
    """The default `--out` of a `reproduce.py`: next to the script, or a temporary file for
    `--quick`.

    A `--quick` run without `--out` writes to `<tmp>/sparse-quick/<package>-<filename>`,
    so that it cannot replace the package's committed full-run results (which the results page
    shows). Use as `parser.add_argument("--out", default=default_results_path(__file__, argv))`.

    Args:
        script_file: The script's `__file__`.
        argv: The arguments the script parses (`None`: `sys.argv[1:]`); only `--quick` is
            looked for.
        filename: The results file name.

    Returns:
        The path, as a string.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    script = Path(script_file).resolve()
    if "--quick" not in args:
        return str(script.with_name(filename))
    package = script.parent.parent.name if script.parent.name == "benchmarks" else script.stem
    return str(Path(tempfile.gettempdir()) / "sparse-quick" / f"{package}-{filename}")

"""Safe output for the ``sparse`` subcommands: checked folders, atomic files, finite results.

* `check_output_folder` runs before any training: the folder must be new, empty, or (with
  ``--overwrite``) a folder of earlier ``sparse`` results, and writable; nothing is created.
* `create_output_folder` creates it when there is something to write, and with ``--overwrite``
  removes the files an earlier run left (``*.pt``, ``results.json``, ``*.png``), so no stale
  seed file survives next to a ``results.json`` that does not describe it.
* `atomic_write` writes through a temporary file in the same folder and renames it, so an
  interrupted save never leaves a truncated model or results file under the final name.
* `check_finite_model` turns a diverged run (NaN / inf weights) into an error.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "STALE_PATTERNS",
    "atomic_write",
    "check_finite_model",
    "check_finite_value",
    "check_output_folder",
    "create_output_folder",
]

#: Files of an earlier run that ``--overwrite`` removes from the output folder.
STALE_PATTERNS = ("*.pt", "results.json", "*.png")


def _nearest_existing(path: Path) -> Path:
    current = path.absolute()
    while not current.exists():
        current = current.parent
    return current


def check_output_folder(path: Path, overwrite: bool) -> None:
    """Refuse an output folder the run could not (or should not) write, creating nothing.

    Args:
        path: The ``--out`` folder.
        overwrite: ``--overwrite``: a non-empty folder is accepted (its earlier results are
            replaced when the run writes).

    Raises:
        ValueError: ``path`` is a file, or a non-empty folder without ``overwrite``.
        PermissionError: The folder (or the nearest existing parent, where it would be created)
            is not writable.
    """
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {str(path)!r} is a file, not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise ValueError(
            f"--out {str(path)!r} is not empty; choose a new folder, or pass --overwrite to "
            "replace the results in it"
        )
    base = _nearest_existing(path)
    if not base.is_dir():
        raise ValueError(f"--out {str(path)!r}: {str(base)!r} is a file, not a folder")
    try:  # os.access is not enough (read-only mounts, ACLs): try to create a file
        handle, probe = tempfile.mkstemp(prefix=".sparse-write-test-", dir=base)
    except OSError as err:
        raise PermissionError(f"--out {str(path)!r} is not writable ({err.strerror})") from None
    os.close(handle)
    os.unlink(probe)


def create_output_folder(path: Path, overwrite: bool) -> None:
    """Create ``path`` (parents included); with ``overwrite`` remove an earlier run's files."""
    path.mkdir(parents=True, exist_ok=True)
    if overwrite:
        for pattern in STALE_PATTERNS:
            for stale in path.glob(pattern):
                if stale.is_file():
                    stale.unlink()


def atomic_write(path: Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then rename it to ``path``.

    The rename is atomic on POSIX and Windows (`os.replace`): readers see the old file or the
    complete new one, never a partial write. The temporary file keeps ``path``'s suffix (so
    writers that infer a format from it, like matplotlib, still work) and is removed on error.
    """
    handle, tmp_name = tempfile.mkstemp(
        prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent
    )
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path


def check_finite_model(model: nn.Module, what: str) -> None:
    """Raise ``ValueError`` if ``model`` has a NaN / infinite parameter or buffer (diverged)."""
    for name, value in model.state_dict().items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ValueError(
                f"{what}: training diverged ({name} has NaN or infinite values); "
                "lower --lr or check the data"
            )


def check_finite_value(value: float, what: str) -> None:
    """Raise ``ValueError`` if a result is NaN or infinite."""
    if not math.isfinite(value):
        raise ValueError(f"{what}: the result is {value} (not finite)")

"""The `sparse` command end to end, as a user runs it (a subprocess, the installed script)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sparsecore import available_methods

SPARSE = shutil.which("sparse") or str(Path(sys.executable).parent / "sparse")
ENV = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PATH": str(Path(sys.executable).parent)}


def sparse(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SPARSE, *args], capture_output=True, text=True, timeout=600, cwd=cwd, env=ENV
    )


def test_list_shows_every_installed_method():
    result = sparse("list")
    assert result.returncode == 0, result.stderr
    for name in available_methods():
        assert name in result.stdout


def test_run_then_report(tmp_path):
    result = sparse(
        "run", "gmp", "--sparsity", "0.8", "--epochs", "2", "--seeds", "1",
        "--out", str(tmp_path), "--no-progress",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "gmp" in result.stdout
    checkpoints = sorted(tmp_path.rglob("*.pt")) + sorted(tmp_path.rglob("*.safetensors"))
    assert checkpoints, f"run saved no model in {list(tmp_path.rglob('*'))}"
    report = sparse("report", str(checkpoints[0]))
    assert report.returncode == 0, report.stderr
    assert "0.8" in report.stdout or "80" in report.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("run", "no-such-method", "--epochs", "1"),
        ("run", "gmp", "--sparsity", "1.5", "--epochs", "1"),
        ("run", "gmp", "--task", "imagenet", "--epochs", "1"),
        ("report", "/no/such/checkpoint.pt"),
    ],
)
def test_bad_input_exits_nonzero_with_one_line(args):
    result = sparse(*args)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr

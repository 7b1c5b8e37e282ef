"""`sparse run` / `sparse bench` output safety (issue 18 item 7): checked folders before
training, atomic files, no stale seed files, non-finite results fail."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from sparsecore.cli import main
from sparsecore.cli.output import atomic_write, check_output_folder

torch.set_num_threads(1)

FAST = ["--epochs", "1", "--seeds", "1", "--no-progress", "--threads", "1", "--batch-size", "512"]


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def test_non_empty_out_refused_before_training_then_overwrite_removes_stale(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    stale = out / "dense-mnist1d-dense-seed7.pt"
    stale.write_bytes(b"old")
    code, _, err = run_main(capsys, "run", "dense", "--out", str(out), *FAST)
    assert code == 1 and "not empty" in err and "--overwrite" in err
    assert stale.exists()  # nothing touched
    code, _, _ = run_main(capsys, "run", "dense", "--out", str(out), "--overwrite", *FAST)
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["dense-mnist1d-dense-seed0.pt", "results.json"]


@pytest.mark.parametrize(
    "extra", [["--lr", "inf"], ["--lr", "nan"], ["--lr", "1e30"]], ids=["inf", "nan", "diverges"]
)
def test_non_finite_run_fails_and_creates_no_folder(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, extra: list[str]
) -> None:
    out = tmp_path / "never"
    code, _, err = run_main(capsys, "run", "dense", "--out", str(out), *FAST, *extra)
    assert code == 1 and ("lr" in err or "diverged" in err), err
    assert not out.exists()


def test_negative_time_limit_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "bench"
    code, _, err = run_main(
        capsys, "bench", "--methods", "magnitude", "--max-run-seconds", "-1", "--out", str(out)
    )
    assert code == 1 and "--max-run-seconds" in err and not out.exists()


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True, reason="root writes")
def test_unwritable_out_found_before_training(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code, _, err = run_main(capsys, "run", "dense", "--out", str(locked / "x"), *FAST)
    finally:
        locked.chmod(0o700)
    assert code == 1 and "not writable" in err


def test_check_output_folder_refuses_a_file(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        check_output_folder(target, overwrite=True)


def test_atomic_write_keeps_the_old_file_on_interrupt(tmp_path: Path) -> None:
    path = tmp_path / "seed0.pt"
    torch.save({"w": torch.ones(2)}, path)

    def interrupted(tmp: Path) -> None:
        tmp.write_bytes(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, interrupted)
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["seed0.pt"]  # no temp file left

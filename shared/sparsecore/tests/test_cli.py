"""The ``sparse`` command: list, run, bench, report, and its bad-input behaviour."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from safetensors.torch import save_file

from sparsecore import OneShotMagnitude, Pattern, PruningMethod
from sparsecore.baselines import OneShotConfig
from sparsecore.bench import make_model, task_spec
from sparsecore.cli import applicability, build_method, main
from sparsecore.registry import _REGISTRY, register_method

torch.set_num_threads(1)

FAST = ["--epochs", "1", "--no-progress", "--threads", "1"]


class Broken(PruningMethod):
    name = "broken-test"

    def on_after_optimizer_step(self) -> None:
        if self.step == 2:
            raise RuntimeError("boom at step 2")


class DigitsOnly(OneShotMagnitude):
    name = "digits-only-test"
    tasks: ClassVar[tuple[str, ...]] = ("digits",)


@pytest.fixture
def extra_methods():
    register_method(Broken)
    register_method(DigitsOnly)
    yield
    _REGISTRY.pop("broken-test", None)
    _REGISTRY.pop("digits-only-test", None)


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse errors
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def test_list_shows_baselines_and_their_tasks(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import logging

    import sparsecore.registry

    real = sparsecore.registry.available_methods

    def with_a_broken_plugin() -> dict:
        logging.getLogger("sparsecore.method").warning("method plugin 'zzz' failed to load: x")
        return real()

    monkeypatch.setattr(sparsecore.registry, "available_methods", with_a_broken_plugin)
    code, out, err = run_main(capsys, "list")
    assert err == ""
    assert "plugins that failed to load:\n  method plugin 'zzz' failed to load: x" in out
    assert code == 0
    table = out.split("\n\n")[0].splitlines()[2:]
    lines = {line.split()[0]: line for line in table}
    for name in ("magnitude", "gmp", "rigl", "set", "snip", "random"):
        assert name in lines
    assert "mnist1d" in lines["rigl"] and "yes" in lines["snip"]
    assert "own procedure" in lines["imp"]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["run", "no-such-method"], "unknown method"),
        (["run", "rigl", "--task", "cifar"], "unknown task"),
        (["run", "rigl", "--sparsity", "1.5"], "sparsity must lie in (0, 1)"),
        (["run", "rigl", "--sparsity", "abc"], "sparsity must be a number"),
        (["run", "rigl", "--model", "vgg"], "unknown model"),
        (["run", "rigl", "--task", "digits", "--model", "convbase"], "1-D"),
        (["bench", "--methods", "rigl,nope"], "unknown method"),
        (["bench", "--sparsities", "0.5,0"], "sparsity must lie in (0, 1)"),
        (["report", "/no/such/file.pt"], "does not exist"),
    ],
)
def test_bad_input_exits_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    code, out, err = run_main(capsys, *argv, *(FAST if argv[0] != "report" else []))
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("sparse: error:")
    assert needle in err and "Traceback" not in err
    assert out == ""


def test_malformed_command_line_is_one_line_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(capsys, "frobnicate")
    assert code == 2 and err.count("\n") == 1 and "invalid choice" in err
    code, _, err = run_main(capsys, "run", "rigl", "--epochs", "many")
    assert code == 2 and err.count("\n") == 1


def test_unreadable_checkpoint(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"not a checkpoint at all")
    code, _, err = run_main(capsys, "report", str(bad))
    assert code == 1 and err.count("\n") == 1 and "cannot read checkpoint" in err
    (tmp_path / "list.pt").write_bytes(b"")
    torch.save([1, 2], tmp_path / "list.pt")
    code, _, err = run_main(capsys, "report", str(tmp_path / "list.pt"))
    assert code == 1 and "state_dict" in err


def test_console_script_has_no_traceback() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sparsecore.cli", "run", "rigl", "--sparsity", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == ["sparse: error: sparsity must lie in (0, 1), got 2"]


def test_run_trains_prints_and_saves(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out_dir = tmp_path / "run"
    code, out, _ = run_main(
        capsys,
        "run",
        "magnitude",
        "--sparsity",
        "0.8",
        "--seeds",
        "2",
        "--out",
        str(out_dir),
        "--batch-size",
        "256",
        *FAST,
    )
    assert code == 0
    assert "magnitude" in out and "MACs per example" in out and "± " in out
    saved = sorted(out_dir.glob("*.pt"))
    assert [p.name for p in saved] == [
        "magnitude-mnist1d-s0.8-seed0.pt",
        "magnitude-mnist1d-s0.8-seed1.pt",
    ]
    state = torch.load(saved[0], weights_only=True)
    assert not any(k.endswith("_mask") for k in state)  # finalized: a plain model
    weights = [v for k, v in state.items() if k.endswith("weight")]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros == pytest.approx(0.8, abs=0.01)
    results = json.loads((out_dir / "results.json").read_text())
    row = results["rows"][0]
    assert row["variant"] == "magnitude" and len(row["seeds"]) == 2
    assert row["sparsity"] == pytest.approx(0.8, abs=0.01)
    assert row["flops_ratio"] == pytest.approx(0.2, abs=0.02)

    code, out, _ = run_main(capsys, "report", str(saved[0]))
    assert code == 0
    total = out.splitlines()[-1].split()
    nnz = sum(int((w != 0).sum()) for w in weights)
    assert total[0] == "total" and int(total[2]) == nnz

    st = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(st))
    code, out2, _ = run_main(capsys, "report", str(st))
    assert code == 0 and out2.splitlines()[-1] == out.splitlines()[-1]


def test_bench_rows_json_png_and_failures(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, extra_methods: None
) -> None:
    out_dir = tmp_path / "bench"
    code, out, _ = run_main(
        capsys,
        "bench",
        "--methods",
        "magnitude,rigl,broken-test,digits-only-test",
        "--sparsities",
        "0.5,0.9",
        "--out",
        str(out_dir),
        "--batch-size",
        "256",
        "--seeds",
        "1",
        *FAST,
    )
    assert code == 0
    results = json.loads((out_dir / "results.json").read_text())
    rows = results["rows"]
    assert [(r["variant"], r.get("note", "")[:7]) for r in rows] == [
        ("dense", ""),
        ("magnitude", ""),
        ("magnitude", ""),
        ("rigl", ""),
        ("rigl", ""),
        ("broken-test", "failed:"),
        ("broken-test", "failed:"),
        ("digits-only-test", "skipped"),
    ]
    assert "boom at step 2" in rows[5]["note"]
    assert [round(r["sparsity"], 2) for r in rows[1:5]] == [0.5, 0.9, 0.5, 0.9]
    assert rows[0]["sparsity"] == 0.0 and rows[0]["flops_ratio"] == 1.0
    assert results["holds"] is None and results["command"].startswith("sparse bench")
    png = out_dir / "mnist1d-mlp.png"  # one figure per scenario
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "failed: boom at step 2" in out


def test_build_method_fits_schedules_and_applicability() -> None:
    from sparsecore import GMP, RigL

    gmp = build_method(GMP, 0.9, seed=3, total_steps=400)
    assert gmp.config.end_step == 300 and gmp.config.update_every == 20
    assert gmp.config.sparsity == 0.9 and gmp.config.seed == 3
    rigl = build_method(RigL, 0.8, seed=0, total_steps=100)
    assert rigl.config.end_step == 75 and rigl.config.update_every == 5
    model = make_model("mlp", task_spec("mnist1d"))
    assert applicability(RigL, "mnist1d", model) is None
    assert "only for tasks" in (applicability(DigitsOnly, "mnist1d", model) or "")

    @dataclass(frozen=True)
    class BlockConfig(OneShotConfig):
        pattern: Pattern | str = "block8x8"

    class BlockOnly(OneShotMagnitude):
        name = "block-test"
        config_class = BlockConfig

    reason = applicability(BlockOnly, "mnist1d", model)  # 10x256 classifier: no 8x8 tiling
    assert reason is not None and "does not fit" in reason

    @dataclass(frozen=True)
    class ShapeConfig(OneShotConfig):
        input_shape: tuple[int, ...] | None = None

        def __post_init__(self) -> None:
            super().__post_init__()
            if self.input_shape is None:
                raise ValueError("input_shape is required")

    class NeedsShape(OneShotMagnitude):
        name = "shape-test"
        config_class = ShapeConfig

    assert build_method(NeedsShape, 0.5, 0, 100, input_shape=[40]).config.input_shape == (40,)
    assert build_method(GMP, 0.5, 0, 100, input_shape=(40,)).config.sparsity == 0.5  # no field
    assert applicability(NeedsShape, "mnist1d", model) is None  # the task's shape is passed
    with pytest.raises(ValueError, match="input_shape"):
        build_method(NeedsShape, 0.5, 0, 100)


def test_bench_time_limit_fails_rows_not_the_bench(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _ = run_main(
        capsys,
        "bench",
        "--methods",
        "magnitude",
        "--sparsities",
        "0.5",
        "--max-run-seconds",
        "1e-9",
        "--out",
        str(tmp_path),
        *FAST,
    )
    assert code == 0
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert [r["variant"] for r in rows] == ["dense", "magnitude"]
    assert all("CPU time limit" in r["note"] and r["mean"] is None for r in rows)
    assert "failed: CPU time limit" in out

import json
import math
import sys
import time
from functools import partial

import pytest

from sparsecore.evaluation import (
    command_line,
    configured_seeds,
    default_seeds,
    finish_reproduction,
    report_sparseland,
    result_row,
    run_seeds,
    write_results,
)


def _square_plus(offset: int, seed: int) -> int:
    return seed * seed + offset


def test_run_seeds_serial_keeps_seed_order_and_values(capsys):
    out = run_seeds(partial(_square_plus, 1), [3, 0, 2])
    assert list(out) == [3, 0, 2]
    assert out == {3: 10, 0: 1, 2: 5}
    assert capsys.readouterr().out.count("done") == 3


def test_run_seeds_in_worker_processes_equals_serial():
    serial = run_seeds(partial(_square_plus, 7), [0, 1, 2], log=None)
    parallel = run_seeds(partial(_square_plus, 7), [0, 1, 2], jobs=2, threads=1, log=None)
    assert parallel == serial
    assert list(parallel) == [0, 1, 2]


@pytest.mark.parametrize(
    ("kwargs", "name"), [({"jobs": 0}, "jobs"), ({"threads": 0}, "threads"), ({}, "seeds")]
)
def test_run_seeds_rejects_bad_arguments(kwargs, name):
    seeds = [1, 1] if name == "seeds" else [1]
    with pytest.raises(ValueError, match=name):
        run_seeds(partial(_square_plus, 0), seeds, **kwargs)


def test_command_line_records_the_given_arguments():
    assert command_line(["--quick", "--out", "x.json"]) == (
        f"python {sys.argv[0]} --quick --out x.json"
    )


def test_report_sparseland_prints_and_returns_the_problems(capsys):
    problems = report_sparseland({"rows": []}, quick=True)
    assert problems
    assert capsys.readouterr().out.startswith("sparseland: ")
    assert "ok" not in problems


@pytest.mark.parametrize(
    ("seeds", "quick", "want"),
    [(None, True, [0]), (None, False, [0, 1, 2]), ([], False, [0, 1, 2]), ([5, 3], True, [5, 3])],
)
def test_default_seeds(seeds, quick, want):
    assert default_seeds(seeds, quick) == want


def test_configured_seeds_records_the_count_in_the_settings():
    cfg = {"seeds": 3}
    assert configured_seeds(cfg, None) == [0, 1, 2] and cfg == {"seeds": 3}
    assert configured_seeds(cfg, 2) == [0, 1] and cfg == {"seeds": 2}


def test_result_row_averages_the_metric_and_the_finite_extras():
    results = {
        0: {"accuracy": 0.5, "sparsity": 0.4, "flops_ratio": math.nan, "wall_s": 2.0},
        1: {"accuracy": 0.7, "sparsity": 0.6, "wall_s": 4.0, "other": 9},
    }
    row = result_row("v", [0, 1], results.__getitem__)
    assert row.variant == "v" and row.metric == "accuracy" and row.seeds == [0.5, 0.7]
    assert row.mean == pytest.approx(0.6) and row.std == pytest.approx(math.sqrt(0.02))
    assert row.sparsity == pytest.approx(0.5) and row.wall_s == pytest.approx(3.0)
    assert math.isnan(row.flops_ratio)  # NaN on seed 0, missing on seed 1
    ppl = result_row("p", [1], lambda s: {"perplexity": 9.0}, metric="perplexity")
    assert ppl.metric == "perplexity" and ppl.mean == 9.0 and math.isnan(ppl.sparsity)


@pytest.mark.parametrize("show_claim", [False, True])
def test_finish_reproduction_writes_what_write_results_writes(tmp_path, capsys, show_claim):
    row = result_row("dense", [0], lambda s: {"accuracy": 0.9, "sparsity": 0.0})
    fields = {"settings": {"quick": True}, "verdicts": {"x": True}}
    common = {"method": "m", "task": "t", "claim": "c wins", "holds": True, "rows": [row]}
    want = write_results(tmp_path / "want.json", command="cmd", **common, **fields)
    capsys.readouterr()
    out = tmp_path / "sub" / "got.json"
    got = finish_reproduction(
        out, start=time.perf_counter(), quick=True, command="cmd", show_claim=show_claim,
        **common, **fields,
    )  # fmt: skip
    assert got == want and json.loads(out.read_text()) == json.loads(
        (tmp_path / "want.json").read_text()
    )
    assert list(got) == list(want)  # the same key order in the file
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("sparseland: ")
    assert lines[1].startswith(f"wrote {out} (") and lines[1].endswith(" s)")
    assert lines[2] == ("claim: holds (c wins)" if show_claim else "claim: holds")
    finish_reproduction(out, start=0.0, quick=True, command="cmd", **{**common, "holds": False})
    assert capsys.readouterr().out.splitlines()[-1] == "claim: does not hold"

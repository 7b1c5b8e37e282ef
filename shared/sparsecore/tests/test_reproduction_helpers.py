import sys
from functools import partial

import pytest

from sparsecore.evaluation import command_line, report_sparseland, run_seeds


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

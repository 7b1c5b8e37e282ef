import os
import runpy
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

WORKER = Path(__file__).with_name("dist_worker.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_two_gloo_ranks_give_the_sequential_soup(tmp_path):
    """3 ingredients on 2 ranks (rank 0 trains 0 and 2, rank 1 trains 1), greedy soup, 2 phases:
    both ranks end with exactly the soup of a single-process run."""
    out = str(tmp_path / "result")
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(r), "2", str(port), out],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for r in range(2)
    ]
    try:
        logs = [p.communicate(timeout=240)[0].decode(errors="replace") for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs), logs
    sequential, trained = runpy.run_path(str(WORKER))["build_and_run"]()
    assert trained == [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)]
    expected = {0: [(1, 0), (1, 2), (2, 0), (2, 2)], 1: [(1, 1), (2, 1)]}
    seq_state = sequential.model.state_dict()
    for rank in range(2):
        got = torch.load(f"{out}.{rank}", weights_only=True)
        assert got["trained"] == expected[rank]  # each rank trained only its share
        assert got["scores"] == [p.ingredient_scores for p in sequential.phases]
        assert got["selected"] == [p.selected for p in sequential.phases]
        assert got["state"].keys() == seq_state.keys()
        for key, value in seq_state.items():
            assert torch.equal(got["state"][key], value), (rank, key)

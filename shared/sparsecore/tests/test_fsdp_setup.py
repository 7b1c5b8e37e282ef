"""`PruningMethod.setup` on FSDP2 (``fully_shard``) models, two gloo processes on CPU.

Masks are ``DTensor`` buffers sharded like their parameters and equal, bit for bit, the masks
the same method computes in one process on the unsharded model (OneShotMagnitude and GMP,
layer-wise and global; RigL's random initial masks and its drop/grow updates). Methods that
cannot run on shards are refused at setup with their name, the model untouched.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("fsdp_setup_worker.py")
DEADLINE_S = 240
ENV_ABORT = "terminate called without an active exception"
CASES = ("magnitude_layer", "magnitude_global", "gmp_global", "gmp_layer", "rigl")


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("fsdp_setup")
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo")
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(rank), "2", str(out / "store"), str(out)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        for rank in range(2)
    ]
    deadline = time.monotonic() + DEADLINE_S
    logs = []
    for proc in procs:
        try:
            logs.append(proc.communicate(timeout=max(1.0, deadline - time.monotonic()))[0])
        except subprocess.TimeoutExpired:
            for other in procs:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(other.pid, signal.SIGKILL)
            pytest.fail("FSDP setup workers timed out")
    files = [out / f"rank{r}.json" for r in range(2)]
    if all(f.exists() for f in files):
        return [json.loads(f.read_text()) for f in files]
    if any(ENV_ABORT in log for log in logs):
        pytest.skip("gloo aborted in this environment")
    pytest.fail("FSDP setup workers failed:\n" + "\n".join(log[-2000:] for log in logs))


@pytest.mark.parametrize("case", CASES)
def test_sharded_masks_equal_single_process_bit_for_bit(results, case):
    for rank in results:
        r = rank[case]
        assert r["equal"], case
        assert r["dtensor"] and r["placements"], case  # DTensor buffers sharded like params
        assert r["zeros"], case  # pruned weights are exactly zero on every shard
        assert r["ref_nnz_equal"], case  # the all-reduced counts are the global ones
        assert r["fsdp_step"] == r["ref_step"]
    if case in ("gmp_global", "gmp_layer", "rigl"):  # the updates ran and changed the masks
        assert results[0][case]["ref_changed"] and results[0][case]["fsdp_changed"]
    expected = {"gmp_global": 0.70, "gmp_layer": 0.70, "rigl": 0.6}.get(case, 0.6)
    assert results[0][case]["sparsity"] == pytest.approx(expected, abs=0.01)


def test_unsupported_methods_are_refused_by_name_before_touching_the_model(results):
    for rank in results:
        refused = rank["refused"]
        assert "SET does not support FSDP2" in refused["set"]
        assert "OneShotMagnitude on FSDP2" in refused["channel"]
        assert refused["unchanged"]

"""Run a worker script as two (or more) gloo ranks on CPU, for distributed tests.

The DDP/FSDP tests of the core all start `world_size` processes of one worker script as
``python WORKER RANK WORLD_SIZE STORE_DIR OUT_DIR``, wait for them under one deadline (killing
every process group on a timeout), then read each rank's ``rank<r>.json``. In some sandboxes
gloo's threads abort with `GLOO_ENV_ABORT` whatever the test does: such a run is skipped, any
other failure fails the test with the ranks' logs.
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
from typing import Any

import pytest

__all__ = ["GLOO_ENV_ABORT", "run_gloo_ranks"]

#: What gloo prints when its threads hit std::terminate in a sandbox (not the test's fault).
GLOO_ENV_ABORT = "terminate called without an active exception"


def run_gloo_ranks(
    worker: Path, out: Path, *, world_size: int = 2, deadline_s: float = 240.0
) -> list[dict[str, Any]]:
    """Run `worker` as `world_size` ranks and return each rank's `rank<r>.json` result.

    Args:
        worker: the worker script; it is called as `WORKER RANK WORLD_SIZE STORE_DIR OUT_DIR`
            and writes `OUT_DIR/rank<r>.json` when it succeeds.
        out: an empty directory for the file store and the results.
        world_size: number of ranks.
        deadline_s: seconds for all ranks together (gloo's own timeout is 90 s).

    Returns:
        The ranks' results, in rank order.
    """
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo")
    procs = [
        subprocess.Popen(
            [sys.executable, str(worker), str(r), str(world_size), str(out / "store"), str(out)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        for r in range(world_size)
    ]
    deadline = time.monotonic() + deadline_s
    logs = []
    for proc in procs:
        try:
            logs.append(proc.communicate(timeout=max(1.0, deadline - time.monotonic()))[0])
        except subprocess.TimeoutExpired:
            for other in procs:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(other.pid, signal.SIGKILL)
            pytest.fail(f"{worker.name}: ranks timed out after {deadline_s:.0f} s")
    files = [out / f"rank{r}.json" for r in range(world_size)]
    if all(f.exists() for f in files):
        return [json.loads(f.read_text()) for f in files]
    report = "\n".join(
        f"rank {r}: exit {p.returncode}\n{log[-2000:]}"
        for r, (p, log) in enumerate(zip(procs, logs, strict=True))
    )
    if any(GLOO_ENV_ABORT in log for log in logs):
        pytest.skip(f"gloo aborted in this environment:\n{report}")
    pytest.fail(f"{worker.name} failed:\n{report}")

"""Two gloo ranks under DistributedDataParallel: the replicas keep the same thresholds and masks.

Each rank sees different data, so its local threshold gradients differ; LAPP all-reduces them
over the DDP model's process group (issue 25). The control run sets LAPP up on the bare module
(no process group): its replicas drift apart, which shows the test can fail.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("_ddp_worker.py")


def _run_two_ranks(tmp_path: Path) -> list[subprocess.Popen]:
    init = tmp_path / "init"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(r), str(init), str(tmp_path / f"rank{r}.pt")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for r in range(2)
    ]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_replicas_agree_on_thresholds_and_masks_under_ddp(tmp_path: Path) -> None:
    procs = _run_two_ranks(tmp_path)
    for proc in procs:
        out, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0, out.decode()[-3000:]
    load = lambda name: torch.load(tmp_path / name, weights_only=True)  # noqa: E731
    (r0, b0), (r1, b1) = ((d["ddp"], d["bare"]) for d in (load("rank0.pt"), load("rank1.pt")))
    # The ranks' own gradients differ (different data) ...
    assert any(
        not torch.allclose(a, b) for a, b in zip(r0["local_grads"], r1["local_grads"], strict=True)
    )
    # ... yet the thresholds, the frozen masks and the parameters are identical.
    assert torch.equal(r0["thresholds"], r1["thresholds"])
    assert all(torch.equal(a, b) for a, b in zip(r0["keeps"], r1["keeps"], strict=True))
    assert all(torch.allclose(r0["weights"][k], r1["weights"][k]) for k in r0["weights"])
    assert not torch.equal(b0["thresholds"], b1["thresholds"])  # without the all-reduce: drift

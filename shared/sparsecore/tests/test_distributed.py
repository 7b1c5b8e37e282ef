"""Distributed helpers: masks identical across DDP ranks under RigL, soups keep masks."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

import sparsecore as sc
from sparsecore.distributed import (
    average_state_dicts,
    average_state_dicts_across_ranks,
    broadcast_masks,
    masks_digest,
    masks_identical,
)

WORKER = Path(__file__).with_name("ddp_worker.py")


#: Seconds for one launch of both ranks, whatever happens (gloo's own timeout is 90 s).
DEADLINE_S = 240
#: How gloo's threads took a rank down in the sandboxed CI run (std::terminate on a joinable
#: thread, SIGABRT): the one abort that is retried, and skipped if it persists. Any other abort,
#: e.g. gloo's ``EnforceNotMet`` on mismatched collectives (a real bug), fails the tests.
ENV_ABORT = "terminate called without an active exception"
#: What a rank prints when its peer vanished: a consequence, not a bug of its own.
PEER_LOST = re.compile(r"Connection (reset|closed) by peer")


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo")


def _wait(procs: list[subprocess.Popen]) -> list[subprocess.CompletedProcess]:
    """Wait for every process under one deadline; on timeout kill their process groups."""
    deadline = time.monotonic() + DEADLINE_S
    finished = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for other in procs:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(other.pid, signal.SIGKILL)  # the launcher and its workers
            pytest.fail("DDP workers timed out")
        finished.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err or ""))
    return finished


def run_torchrun(out: Path) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node 2 ddp_worker.py OUT`` (the documented launch)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1"]
    command += ["--nproc-per-node", "2", str(WORKER), str(out)]
    proc = subprocess.Popen(
        command,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    return _wait([proc])[0]


def run_by_hand(out: Path) -> list[subprocess.CompletedProcess]:
    """Start the two ranks of ``ddp_worker.py`` directly (a file store, no launcher)."""
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(rank), "2", str(out / "store"), str(out)],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        for rank in range(2)
    ]
    return _wait(procs)


def _written(out: Path) -> bool:
    return all((out / f"rank{r}.json").exists() for r in range(2))


def _results(out: Path) -> list[dict]:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def describe(procs: list[subprocess.CompletedProcess]) -> str:
    """Exit codes and the ends of the logs, for a failure message."""
    return "\n".join(
        f"process {i}: exit {p.returncode}\n{(p.stdout or '')[-1500:]}{(p.stderr or '')[-1500:]}"
        for i, p in enumerate(procs)
    )


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory) -> list[dict]:
    """Results of both ranks, launched with torchrun. A Python error in a worker fails the tests.

    Both ranks write their results before a final barrier; once both files exist, a crash while
    the processes shut down does not matter. Before that, only the abort seen once in a
    sandboxed CI run (never locally) is forgiven: gloo's threads hitting ``std::terminate``
    (`ENV_ABORT`). The ranks are then started by hand, twice at most. A rank that exits
    with a Python error other than losing its aborted peer, or any other abort, fails the
    tests; if that gloo abort happens on both retries, the DDP tests are skipped with the logs.
    """
    out = tmp_path_factory.mktemp("torchrun")
    launched = run_torchrun(out)
    if launched.returncode == 0 or _written(out):
        return _results(out)
    if ENV_ABORT not in launched.stdout + launched.stderr:
        pytest.fail(f"torchrun DDP run failed:\n{describe([launched])}")
    procs = [launched]
    for attempt in range(2):
        out = tmp_path_factory.mktemp(f"by_hand{attempt}")
        procs = run_by_hand(out)
        if all(p.returncode == 0 for p in procs) or _written(out):
            return _results(out)
        aborted = any(p.returncode == -signal.SIGABRT and ENV_ABORT in p.stdout for p in procs)
        own_error = any(p.returncode > 0 and not PEER_LOST.search(p.stdout) for p in procs)
        if own_error or not aborted:
            pytest.fail(f"DDP worker failed:\n{describe(procs)}")
    pytest.skip(f"gloo aborted in this environment:\n{describe([launched, *procs])}")


def test_rigl_masks_identical_on_every_rank_after_every_update(ddp_results):
    r0, r1 = ddp_results
    assert len(r0["digests"]) == 8
    assert r0["digests"] == r1["digests"]
    assert any(r0["changed"]), "RigL must actually have changed the masks"
    assert r0["identical_after_training"] and r1["identical_after_training"]
    assert abs(r0["sparsity"] - 0.8) < 0.01


def test_cross_rank_average_keeps_masks(ddp_results):
    for r in ddp_results:
        assert r["mean_ok"] and r["masks_kept"] and r["pruned_zero"]


def test_divergent_masks_detected_and_repaired(ddp_results):
    for r in ddp_results:
        assert r["detected"] and r["repaired"] and r["zero_after_repair"]
        assert not r["refused_when_identical"]


# ---------------------------------------------------------------- single process
def small(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))


def test_average_state_dicts_is_a_weighted_mean_that_keeps_masks():
    models = [small(s) for s in range(3)]
    first = sc.OneShotMagnitude(sparsity=0.75).setup(models[0])
    for m in models[1:]:
        sc.OneShotMagnitude(sparsity=0.75).setup(m)
        for name, mask in first.masks.masks().items():  # the soup ingredients share one mask
            m.get_buffer(f"{name}_mask").copy_(mask)
            m.get_parameter(name).data.mul_(mask)
        m[1].num_batches_tracked.fill_(7)
    sds = [m.state_dict() for m in models]
    soup = average_state_dicts(sds, weights=[1, 2, 1])
    want = (sds[0]["3.bias"] + 2 * sds[1]["3.bias"] + sds[2]["3.bias"]) / 4
    torch.testing.assert_close(soup["3.bias"], want, atol=1e-7, rtol=0)
    assert torch.equal(soup["0.weight_mask"], sds[0]["0.weight_mask"])
    assert soup["0.weight_mask"].dtype == torch.bool
    assert torch.equal(soup["1.num_batches_tracked"], sds[0]["1.num_batches_tracked"])
    assert bool((soup["0.weight"][~soup["0.weight_mask"]] == 0).all())
    assert int(soup["0.weight"].ne(0).sum()) <= int(soup["0.weight_mask"].sum())
    uniform = average_state_dicts(sds)
    torch.testing.assert_close(uniform["0.bias"], sum(s["0.bias"] for s in sds) / 3)
    torch.testing.assert_close(models[0][3].bias, sds[0]["3.bias"])


def test_average_state_dicts_validates_inputs():
    a, b = small(0).state_dict(), small(1).state_dict()
    with pytest.raises(ValueError, match="no state dicts"):
        average_state_dicts([])
    with pytest.raises(ValueError, match="different keys"):
        average_state_dicts([a, {k: v for k, v in b.items() if k != "0.bias"}])
    wrong = dict(b, **{"3.weight": torch.zeros(4, 16)})
    with pytest.raises(ValueError, match=r"'3\.weight'"):
        average_state_dicts([a, wrong])
    with pytest.raises(ValueError, match="weights"):
        average_state_dicts([a, b], weights=[1.0, -1.0])
    ma, mb = dict(a), dict(b)
    ma["0.weight_mask"] = torch.ones(16, 8, dtype=torch.bool)
    mb["0.weight_mask"] = torch.zeros(16, 8, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"'0\.weight_mask' differs"):
        average_state_dicts([ma, mb])


def test_helpers_are_no_ops_without_a_process_group():
    model = small(0)
    method = sc.OneShotMagnitude(sparsity=0.5).setup(model)
    assert masks_identical(method.masks)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    broadcast_masks(method.masks)
    average_state_dicts_across_ranks(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    digest = masks_digest(method.masks)
    assert len(digest) == 32 and digest == masks_digest(dict(method.masks.masks()))
    flipped = dict(method.masks.masks())
    flipped["0.weight"] = ~flipped["0.weight"]
    assert masks_digest(flipped) != digest

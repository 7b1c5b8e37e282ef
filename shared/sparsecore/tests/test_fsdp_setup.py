"""`PruningMethod.setup` on FSDP2 (``fully_shard``) models, two gloo processes on CPU.

Masks are ``DTensor`` buffers sharded like their parameters and equal, bit for bit, the masks
the same method computes in one process on the unsharded model (OneShotMagnitude and GMP,
layer-wise and global; RigL's random initial masks and its drop/grow updates). Methods that
cannot run on shards are refused at setup with their name, the model untouched.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sparsecore.testing_gloo import run_gloo_ranks

WORKER = Path(__file__).with_name("fsdp_setup_worker.py")
CASES = ("magnitude_layer", "magnitude_global", "gmp_global", "gmp_layer", "rigl")


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> list[dict]:
    return run_gloo_ranks(WORKER, tmp_path_factory.mktemp("fsdp_setup"))


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

"""FSDP2 (fully_shard, two gloo processes on CPU): sharded masks and the distributed top-k."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sparsecore.fsdp import distributed_topk, global_magnitude_masks, shard_like
from sparsecore.select import select_global, topk_mask
from sparsecore.testing_gloo import run_gloo_ranks

WORKER = Path(__file__).with_name("fsdp_worker.py")


@pytest.fixture(scope="module")
def fsdp_results(tmp_path_factory) -> list[dict]:
    return run_gloo_ranks(WORKER, tmp_path_factory.mktemp("fsdp"))


def test_global_magnitude_on_fsdp2_shards_equals_single_process_bit_for_bit(fsdp_results):
    for r in fsdp_results:
        assert r["global_equal"]
        assert r["ties"] > r["kept_ties"] > 0  # the tie-break at the threshold was exercised
    assert fsdp_results[0]["local_rows"] == [7, 4, 2]  # uneven Shard(0) chunks
    assert fsdp_results[1]["local_rows"] == [6, 3, 2]


def test_masks_are_sharded_like_their_parameters(fsdp_results):
    for r in fsdp_results:
        assert r["layout_ok"] and r["buffers_ok"]


def test_rigl_update_on_shards_equals_single_process_and_keeps_zeros(fsdp_results):
    for r in fsdp_results:
        assert len(r["rigl_equal"]) == 9 and all(r["rigl_equal"])
        assert all(r["changed"])  # the updates did change the masks
        assert all(r["pruned_zero"])


def test_sharded_masking_keeps_pruned_weights_at_zero_through_adam(fsdp_results):
    for r in fsdp_results:
        assert r["hooked_zero"]
        assert r["hooked_kept"] == (16 * 9 + 9 * 4) // 2  # global magnitude at density 0.5


# ---------------------------------------------------------------- single process
def test_distributed_topk_without_a_group_is_topk_over_the_concatenation():
    gen = torch.Generator().manual_seed(0)
    parts = [torch.randint(-3, 4, shape, generator=gen).float() for shape in [(5, 4), (7,), (3, 3)]]
    parts[0][0, 0] = -0.0  # counted as +0.0, as torch.kthvalue does
    flat = torch.cat([p.reshape(-1) for p in parts])
    for k in (0, 1, 9, 17, flat.numel()):
        want = topk_mask(flat, k)
        got = torch.cat([m.reshape(-1) for m in distributed_topk(parts, k)])
        assert torch.equal(got, want)
    params = {f"p{i}": p for i, p in enumerate(parts)}
    masks = global_magnitude_masks(params, 0.4)
    want = select_global({n: p.abs() for n, p in params.items()}, 0.4)
    assert all(torch.equal(masks[n], m) for n, m in want.items())


def test_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        distributed_topk([torch.tensor([1.0, float("nan")])], 1)
    with pytest.raises(ValueError, match=r"k must lie in \[0, 2\]"):
        distributed_topk([torch.tensor([1.0, 2.0])], 3)
    with pytest.raises(ValueError, match="mask shape"):
        shard_like(torch.zeros(3, 4), torch.ones(4, 3, dtype=torch.bool))

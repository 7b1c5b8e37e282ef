"""The reproduction's low-rank Sparseland disclosure counts the factor layers exactly."""

from __future__ import annotations

from torch import nn

from sparse_trp import FixedRank, decompose, plan_ranks
from sparse_trp.reproduce import lowrank_sparsity


def test_lowrank_sparsity_counts_each_factor_pair_against_its_dense_layer() -> None:
    dense = nn.Sequential(
        nn.Conv1d(1, 8, 3), nn.ReLU(), nn.Conv1d(8, 16, 3), nn.ReLU(), nn.Conv1d(16, 16, 3)
    )
    plan = plan_ranks(dense, ["2"], "NC", FixedRank(2), only_if_smaller=False)
    small = decompose(dense, plan)
    out = lowrank_sparsity(dense, small)
    assert out["param_set"]["included"] == ["2.weight", "4.weight"]  # eligible: not the first
    assert out["param_set"]["excluded"] == ["0.weight"]
    kept = 2 * 8 * 3 + 16 * 2  # (2, 8, 3) then the (16, 2, 1) pointwise factor
    assert out["per_layer"]["2.weight"] == 1.0 - kept / (16 * 8 * 3)
    assert out["per_layer"]["4.weight"] == 0.0  # left full rank: counted, not hidden
    assert out["param_set"]["numel"] == 16 * 8 * 3 + 16 * 16 * 3
    removed = 16 * 8 * 3 - kept
    assert abs(out["achieved"] - removed / out["param_set"]["numel"]) < 1e-12

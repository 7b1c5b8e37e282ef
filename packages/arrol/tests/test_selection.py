"""The selection rule against exhaustive search, and the oracle-head balance property."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from sparse_arrol import balanced_subset, keep_count, objective, prune_groups


def _brute(q: torch.Tensor, k: int, target: float) -> float:
    return min(
        abs(float(q[list(c)].double().mean()) - target)
        for c in itertools.combinations(range(q.numel()), k)
    )


def test_keep_count_is_round_half_up():
    assert keep_count(0.5, 8) == 4 and keep_count(0.25, 8) == 2 and keep_count(0.5, 5) == 3
    assert keep_count(0.01, 8) == 1 and keep_count(1.0, 8) == 8
    with pytest.raises(ValueError, match="keep_ratio"):
        keep_count(0.0, 8)


def test_exhaustive_mode_matches_brute_force():
    gen = torch.Generator().manual_seed(0)
    for trial in range(60):
        n = 4 + trial % 7
        k = 1 + trial % (n - 1)
        q = torch.rand(n, generator=gen)
        if trial % 3 == 0:
            q = (q * 4).round() / 4  # discrete, calibrated-like scores: many ties
        target = float(torch.rand(1, generator=gen))
        s = balanced_subset(q, k, target, generator=gen)
        assert s.numel() == k and s.unique().numel() == k
        assert objective(q, s, target) <= _brute(q, k, target) + 1e-9


def test_greedy_mode_is_close_to_brute_force():
    gen = torch.Generator().manual_seed(1)
    exact = 0
    for _ in range(60):
        q = torch.rand(10, generator=gen)
        s = balanced_subset(q, 5, 0.5, exhaustive_limit=0)
        assert s.numel() == 5 and s.unique().numel() == 5
        best = _brute(q, 5, 0.5)
        got = objective(q, s, 0.5)
        assert got <= best + 0.02
        exact += got <= best + 1e-9
    assert exact >= 30


def test_ties_prefer_confident_members():
    """Equal means: the subset of extremes (lower reward variance of the fraction) wins."""
    q = torch.tensor([0.5, 0.5, 0.0, 1.0, 0.5, 0.5])
    s = balanced_subset(q, 2, 0.5, generator=torch.Generator().manual_seed(0))
    assert s.tolist() == [2, 3]


def test_prune_groups_keeps_round_kn_per_group():
    gen = torch.Generator().manual_seed(2)
    groups = torch.arange(5).repeat_interleave(8)
    keep = prune_groups(torch.rand(40, generator=gen), groups, 0.5, 0.5, gen)
    assert torch.bincount(groups[keep]).tolist() == [4] * 5


def _simulate(select: str, trials: int = 400, n: int = 8, k: int = 4) -> tuple[float, float]:
    """Oracle head: each rollout's score is its true success probability q_i."""
    gen = torch.Generator().manual_seed(3)
    gap, balance = [], []
    for _ in range(trials):
        difficulty = float(torch.rand(1, generator=gen))
        q = (torch.rand(n, generator=gen) ** (1 / max(difficulty, 0.05) - 1)).clamp(0, 1)
        r = torch.bernoulli(q, generator=gen)
        if select == "oracle":
            s = balanced_subset(q, k, 0.5, generator=gen)
        else:
            s = torch.randperm(n, generator=gen)[:k]
        f = float(r[s].mean())
        gap.append(abs(f - 0.5))
        balance.append(f * (1 - f))
    return sum(gap) / trials, sum(balance) / trials


def test_oracle_head_balances_better_than_random_pruning():
    gap_o, bal_o = _simulate("oracle")
    gap_r, bal_r = _simulate("random")
    assert gap_o < gap_r - 0.03
    assert bal_o > bal_r + 0.02
    assert math.isfinite(bal_o)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="k must be <="):
        balanced_subset(torch.rand(3), 4)
    with pytest.raises(ValueError, match="target"):
        balanced_subset(torch.rand(3), 2, 1.5)

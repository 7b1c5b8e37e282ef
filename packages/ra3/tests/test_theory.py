"""Theorem 3.5 runnable: the sample size, the pruning rule, the guarantee measured over trials."""

from __future__ import annotations

import math

import pytest
import torch

from sparse_ra3 import make_bandit_family, prune_by_frequency, pruning_trials, theorem_sample_size
from sparse_ra3.theory import BanditFamily


def test_sample_size_formula():
    assert theorem_sample_size(16, 0.05, 0.1) == math.ceil(16 * math.log(160) / 0.05)
    assert theorem_sample_size(2, 1.0, 1.0, constant=2.0) == math.ceil(2 * 2 * math.log(2))
    for kwargs, field in (({"n_actions": 0}, "n_actions"), ({"sigma": 0.0}, "sigma"),
                          ({"delta": 1.5}, "delta"), ({"constant": -1.0}, "constant")):  # fmt: skip
        args = {"n_actions": 4, "sigma": 0.1, "delta": 0.1, **kwargs}
        with pytest.raises((TypeError, ValueError), match=field):
            theorem_sample_size(**args)


def test_prune_rule_is_half_sigma_frequency():
    counts = torch.tensor([0, 1, 4, 5, 10])  # total 20; sigma 0.5 -> freq >= 0.25 -> count >= 5
    assert prune_by_frequency(counts, 0.5).tolist() == [False, False, False, True, True]
    assert not prune_by_frequency(torch.zeros(3), 0.5).any()


def test_pruning_error_brute_force():
    rewards = torch.tensor([[1.0, 0.2, 0.5], [0.1, 1.0, 0.3], [0.4, 0.6, 1.0]], dtype=torch.float64)
    fam = BanditFamily(rewards, torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64))
    assert torch.allclose(fam.expert_distribution(), torch.tensor([0.5, 0.3, 0.2]).double())
    keep = torch.tensor([True, False, False])
    assert fam.pruning_error(keep) == pytest.approx(0.3 * 0.9 + 0.2 * 0.6)
    assert fam.pruning_error(torch.ones(3, dtype=torch.bool)) == 0.0
    assert fam.epsilon(0.25) == pytest.approx(0.2 * 0.4)  # Z_σ = {0, 1}: task 2 loses 1 - 0.6


@pytest.mark.parametrize("n_actions", [8, 32])
def test_at_the_theorem_sample_size_the_guarantee_holds(n_actions):
    """Over many seeded trials: Z_σ kept (so an ε-optimal set) with frequency >= 1 - δ."""
    sigma, delta = 0.05, 0.1
    for seed in range(3):
        fam = make_bandit_family(n_actions, n_tasks=200, seed=seed)
        n = theorem_sample_size(n_actions, sigma, delta)
        r = pruning_trials(fam, n, sigma, trials=150, seed=100 + seed)
        assert r["covered"] >= 1 - delta
        assert r["within_eps"] >= 1 - delta
        assert r["pruned"] >= 1 - delta  # actions the expert plays with prob < σ/4 are dropped
        assert r["mean_delta"] <= r["epsilon"] + 1e-12


def test_far_below_the_sample_size_the_guarantee_fails():
    """The check is not vacuous: with 1% of N* samples Z_σ is often missed."""
    fam = make_bandit_family(32, n_tasks=200, seed=0)
    n = theorem_sample_size(32, 0.05, 0.1) // 100
    r = pruning_trials(fam, n, 0.05, trials=150, seed=1)
    assert r["covered"] < 0.9

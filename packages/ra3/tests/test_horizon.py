"""Combination locks: action sets, optimistic Q-learning cost, Theorem 3.6's bound."""

from __future__ import annotations

import math

import pytest
import torch

from sparse_ra3 import LockFamily, action_set, episodes_to_solve, vi_iterations_bound


def test_action_sets_full_and_pruned():
    fam = LockFamily.make(n_primitive=3, k=2, chunks=3, n_motifs=2, seed=0)
    g = torch.Generator().manual_seed(0)
    demos = fam.sample_codes(300, g)
    assert len(action_set(fam, None, 2, 0.05)) == 9
    assert len(action_set(fam, None, 1, 0.05)) == 3
    motifs = {tuple(m) for m in fam.motifs.tolist()}
    assert set(action_set(fam, demos, 2, 0.05)) == motifs
    with pytest.raises(ValueError, match="length"):
        action_set(fam, None, 4, 0.05)


def test_q_learning_cost_is_bounded_by_the_eliminations():
    """Each failed episode eliminates one wrong action: episodes <= states * (|A| - 1) + 1."""
    fam = LockFamily.make(n_primitive=4, k=3, chunks=3, n_motifs=3, seed=1)
    g = torch.Generator().manual_seed(1)
    for code in fam.sample_codes(10, g):
        for length in (1, 3):
            actions = action_set(fam, None, length, 0.05)
            e = episodes_to_solve(code, actions, g)
            assert 1 <= e <= (9 // length) * (len(actions) - 1) + 1


def test_a_pruned_needed_action_makes_the_lock_unsolvable():
    code = torch.tensor([0, 1, 0, 1])
    assert episodes_to_solve(code, [(0, 0), (1, 1)], torch.Generator(), max_episodes=50) == 51
    assert episodes_to_solve(code, [(0, 1)], torch.Generator()) == 1


def test_vi_bound():
    g = 0.9**3
    assert vi_iterations_bound(0.9, 3, 0.01) == math.ceil(math.log(1 / (0.01 * (1 - g))) / (1 - g))
    assert vi_iterations_bound(0.99, 3, 0.01) < vi_iterations_bound(0.99, 1, 0.01)
    with pytest.raises(ValueError, match="gamma"):
        vi_iterations_bound(1.0, 1, 0.1)

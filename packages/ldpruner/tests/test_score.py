"""The latent score: exact formula (Hybrid-SD's numpy one), identity, sign, permutation."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparse_ldpruner import latent_score


def _numpy_score(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().numpy(), b.double().numpy()
    return float(np.linalg.norm(a.mean(0) - b.mean(0)) + np.linalg.norm(a.std(0) - b.std(0)))


def test_equals_reference_formula() -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(16, 2, 4, 4, generator=gen), torch.randn(16, 2, 4, 4, generator=gen)
    assert latent_score(a, b) == pytest.approx(_numpy_score(a, b), rel=1e-12)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 12), st.integers(1, 6), st.integers(0, 10_000))
def test_zero_for_identity_nonnegative_and_permutation_invariant(n: int, d: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    a, b = torch.randn(n, d, generator=gen), torch.randn(n, d, generator=gen) * 3
    assert latent_score(a, a.clone()) == 0.0
    s = latent_score(a, b)
    assert s >= 0.0
    perm_a, perm_b = torch.randperm(n, generator=gen), torch.randperm(n, generator=gen)
    assert latent_score(a[perm_a], b[perm_b]) == pytest.approx(s, rel=1e-9, abs=1e-12)


def test_mean_and_std_terms_both_count() -> None:
    a = torch.randn(32, 8, generator=torch.Generator().manual_seed(1))
    shifted, scaled = a + 0.5, (a - a.mean(0)) * 2 + a.mean(0)
    assert latent_score(a, shifted) == pytest.approx(0.5 * 8**0.5, rel=1e-6)
    expected_std = float((a.double().std(0, unbiased=False)).norm())
    assert latent_score(a, scaled) == pytest.approx(expected_std, rel=1e-6)


def test_bad_shapes_raise() -> None:
    with pytest.raises(ValueError, match="modified"):
        latent_score(torch.zeros(4, 2), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="two samples"):
        latent_score(torch.zeros(1, 2), torch.zeros(1, 2))

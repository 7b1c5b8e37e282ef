"""Rank criteria, reshapes and the truncated SVD, against brute-force references."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparse_trp import (
    EnergyThreshold,
    FixedRank,
    ValueThreshold,
    from_matrix,
    svd_truncate,
    to_matrix,
)

torch.set_num_threads(1)


def official_energy_rank(sigma: torch.Tensor, t: float) -> int:
    """The loop of the official EnergyThreshold (eidenval=True)."""
    energy = sigma.double() ** 2
    total = energy.sum()
    for i in range(len(sigma)):
        if energy[: i + 1].sum() / total >= t:
            return i + 1
    return len(sigma)


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.floats(0.01, 10.0), min_size=1, max_size=12),
    t=st.floats(0.05, 0.999),
)
def test_energy_threshold_matches_official_loop(values: list[float], t: float) -> None:
    sigma = torch.tensor(sorted(values, reverse=True), dtype=torch.float64)
    assert int(EnergyThreshold(t)(sigma)) == official_energy_rank(sigma, t)


def test_energy_threshold_is_smallest_rank_meeting_criterion() -> None:
    sigma = torch.tensor([3.0, 2.0, 1.0, 1.0])  # energies 9, 4, 1, 1 of 15
    assert int(EnergyThreshold(9 / 15)(sigma)) == 1
    assert int(EnergyThreshold(0.61)(sigma)) == 2
    assert int(EnergyThreshold(13 / 15)(sigma)) == 2
    assert int(EnergyThreshold(0.9)(sigma)) == 3
    assert int(EnergyThreshold(1.0)(sigma)) == 4


def test_value_and_fixed_criteria() -> None:
    sigma = torch.tensor([[5.0, 0.2, 0.05, 0.01], [0.01, 0.0, 0.0, 0.0]])
    assert ValueThreshold(0.05)(sigma).tolist() == [3, 1]  # at least one kept
    assert FixedRank(2)(sigma).tolist() == [2, 2]
    assert FixedRank(9)(sigma).tolist() == [4, 4]


@pytest.mark.parametrize(
    "make",
    [lambda: EnergyThreshold(0.0), lambda: EnergyThreshold(1.5), lambda: ValueThreshold(-1)],
)
def test_bad_criteria_raise(make) -> None:
    with pytest.raises(ValueError, match="threshold"):
        make()
    with pytest.raises(ValueError, match="rank"):
        FixedRank(0)


def test_vh_reshape_index_formula_and_round_trips() -> None:
    w = torch.randn(5, 3, 2, 4)
    m = to_matrix(w, "VH")
    assert m.shape == (3 * 2, 5 * 4)
    for n, c, a, b in [(0, 0, 0, 0), (4, 2, 1, 3), (2, 1, 0, 2)]:
        assert m[c * 2 + a, n * 4 + b] == w[n, c, a, b]
    assert torch.equal(to_matrix(w, "NC"), w.reshape(5, 24))
    assert torch.equal(to_matrix(w, "ND")[3], w[3].reshape(3, 8))
    for scheme in ("NC", "VH", "ND"):
        assert torch.equal(from_matrix(to_matrix(w, scheme), scheme, w.shape), w)
    with pytest.raises(ValueError, match="VH"):
        to_matrix(torch.randn(4, 3, 5), "VH")


@pytest.mark.parametrize("scheme", ["NC", "VH", "ND"])
@pytest.mark.parametrize("energy", [0.5, 0.9])
def test_truncation_discards_tail_and_meets_energy(scheme: str, energy: float) -> None:
    torch.manual_seed(0)
    w = torch.randn(6, 4, 3, 3)
    sigma = torch.linalg.svdvals(to_matrix(w, scheme).double())
    out = svd_truncate(w, scheme, EnergyThreshold(energy))
    ranks = out.ranks.reshape(-1)
    after = torch.linalg.svdvals(to_matrix(out.lowrank, scheme).double())
    sigma, after = sigma.reshape(-1, sigma.shape[-1]), after.reshape(-1, after.shape[-1])
    for row, r in enumerate(ranks.tolist()):
        s = sigma[row]
        e = s**2 / (s**2).sum()
        assert e[:r].sum() >= energy - 1e-9  # r meets the criterion ...
        assert r == 1 or e[: r - 1].sum() < energy  # ... and is the smallest that does
        assert (after[row, r:] < 1e-5 * s[0]).all()  # discarded values are ~0
        torch.testing.assert_close(after[row, :r], s[:r], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("scheme", ["NC", "VH", "ND"])
def test_subgradient_identity(scheme: str) -> None:
    """<U_r V_r^T, W> equals the sum of the kept singular values; ||U_r V_r^T||_2 = 1."""
    torch.manual_seed(1)
    w = torch.randn(5, 3, 3, 3, dtype=torch.float64)
    out = svd_truncate(w, scheme, EnergyThreshold(0.8))
    sub, ranks, sigma = to_matrix(out.subgradient, scheme), out.ranks, out.sigma
    mat = to_matrix(w, scheme)
    if scheme == "ND":
        for n in range(5):
            inner = (sub[n] * mat[n]).sum()
            assert torch.isclose(inner, sigma[n, : ranks[n]].sum())
            assert torch.linalg.matrix_rank(sub[n]) == ranks[n]
    else:
        assert torch.isclose((sub * mat).sum(), sigma[: int(ranks)].sum())
        assert torch.isclose(torch.linalg.matrix_norm(sub, 2), torch.tensor(1.0, dtype=sub.dtype))
        assert torch.linalg.matrix_rank(sub) == int(ranks)
        # it is the nuclear norm's gradient restricted to the kept components
        u, _, vh = torch.linalg.svd(mat, full_matrices=False)
        r = int(ranks)
        torch.testing.assert_close(sub, u[:, :r] @ vh[:r], rtol=1e-9, atol=1e-9)


def test_zero_matrix_has_zero_subgradient() -> None:
    out = svd_truncate(torch.zeros(4, 3, 3, 3), "NC", EnergyThreshold(0.9))
    assert int(out.ranks) == 1
    assert not out.subgradient.any() and not out.lowrank.any()

"""Hard-concrete gates, expected size, Lagrangian ascent sign (digest §3 tests a, b, d)."""

import math

import pytest
import torch

from sparse_compresso import cdf_zero, deterministic_gate, keep_probability, sample_gate
from sparse_compresso.examples import tiny_lora_llama
from sparse_compresso.hard_concrete import constrain_, init_log_alpha
from sparse_compresso.l0 import L0Gates, target_sparsity
from sparse_compresso.weights import projection_weights
from sparsecore.structures import describe


def test_monte_carlo_keep_rate_matches_q() -> None:
    """mean of 1[z > 0] over many samples = q = 1 - cdf(0), for every gate."""
    log_alpha = torch.linspace(-3.0, 3.0, 7)
    gen = torch.Generator().manual_seed(0)
    n = 20000
    draws = sample_gate(log_alpha.expand(n, -1).contiguous(), generator=gen)
    rate = (draws > 0).float().mean(0)
    q = keep_probability(log_alpha)
    assert torch.all((rate - q).abs() < 4 * torch.sqrt(q * (1 - q) / n) + 1e-3)


def test_samples_in_unit_interval_with_point_masses() -> None:
    gen = torch.Generator().manual_seed(1)
    z = sample_gate(torch.zeros(50000), generator=gen)
    assert float(z.min()) == 0.0 and float(z.max()) == 1.0
    at0, at1 = float((z == 0).float().mean()), float((z == 1).float().mean())
    # log α = 0: P(z = 0) = cdf(0), and by symmetry of the stretch P(z = 1) = P(z = 0)
    assert abs(at0 - float(cdf_zero(torch.zeros(())))) < 0.01
    assert abs(at1 - at0) < 0.01 and 0 < float(((z > 0) & (z < 1)).float().mean()) < 1


def test_cdf_formula_and_clamp() -> None:
    """cdf(0) = σ(β · logit(0.1 / 1.2) - log α), clamped to [1e-6, 1 - 1e-6]."""
    la = torch.tensor([-2.0, 0.0, 1.5])
    xn = 0.1 / 1.2
    want = torch.sigmoid(math.log(xn / (1 - xn)) * (2 / 3) - la)
    assert torch.allclose(cdf_zero(la), want)
    assert float(cdf_zero(torch.tensor(-100.0))) == pytest.approx(1 - 1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_deterministic_gate_has_round_sum_cdf_zeros(seed: int) -> None:
    la = torch.randn(40, generator=torch.Generator().manual_seed(seed)) * 3
    z = deterministic_gate(la)
    assert int((z == 0).sum()) == round(float(cdf_zero(la).sum()))
    kept = z != 0
    assert torch.allclose(z[kept], torch.sigmoid(la[kept] / (2 / 3) * 0.8))
    if (~kept).any() and kept.any():  # the zeros are the smallest soft values
        assert float(la[~kept].max()) <= float(la[kept].min())


def test_init_and_constrain() -> None:
    la = init_log_alpha((1000,), math.log(0.99 / 0.01), torch.Generator().manual_seed(0))
    assert abs(float(la.mean()) - math.log(99)) < 1e-3 and abs(float(la.std()) - 0.01) < 1e-3
    constrain_(la.add_(10.0))
    assert float(la.max()) == pytest.approx(math.log(100))


def _gates(kinds=("heads", "ffn", "hidden")) -> tuple[L0Gates, object]:
    model = tiny_lora_llama()
    layout = describe(model)
    return L0Gates(layout, kinds, 0.01, torch.Generator().manual_seed(0)), model


def test_prunable_size_is_the_projection_weight_count() -> None:
    gates, model = _gates()
    layout = describe(model)
    params = dict(model.named_parameters())
    total = sum(params[n].numel() for n in projection_weights(model, layout))
    assert gates.prunable_size == total


def test_expected_size_equals_brute_force_weight_expectation() -> None:
    """E[size] = Σ over projection weights of P(row group kept) · P(hidden column kept)."""
    gates, model = _gates()
    with torch.no_grad():
        for p in gates.log_alpha.values():
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(3)) * 2)
    layout = describe(model)
    qh = keep_probability(gates.log_alpha["hidden"])
    total = torch.zeros(())
    for lay in layout.layers:
        qg = keep_probability(gates.log_alpha["heads"][lay.index])
        qf = keep_probability(gates.log_alpha["ffn"][lay.index])
        q_rows = qg.repeat_interleave(lay.group_size * lay.head_dim)
        kv_rows = qg.repeat_interleave(lay.head_dim)
        total = total + torch.outer(q_rows, qh).sum() * 2  # q rows and o columns
        total = total + torch.outer(kv_rows, qh).sum() * 2  # k and v rows
        total = total + torch.outer(qf, qh).sum() * 3  # gate, up rows and down columns
    assert torch.allclose(gates.expected_size(), total, rtol=1e-5)


def test_lagrangian_ascent_sign_pushes_sparsity_up() -> None:
    """ŝ < t: λ₁ (ascended) turns negative and ∂L/∂ŝ = λ₁ + 2λ₂(ŝ - t) < 0 raises ŝ."""
    gates, _ = _gates()
    lam = torch.optim.AdamW(gates.multipliers(), lr=0.1, weight_decay=0.0, maximize=True)
    opt = torch.optim.AdamW(gates.gate_parameters(), lr=0.1, weight_decay=0.0)
    start = float(gates.expected_sparsity())
    for _ in range(30):
        loss, s = gates.lagrangian(0.5)
        lam.zero_grad(), opt.zero_grad()
        loss.backward()
        lam.step(), opt.step()
        gates.constrain()
    assert float(gates.lambda_1) < 0
    s = gates.expected_sparsity()
    slope = float(gates.lambda_1 + 2 * gates.lambda_2 * (s - 0.5))
    assert slope < 0 and float(s) > start + 0.05


def test_target_warmup() -> None:
    assert target_sparsity(0, 0.3, 10) == 0.0
    assert target_sparsity(5, 0.3, 10) == pytest.approx(0.15)
    assert target_sparsity(50, 0.3, 10) == pytest.approx(0.3)
    assert target_sparsity(5, 0.3, 10, "cubic") == pytest.approx(0.3 - 0.3 * 0.5**3)
    assert target_sparsity(0, 0.3, 0) == 0.3

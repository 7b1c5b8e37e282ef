"""The quantization procedure: grid, STE, rate, decoders, masks, detach, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from sparse_nirvana import NirvanaQuantization, QuantConfig, logistic_bits, ste_round
from sparsecore.export.entropy import logistic_pmf

from ._helpers import tiny_coords, tiny_inr


def _train(model, quant, steps=5, lam=1e-3):
    coords, target = (
        tiny_coords(),
        torch.rand(4, 2, 3, 8, 8, generator=torch.Generator().manual_seed(1)),
    )
    opt = torch.optim.Adam(quant.param_groups(1e-2))
    for _ in range(steps):
        opt.zero_grad()
        (((model(coords) - target) ** 2).mean() + lam * quant.rate_bits() / 512).backward()
        opt.step()


def test_ste_round_forward_rounds_backward_passes():
    x = torch.tensor([0.2, 0.6, -1.4, 2.5], requires_grad=True)
    y = ste_round(x)
    assert torch.equal(y, torch.round(x.detach()))
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones(4))


def test_decoded_weights_lie_on_each_grid(inr):
    quant = NirvanaQuantization(init_bits=4).attach(inr)
    _train(inr, quant)
    ints = quant.integers()
    assert len(ints) == 8  # 4 layers x (weight, bias)
    for key, state in quant.states.items():
        assert ints[key].dtype == torch.int64
        decoded = quant.decoded(key).detach()
        assert torch.equal(decoded, state.scale.detach() * ints[key].float() + state.shift.detach())
        # a level count of the grid: every decoded value is b + s*k for an integer k
        k = (decoded - state.shift.detach()) / state.scale.detach()
        assert torch.allclose(k, torch.round(k), atol=1e-3)
    quant.detach()


def test_initial_grid_has_init_bits_levels(inr):
    quant = NirvanaQuantization(init_bits=4).attach(inr)
    for ints in quant.integers().values():
        assert int(ints.abs().max()) <= 7  # 2**(4-1) - 1
    quant.detach()


def test_forward_uses_decoded_weights(inr):
    quant = NirvanaQuantization(init_bits=3).attach(inr)
    with torch.no_grad():
        got = inr(tiny_coords())
    quant.detach()  # untrained: the float model is back
    with torch.no_grad():
        plain = inr(tiny_coords())
        for key in quant.states:
            mname, pname = key.rsplit("__", 1)
            module = inr.get_submodule(mname.replace("__", "."))
            setattr(module, pname, nn.Parameter(quant.decoded(key).detach()))
        ref = inr(tiny_coords())
    assert torch.equal(got, ref)
    assert not torch.equal(got, plain)  # 3 bits is visibly not the float model


def test_rate_matches_the_coders_table(inr):
    quant = NirvanaQuantization(init_bits=4, prior_scale=1.7).attach(inr)
    total = 0.0
    for key, r in quant.residuals().items():
        loc, sigma = quant.prior(key)
        x = r.numpy().ravel()
        lo, hi = int(x.min()) - 50, int(x.max()) + 50  # wide support: tails negligible
        total += float(-np.log2(logistic_pmf(loc, sigma, lo, hi)[x - lo]).sum())
    assert math.isclose(float(quant.rate_bits()), total, rel_tol=1e-4)
    quant.detach()


def test_logistic_bits_brute_force():
    x = torch.arange(-3, 4).float()
    got = logistic_bits(x, torch.tensor(0.3), torch.tensor(0.8))
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    ref = [-math.log2(sig((v + 0.5 - 0.3) / 0.8) - sig((v - 0.5 - 0.3) / 0.8)) for v in x.tolist()]
    assert torch.allclose(got, torch.tensor(ref), atol=1e-5)


def test_reference_makes_residual_zero_then_training_moves_it(inr):
    quant = NirvanaQuantization(init_bits=4).attach(inr)
    quant.set_reference()
    assert all(int(r.abs().sum()) == 0 for r in quant.residuals().values())
    _train(inr, quant, steps=10)
    assert any(int(r.abs().sum()) > 0 for r in quant.residuals().values())
    quant.detach()


def test_detach_after_training_bakes_decoded_weights(inr):
    quant = NirvanaQuantization(init_bits=4).attach(inr)
    _train(inr, quant)
    decoded = {k: quant.decoded(k).detach().clone() for k in quant.states}
    with torch.no_grad():
        expected = inr(tiny_coords())
    quant.detach()
    assert not hasattr(inr, "parametrizations")
    for key, value in decoded.items():
        assert torch.equal(inr.get_parameter(key.replace("__", ".")), value)
    with torch.no_grad():
        assert torch.equal(inr(tiny_coords()), expected)


def test_masked_zeros_stay_zero_and_are_not_rated():
    model = tiny_inr()
    layer = model.head
    mask = torch.rand(layer.weight.shape, generator=torch.Generator().manual_seed(0)) > 0.5
    layer.register_buffer("weight_mask", mask)
    with torch.no_grad():
        layer.weight.mul_(mask)
    quant = NirvanaQuantization(init_bits=4).attach(model)
    _train(model, quant, steps=10)
    assert int(quant.integers()["head__weight"][~mask].abs().sum()) == 0
    assert torch.all(quant.decoded("head__weight")[~mask] == 0)
    quant.detach()
    assert torch.all(layer.weight[~mask] == 0)


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("init_bits", 1, ValueError),
        ("init_bits", 17, ValueError),
        ("init_bits", 4.0, TypeError),
        ("prior_scale", 0.0, ValueError),
        ("min_scale", -1.0, ValueError),
        ("quantize_bias", 1, TypeError),
    ],
)
def test_bad_options_name_the_field(field, value, error):
    with pytest.raises(error, match=field):
        QuantConfig(**{field: value})


def test_model_without_layers_refused_before_touching():
    model = nn.Sequential(nn.ReLU())
    with pytest.raises(ValueError, match="model"):
        NirvanaQuantization().attach(model)
    assert not model._forward_pre_hooks


def test_bias_off_quantizes_weights_only(inr):
    quant = NirvanaQuantization(quantize_bias=False).attach(inr)
    assert all(k.endswith("weight") for k in quant.states)
    quant.detach()

"""APoT quantizers against the official definitions (yhhhli/APoT_Quantization quant_layer.py)."""

import pytest
import torch

from sparse_prunequant import (
    APoTActQuantizer,
    APoTWeightQuantizer,
    UniformWeightQuantizer,
    apot_levels,
)
from sparse_prunequant.apot import nearest_level

torch.set_num_threads(1)


def test_levels_of_4bit_weights_are_the_official_set():
    # build_power_value(3): {0, 2^-1, 2^-2, 2^-4} + {0, 2^-3}, normalised by the max 0.625
    raw = sorted({a + b for a in (0, 0.5, 0.25, 0.0625) for b in (0, 0.125)})
    want = torch.tensor(raw) / 0.625
    torch.testing.assert_close(apot_levels(3), want.float())


@pytest.mark.parametrize("b", [1, 2, 3, 4, 5, 6])
def test_level_sets_have_2_to_the_b_sorted_distinct_values(b):
    levels = apot_levels(b)
    assert levels.numel() == 2**b and levels.unique().numel() == 2**b
    assert levels[0] == 0 and levels[-1] == 1 and bool((levels.diff() > 0).all())


def _weight(seed=0, shape=(6, 3, 3, 3)):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("bits", [2, 3, 4, 5])
def test_quantized_weights_lie_only_on_alpha_times_signed_levels(bits):
    quant = APoTWeightQuantizer(bits, alpha=1.7)
    out = quant(_weight(bits)).detach()
    magnitudes = (out.abs() / 1.7).unique()
    levels = quant.levels
    assert magnitudes.numel() <= 2 ** (bits - 1)
    for m in magnitudes:  # each magnitude is exactly one level times alpha
        assert torch.isclose(levels, m, rtol=0, atol=1e-6).any(), float(m)
    assert torch.equal(out, quant.encode(_weight(bits)).dequantize())


def test_pruned_filters_are_exactly_zero_after_quantization_and_naive_fails():
    w = _weight() + 0.5  # trained filters are rarely zero-mean
    w[[1, 4]] = 0.0  # two pruned filters
    quant = APoTWeightQuantizer(4)
    out = quant(w)
    assert not out[[1, 4]].any() and out[[0, 2, 3, 5]].ne(0).all(1).any()
    # the naive combination (official quantizer, mask not re-applied after it)
    x = ((w - w.mean()) / w.std() / quant.alpha.detach()).clamp(-1, 1)
    naive = quant.levels[nearest_level(x.abs(), quant.levels)] * x.sign()
    assert naive[[1, 4]].ne(0).all(), "APoT maps a zero weight to a non-zero level"


def test_weight_gradients_are_the_official_ste_and_alpha_rule():
    w = _weight(3).requires_grad_(True)
    quant = APoTWeightQuantizer(4, alpha=1.3)
    g = torch.randn_like(w, generator=torch.Generator().manual_seed(9))
    out = quant(w)
    (out * g).sum().backward()
    mu, sigma = w.detach().mean(), w.detach().std()
    x = ((w.detach() - mu) / sigma) / 1.3
    q = out.detach() / 1.3
    want_alpha = (g * torch.where(x.abs() > 1, x.sign(), q - x)).sum()
    torch.testing.assert_close(quant.alpha.grad, want_alpha)
    torch.testing.assert_close(w.grad, g / sigma)  # straight through, not clipped


def test_activation_quantizer_is_unsigned_with_official_gradients():
    quant = APoTActQuantizer(3, alpha=2.0)
    x = torch.linspace(-1, 3, 41).requires_grad_(True)
    out = quant(x)
    levels = apot_levels(3) * 2.0
    assert all(torch.isclose(levels, v, atol=1e-6).any() for v in out.detach())
    assert out.detach().min() == 0 and out.detach().max() == 2.0
    g = torch.ones_like(x)
    out.backward(g)
    xs = x.detach() / 2.0
    inside = (xs <= 1).float()
    torch.testing.assert_close(x.grad, g * inside)
    want_alpha = (g * ((1 - inside) + (out.detach() / 2.0 - xs) * inside)).sum()
    torch.testing.assert_close(quant.alpha.grad, want_alpha)


def test_uniform_8bit_edges_use_symmetric_codes_and_pass_gradients_through():
    w = _weight(5).requires_grad_(True)
    quant = UniformWeightQuantizer(8)
    out = quant(w)
    code = quant.encode(w.detach())
    assert int(code.codes.abs().max()) == 127 and torch.equal(out.detach(), code.dequantize())
    out.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))


def test_inactive_quantizer_is_the_identity_and_bad_bits_raise():
    quant = APoTWeightQuantizer(4)
    quant.set_active(False)
    w = _weight()
    assert torch.equal(quant(w), w)
    with pytest.raises(ValueError, match="weight_bits"):
        APoTWeightQuantizer(6)
    with pytest.raises(ValueError, match="act_bits"):
        APoTActQuantizer(1)

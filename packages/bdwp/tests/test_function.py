"""The three GEMMs against autograd on explicitly masked weights."""

import pytest
import torch
from torch.nn import functional as F

from sparse_bdwp import bdwp_conv, bdwp_linear, semi_structured_available, semi_structured_linear
from sparsecore.patterns import NM
from sparsecore.select import select

torch.set_num_threads(1)


def masks(weight, n, m):
    score = weight.abs()
    return select(score, 1.0, NM(n, m, dim=1)), select(score, 1.0, NM(n, m, dim=0))


@pytest.mark.parametrize(("n", "m"), [(2, 4), (1, 4), (2, 8)])
def test_linear_gemms(n, m):
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(16, 24, generator=gen, dtype=torch.float64)
    b = torch.randn(16, generator=gen, dtype=torch.float64)
    x = torch.randn(3, 5, 24, generator=gen, dtype=torch.float64)
    g = torch.randn(3, 5, 16, generator=gen, dtype=torch.float64)
    mf, mb = masks(w, n, m)
    # <= N non-zeros per M-group: along inputs for W ⊙ M_F, along outputs for W ⊙ M_B
    assert ((w * mf != 0).reshape(16, -1, m).sum(-1) <= n).all()
    assert ((w * mb != 0).t().reshape(24, -1, m).sum(-1) <= n).all()
    assert not torch.equal(mf, mb)
    xl, wl, bl = (t.clone().requires_grad_() for t in (x, w, b))
    y = bdwp_linear(xl, wl, bl, mf, mb)
    y.backward(g)
    torch.testing.assert_close(y, F.linear(x, w * mf, b), rtol=0, atol=1e-12)
    # dX = (W ⊙ M_B)ᵀ dY, by autograd on the explicit backward weight, and not (W ⊙ M_F)ᵀ dY
    xr = x.clone().requires_grad_()
    F.linear(xr, w * mb).backward(g)
    torch.testing.assert_close(xl.grad, xr.grad, rtol=0, atol=1e-12)
    assert not torch.allclose(xl.grad, g @ (w * mf))
    # dense dW = dY Xᵀ: autograd of the dense layer
    wr, br = w.clone().requires_grad_(), b.clone().requires_grad_()
    F.linear(x, wr, br).backward(g)
    torch.testing.assert_close(wl.grad, wr.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(bl.grad, br.grad, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dims", [1, 2])
def test_conv_gemms(dims):
    gen = torch.Generator().manual_seed(1)
    kernel = (3,) * dims
    w = torch.randn(8, 8, *kernel, generator=gen, dtype=torch.float64)
    b = torch.randn(8, generator=gen, dtype=torch.float64)
    x = torch.randn(2, 8, *(7,) * dims, generator=gen, dtype=torch.float64)
    conv = F.conv1d if dims == 1 else F.conv2d
    mf, mb = masks(w, 2, 4)
    assert NM(2, 4, dim=1).is_valid(mf) and NM(2, 4, dim=0).is_valid(mb)
    xl, wl = x.clone().requires_grad_(), w.clone().requires_grad_()
    y = bdwp_conv(xl, wl, b, mf, mb, stride=2, padding=1)
    g = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    y.backward(g)
    torch.testing.assert_close(y, conv(x, w * mf, b, 2, 1), rtol=0, atol=1e-12)
    xr = x.clone().requires_grad_()
    conv(xr, w * mb, b, 2, 1).backward(g)
    torch.testing.assert_close(xl.grad, xr.grad, rtol=0, atol=1e-12)
    wr = w.clone().requires_grad_()
    conv(x, wr, b, 2, 1).backward(g)
    torch.testing.assert_close(wl.grad, wr.grad, rtol=0, atol=1e-12)


def test_n_equal_m_is_dense_autograd_exactly():
    gen = torch.Generator().manual_seed(2)
    ones = torch.ones(8, 12, dtype=torch.bool)
    w, x = torch.randn(8, 12, generator=gen), torch.randn(4, 12, generator=gen)
    g = torch.randn(4, 8, generator=gen)
    a = [t.clone().requires_grad_() for t in (x, w)]
    r = [t.clone().requires_grad_() for t in (x, w)]
    ya = bdwp_linear(a[0], a[1], None, ones, ones)
    yr = F.linear(r[0], r[1])
    ya.backward(g)
    yr.backward(g)
    assert torch.equal(ya, yr) and torch.equal(a[0].grad, r[0].grad)
    assert torch.equal(a[1].grad, r[1].grad)
    wc, xc = torch.randn(4, 4, 3, 3, generator=gen), torch.randn(2, 4, 6, 6, generator=gen)
    onesc = torch.ones_like(wc, dtype=torch.bool)
    a = [t.clone().requires_grad_() for t in (xc, wc)]
    r = [t.clone().requires_grad_() for t in (xc, wc)]
    ya = bdwp_conv(a[0], a[1], None, onesc, onesc, padding=1)
    yr = F.conv2d(r[0], r[1], None, 1, 1)
    gc = torch.randn(ya.shape, generator=gen)
    ya.backward(gc)
    yr.backward(gc)
    assert torch.equal(ya, yr) and torch.equal(a[0].grad, r[0].grad)
    assert torch.equal(a[1].grad, r[1].grad)


def test_string_padding_is_refused():
    w = torch.randn(4, 4, 3)
    with pytest.raises(ValueError, match="padding"):
        bdwp_conv(torch.randn(1, 4, 5), w, None, w != 0, w != 0, padding="same")


@pytest.mark.skipif(not semi_structured_available(), reason="needs a CUDA GPU with 2:4 kernels")
def test_semi_structured_path_matches_the_masked_dense_path():
    gen = torch.Generator(device="cuda").manual_seed(0)
    w = torch.randn(128, 128, device="cuda", generator=gen).half()
    x = torch.randn(64, 128, device="cuda", generator=gen).half()
    g = torch.randn(64, 128, device="cuda", generator=gen).half()
    mf, mb = masks(w.float(), 2, 4)
    a = [t.clone().requires_grad_() for t in (x, w)]
    r = [t.clone().requires_grad_() for t in (x, w)]
    semi_structured_linear(a[0], a[1], None, mf, mb).backward(g)
    bdwp_linear(r[0], r[1], None, mf, mb).backward(g)
    torch.testing.assert_close(a[0].grad, r[0].grad, rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(a[1].grad, r[1].grad, rtol=1e-2, atol=1e-2)

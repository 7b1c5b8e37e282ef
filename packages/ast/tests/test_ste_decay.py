"""STE gradients, the annealed SR-STE decay (gradient and AdamW placements), flip rate."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from sparse_ast import AdaptiveSparseTrainer, ASTAdamW, ASTConfig

from ._helpers import tiny_gpt2, tokens

torch.set_num_threads(1)


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 8))


def test_ste_gradient_equals_dense_gradient_of_masked_forward() -> None:
    model = _mlp()
    method = AdaptiveSparseTrainer(distill=False, slorb=False).setup(model)
    x = torch.randn(5, 16)
    target = torch.randn(5, 8)
    F.mse_loss(model(x), target).backward()
    # autograd reference: the masked weights as leaves of a plain functional forward
    w0 = (method.masks.param("0.weight").detach() * method.masks.mask("0.weight")).requires_grad_()
    w2 = (method.masks.param("2.weight").detach() * method.masks.mask("2.weight")).requires_grad_()
    h = torch.tanh(F.linear(x, w0, model[0].bias.detach()))
    F.mse_loss(F.linear(h, w2, model[2].bias.detach()), target).backward()
    for name, ref in (("0.weight", w0), ("2.weight", w2)):
        grad = method.masks.param(name).grad
        assert torch.allclose(grad, ref.grad, atol=1e-7), name
        pruned = ~method.masks.mask(name)
        assert grad[pruned].abs().sum() > 0, name  # pruned entries do get the dense gradient


@pytest.mark.parametrize("t_inc", [0, 4])
def test_decay_schedule_is_linear_then_constant(t_inc: int) -> None:
    cfg = ASTConfig(srste_decay=0.2, increase_steps=t_inc)
    got = [cfg.decay_at(t) for t in range(8)]
    want = [0.2 * t / t_inc if t < t_inc else 0.2 for t in range(8)]
    assert got == pytest.approx(want, abs=0)
    if t_inc:
        assert got[0] == 0.0 and got[2] == pytest.approx(0.1)


def test_zero_task_gradient_shrinks_only_pruned_entries_by_scheduled_decay() -> None:
    lam, t_inc, lr = 0.3, 4, 0.5
    model = _mlp(1)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    method = AdaptiveSparseTrainer(
        srste_decay=lam, increase_steps=t_inc, mask_update_every=None, distill=False, slorb=False
    ).setup(model, opt)
    x = torch.randn(4, 16)
    for t in range(7):
        before = {n: p.detach().clone() for n, p in method.masks.params().items()}
        loss = (model(x) * 0.0).sum()  # zero task gradient
        opt.zero_grad()
        loss.backward()
        opt.step()
        decay = lam * t / t_inc if t < t_inc else lam
        assert method.current_decay == pytest.approx(decay)
        for name, p in method.masks.params().items():
            keep = method.masks.mask(name)
            assert torch.equal(p.detach()[keep], before[name][keep]), (t, name)
            expected = before[name][~keep] * (1.0 - lr * decay)
            assert torch.allclose(p.detach()[~keep], expected, atol=1e-7), (t, name)


def _reference_astadamw(p, grads, masks, decays, lr, betas, eps, wd):
    """The update of the module docstring, written out with scalars per step."""
    p = p.clone().double()
    m1 = torch.zeros_like(p)
    v = torch.zeros_like(p)
    for t, (g, keep, lam) in enumerate(zip(grads, masks, decays, strict=True), start=1):
        g = g.double()
        p = p * (1 - lr * wd)
        m1 = betas[0] * m1 + (1 - betas[0]) * g
        u = m1 + lam * (~keep).double() * p
        v = betas[1] * v + (1 - betas[1]) * u * u
        denom = torch.sqrt(v) / math.sqrt(1 - betas[1] ** t) + eps
        p = p - lr / (1 - betas[0] ** t) * u / denom
    return p


def test_astadamw_matches_the_official_update_formula() -> None:
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(4, 8))
    keep = torch.rand(4, 8) > 0.5
    opt = ASTAdamW([w], lr=0.01, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    opt.set_masks({w: keep})
    start = w.detach().clone()
    grads, decays = [], []
    for t in range(5):
        g = torch.randn(4, 8)
        grads.append(g)
        decays.append(0.05 * t)
        opt.srste_decay = decays[-1]
        w.grad = g.clone()
        opt.step()
    expected = _reference_astadamw(start, grads, [keep] * 5, decays, 0.01, (0.9, 0.95), 1e-8, 0.1)
    assert torch.allclose(w.detach().double(), expected, atol=1e-6)


def test_astadamw_without_masks_is_torch_adamw() -> None:
    torch.manual_seed(1)
    a = nn.Parameter(torch.randn(6, 4))
    b = nn.Parameter(a.detach().clone())
    opt_a = ASTAdamW([a], lr=0.01, betas=(0.9, 0.95), weight_decay=0.1)
    opt_b = torch.optim.AdamW([b], lr=0.01, betas=(0.9, 0.95), weight_decay=0.1)
    for _ in range(4):
        g = torch.randn(6, 4)
        a.grad, b.grad = g.clone(), g.clone()
        opt_a.step()
        opt_b.step()
    assert torch.allclose(a, b, atol=1e-6)


def test_method_drives_astadamw_decay_on_pruned_entries_only() -> None:
    model = _mlp(2)
    opt = ASTAdamW(model.parameters(), lr=0.01, weight_decay=0.0)
    method = AdaptiveSparseTrainer(
        srste_decay=0.5, increase_steps=0, mask_update_every=None, distill=False, slorb=False
    ).setup(model, opt)
    x = torch.randn(4, 16)
    before = {n: p.detach().clone() for n, p in method.masks.params().items()}
    (model(x) * 0.0).sum().backward()
    opt.step()
    assert opt.srste_decay == 0.5
    for name, p in method.masks.params().items():
        keep = method.masks.mask(name)
        assert torch.equal(p.detach()[keep], before[name][keep])
        # first Adam step with zero loss gradient: u = λ W on pruned entries, sqrt(v̂) = |u|
        w = before[name][~keep]
        u = 0.5 * w
        expected = w - 0.01 / (1 - 0.9) * u / (u.abs() + 1e-8)
        assert torch.allclose(p.detach()[~keep], expected, atol=1e-6)
        assert ((p.detach()[~keep] - w) * w.sign() < 0).all()  # pushed towards zero


def _flips(decay: float) -> list[int]:
    model = tiny_gpt2(4)
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    method = AdaptiveSparseTrainer(
        srste_decay=decay, increase_steps=6, mask_update_every=1, distill=False, slorb=False
    ).setup(model, opt)
    for step in range(18):
        x = tokens(step)
        loss = model(x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return [f for _, f in method.flip_history]


def test_flip_rate_falls_as_decay_grows() -> None:
    plain = _flips(0.0)
    annealed = _flips(2.0)
    # decay ramps up over steps 0..5, then holds: late flips must drop well below plain STE
    assert sum(annealed[12:]) < 0.5 * sum(plain[12:])
    assert sum(annealed[12:]) < sum(annealed[:6])

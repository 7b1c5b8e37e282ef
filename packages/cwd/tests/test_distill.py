import math

import pytest
import torch
from torch import nn

from sparse_cwd import ChannelWiseDistillation, cwd_loss


def _reference(s, t, tau):
    """Brute force: loops over images and channels, the formula of Shu et al."""
    n, c = s.shape[:2]
    total = 0.0
    for i in range(n):
        for ch in range(c):
            ps = torch.softmax(s[i, ch].flatten().double() / tau, 0)
            pt = torch.softmax(t[i, ch].flatten().double() / tau, 0)
            total += float((pt * (pt.log() - ps.log())).sum())
    return total * tau**2 / (n * c)


def _maps(seed=0, shape=(2, 3, 5, 4)):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)


def test_matches_the_formula_and_is_zero_for_identical_maps():
    s, t = _maps()
    for tau in (1.0, 4.0):
        assert cwd_loss(s, t, tau).item() == pytest.approx(_reference(s, t, tau), rel=1e-5)
    assert cwd_loss(t, t, 4.0).item() == pytest.approx(0.0, abs=1e-7)
    assert cwd_loss(s, t, 4.0).item() > 0


def test_invariant_to_per_channel_additive_shifts():
    s, t = _maps()
    shift_s = torch.randn(1, 3, 1, 1) * 5
    shift_t = torch.randn(2, 3, 1, 1) * 5
    base = cwd_loss(s, t, 2.0).item()
    assert cwd_loss(s + shift_s, t + shift_t, 2.0).item() == pytest.approx(base, rel=1e-5)
    # a shift that varies over space is not invariant
    ramp = torch.linspace(0, 3, 20).reshape(1, 1, 5, 4)
    assert not math.isclose(cwd_loss(s + ramp, t, 2.0).item(), base, rel_tol=1e-3)


def test_scales_as_tau_squared():
    s, t = _maps(1)
    base = cwd_loss(s, t, 1.0).item()
    for k in (2.0, 3.0):  # features and temperature scaled together: same softmaxes
        assert cwd_loss(k * s, k * t, k).item() == pytest.approx(k * k * base, rel=1e-5)


def test_bad_inputs_raise():
    s, t = _maps()
    with pytest.raises(ValueError, match="tau"):
        cwd_loss(s, t, 0.0)
    with pytest.raises(ValueError, match="shape"):
        cwd_loss(s[:, :2], t, 1.0)


class _Net(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.body = nn.Conv2d(3, width, 3, padding=1)
        self.out = nn.Conv2d(width, 1, 1)

    def forward(self, x):
        return self.out(self.body(x))


def test_adapter_only_when_channels_differ_and_gradients_reach_student_not_teacher():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 6)
    teacher, student = _Net(6), _Net(4)
    cwd = ChannelWiseDistillation(student, teacher, ["body"], x, tau=2.0, alpha=0.5)
    assert isinstance(cwd.adapters["0"], nn.Conv2d) and cwd.adapters["0"].in_channels == 4
    assert all(p.requires_grad for p in cwd.parameters())
    assert not any(p.requires_grad for p in teacher.parameters())
    assert sum(p.numel() for p in cwd.parameters()) == 4 * 6 + 6  # only the adapter
    student(x)
    loss = cwd.loss(x)
    want = 0.5 * cwd_loss(cwd.adapters["0"](student.body(x)), teacher.body(x), 2.0)
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)
    loss.backward()
    assert student.body.weight.grad.abs().sum() > 0 and cwd.adapters["0"].weight.grad is not None
    assert all(p.grad is None for p in teacher.parameters())
    cwd.close()
    same = ChannelWiseDistillation(_Net(6), teacher, ["body"], x)
    assert isinstance(same.adapters["0"], nn.Identity)
    with pytest.raises(ValueError, match="layers"):
        ChannelWiseDistillation(student, teacher, ["nope"], x)

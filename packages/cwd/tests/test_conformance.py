import pytest
import torch
from torch import nn

from sparse_cwd import SparsityAwareSlimming
from sparsecore.testing import MethodConformance

SHAPE = (1, 8, 8)


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )
    with torch.no_grad():  # distinct |gamma| (no ties)
        for i, m in enumerate(m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            m.weight.copy_(torch.linspace(0.05, 1.0, 8).roll(i) + 0.003 * i)
    return model


class TestSlimmingConformance(MethodConformance):
    method_cls = SparsityAwareSlimming
    sparsity = 0.5
    #: masks cover conv rows and BN entries, so mask-entry sparsity is not the channel
    #: fraction; exact channel counts are tested in test_slimming.py
    check_sparsity_after_training = False

    def make_model(self, seed: int = 0) -> nn.Module:
        return _net(seed)

    def input_shape(self) -> tuple[int, ...]:
        return SHAPE

    def make_method(self, **overrides):
        kw = {"sparsity": self.sparsity, "input_shape": SHAPE, "prune_step": 12, "epochs": 3}
        return SparsityAwareSlimming(**{**kw, **overrides})


def _train(l1_rate, beta_factor, steps=6):
    model = _net(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    method = SparsityAwareSlimming(
        sparsity=0.5,
        input_shape=SHAPE,
        l1_rate=l1_rate,
        beta_factor=beta_factor,
        epochs=3,
        steps_per_epoch=2,
        prune_step=steps + 1,
    ).setup(model, opt)
    gen = torch.Generator().manual_seed(5)
    for _ in range(steps):
        x, y = torch.randn(8, *SHAPE, generator=gen), torch.randint(0, 4, (8,), generator=gen)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    return method, bns


def test_the_l1_terms_matter_and_stop_after_pruning():
    _, bns0 = _train(0.0, 0.0)
    slim, bns1 = _train(0.05, 10.0)
    # same data and init: the only difference is the L1 subgradients, which shrink |gamma|, |beta|
    g0 = sum(float(b.weight.detach().abs().sum()) for b in bns0)
    g1 = sum(float(b.weight.detach().abs().sum()) for b in bns1)
    assert g1 < g0 - 0.05
    assert not slim.pruned and slim.current_rate() == pytest.approx(0.05 * (1 - 0.9 * 2 / 3))
    slim.step += 1  # the prune step reached: no L1 term any more
    assert slim.pruned and slim.current_rate() == 0.0
    b0 = sum(float(b.bias.detach().abs().sum()) for b in bns0)
    b1 = sum(float(b.bias.detach().abs().sum()) for b in bns1)
    assert abs(b1 - b0) > 1e-3  # the beta term moves the shifts too (sign steps, no decay)

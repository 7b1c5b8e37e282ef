"""BDWP sparse training, then a fixed-mask N:M fine-tune with the core's one-shot magnitude, then
compact export: the deployment path of an N:M sparse-trained model.

BDWP trains dense weights under two N:M masks (forward along inputs, backward-data along
outputs); `finalize` bakes ``W ⊙ M_F``. sparsecore's `OneShotMagnitude` at the same N:M must then
find exactly BDWP's forward mask (the nonzeros are already N:M), keep it through hard-mode
fine-tuning, and the compact checkpoint must reload to the same function.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from sparse_bdwp import BDWP
from sparsecore import NM, OneShotMagnitude
from sparsecore.export import load_compact, save_compact

torch.set_num_threads(1)


def cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(16 * 8 * 8, 32), nn.ReLU(), nn.Linear(32, 4),
    )  # fmt: skip


def data(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(128, 1, 8, 8, generator=gen)
    y = (x[:, 0, :4].mean((1, 2)) > 0).long() + 2 * (x[:, 0, :, :4].mean((1, 2)) > 0).long()
    return x, y


def train(model, optimizer, x, y, steps, seed):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (32,), generator=gen)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_bdwp_then_fixed_mask_fine_tune_then_compact_export(tmp_path):
    x, y = data()
    model = cnn()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    exclude = ("0.weight", "7.weight")  # 1 input channel; 4 classes: not divisible by 8
    bdwp = BDWP(pattern="2:8", exclude=exclude).setup(model, optimizer)
    train(model, optimizer, x, y, 20, seed=0)
    forward_masks = {n: m.clone() for n, m in bdwp.masks.masks().items()}
    for name in forward_masks:
        assert NM(2, 8, dim=0).is_valid(bdwp.backward_mask(name))
    trained = bdwp.finalize()

    optimizer = torch.optim.SGD(trained.parameters(), lr=0.02, momentum=0.9)
    fixed = OneShotMagnitude(pattern="2:8", exclude=exclude).setup(trained, optimizer)
    for name, mask in forward_masks.items():
        assert torch.equal(fixed.masks.mask(name), mask), name
    train(trained, optimizer, x, y, 10, seed=1)
    for name, mask in forward_masks.items():
        assert torch.equal(fixed.masks.mask(name), mask), name
        assert NM(2, 8, dim=1).is_valid(fixed.masks.mask(name))
    final = fixed.finalize().eval()
    save_compact(final, tmp_path / "bdwp.safetensors")
    reloaded = cnn(1).eval()
    load_compact(tmp_path / "bdwp.safetensors", reloaded)
    params = dict(reloaded.named_parameters())
    for name, mask in forward_masks.items():
        assert not params[name][~mask].any()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x[:16]), final(x[:16]))

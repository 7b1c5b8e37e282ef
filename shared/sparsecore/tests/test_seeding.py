"""The method's generator is mixed from the seed: its first random mask ignores the model's init."""

import pytest
import torch
from torch import nn

from sparsecore.baselines import SET, RandomPruning, RigL
from sparsecore.method import method_seed

SEED = 3


def _model() -> nn.Module:
    torch.manual_seed(SEED)  # the same integer the method gets, as the benchmarks do
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


def _positive_fraction_kept(method_class: type) -> tuple[float, torch.Tensor]:
    model = _model()
    weight = model[0].weight.detach().clone()
    method = method_class(sparsity=0.9, seed=SEED).setup(model)
    mask = method.masks.mask("0.weight").bool()
    return (weight[mask] > 0).float().mean().item(), mask.clone()


@pytest.mark.parametrize("method_class", [RigL, SET, RandomPruning])
def test_first_random_mask_independent_of_same_seed_init(method_class: type) -> None:
    fraction, mask = _positive_fraction_kept(method_class)
    kept = int(mask.sum())
    assert kept > 300  # enough kept weights for the bound below (binomial sd <= 0.03)
    assert 0.38 < fraction < 0.62, f"{method_class.__name__}: {fraction:.3f} of kept are > 0"
    again, mask_again = _positive_fraction_kept(method_class)
    assert again == fraction and torch.equal(mask, mask_again)  # deterministic


def test_method_seed_mixes_seed_and_salt() -> None:
    assert method_seed(0, "RigL") == method_seed(0, "RigL")
    assert method_seed(0, "RigL") != method_seed(0, "SET")
    assert method_seed(0, "RigL") != method_seed(1, "RigL")
    assert method_seed(0, "RigL") != 0
    assert all(0 <= method_seed(s, "x") < 2**63 for s in range(-3, 50))
    gen = torch.Generator().manual_seed(method_seed(SEED, "RigL"))
    raw = torch.Generator().manual_seed(SEED)
    assert not torch.equal(torch.rand(100, generator=gen), torch.rand(100, generator=raw))

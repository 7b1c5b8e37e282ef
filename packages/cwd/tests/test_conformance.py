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

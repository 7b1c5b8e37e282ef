import os

import pytest
import torch
from torch import nn

from sparse_cwd import SparsityAwareSlimming, TinyDetector, fork_ignored_norms

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

#: small scenes keep the traces cheap (stride 4: an 8x8 output grid)
SHAPE = (3, 32, 32)


def trained_like(model: nn.Module, seed: int = 0) -> nn.Module:
    """Distinct |gamma| (no ties), nonzero shifts and running statistics."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=gen) * 0.9 + 0.05)
                m.weight.mul_(torch.where(torch.rand(m.num_features, generator=gen) < 0.2, -1, 1))
                m.bias.uniform_(-0.3, 0.3, generator=gen)
                m.running_mean.uniform_(-0.2, 0.2, generator=gen)
                m.running_var.uniform_(0.5, 1.5, generator=gen)
    return model


@pytest.fixture(scope="module")
def detector_setup():
    """A set-up method on a small detector (traced once per module: Torch-Pruning is slow)."""
    torch.manual_seed(0)
    model = trained_like(TinyDetector(3, width=4))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    method = SparsityAwareSlimming(
        sparsity=0.5,
        input_shape=SHAPE,
        ignore=tuple(fork_ignored_norms(model)),
        l1_rate=1e-2,
        epochs=4,
        steps_per_epoch=2,
    ).setup(model, opt)
    return model, opt, method

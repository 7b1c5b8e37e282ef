"""Small models for the tests."""

import torch
from torch import nn

SHAPE = (1, 8, 8)


def plain_cnn(seed: int = 0, classes: int = 4) -> nn.Module:
    """conv(1→10)-BN-ReLU, conv(10→12)-BN-ReLU, pool, Linear: two single-producer groups."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 10, 3, padding=1, bias=False), nn.BatchNorm2d(10), nn.ReLU(),
        nn.Conv2d(10, 12, 3, padding=1, bias=False), nn.BatchNorm2d(12), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, classes),
    )  # fmt: skip


def resnet(seed: int = 0, classes: int = 4) -> nn.Module:
    """The core's small ResNet (residual groups) on 8x8 inputs."""
    from sparsecore.bench.models import ResNet

    torch.manual_seed(seed)
    return ResNet(SHAPE, classes, width=8)


def batch(seed: int = 0, n: int = 32, classes: int = 4):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, *SHAPE, generator=gen), torch.randint(0, classes, (n,), generator=gen)

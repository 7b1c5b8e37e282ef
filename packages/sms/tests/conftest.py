import pytest
import torch
from torch import nn

torch.set_num_threads(1)


class TinyBNNet(nn.Module):
    """Conv -> BN -> ReLU -> Linear on 1x4x4 inputs, 3 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(64, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn(self.conv(x)).relu().flatten(1))


def make_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return TinyBNNet()


def make_data(n: int = 48, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=gen)
    x = torch.randn(n, 1, 4, 4, generator=gen) + y.view(-1, 1, 1, 1).float()
    return x, y


@pytest.fixture
def net_factory():
    return make_net


@pytest.fixture
def data_factory():
    return make_data

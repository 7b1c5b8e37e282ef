import pytest
import torch
from torch import nn

torch.set_num_threads(1)


def make_mlp(seed: int = 0, in_features: int = 12, hidden: int = 16, classes: int = 3) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(in_features, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, classes),
    )
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return model


class ToyData:
    def __init__(self, n_train: int = 96, n_test: int = 64, features: int = 12, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        w = torch.randn(features, 3, generator=gen)
        self.x_train = torch.randn(n_train, features, generator=gen)
        self.y_train = (self.x_train @ w).argmax(1)
        self.x_test = torch.randn(n_test, features, generator=gen)
        self.y_test = (self.x_test @ w).argmax(1)


@pytest.fixture
def data() -> ToyData:
    return ToyData()


@pytest.fixture
def make_model():
    return make_mlp

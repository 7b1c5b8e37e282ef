"""The sparsecore conformance suite, applied to TRP.

TRP masks nothing (it prunes rank), so ``sparsity`` is fixed to 0 and the masks stay all-ones:
the sparsity checks of the suite then verify exactly that (expected sparsity 0, no masked
weight, finalize leaves the weights unmasked). Everything else (entry point, bool mask buffers,
exact resume, clear errors before touching the model) applies unchanged. The model is a small
CNN so that TRP's default targets (non-1×1 convolutions after the first) exist; Linear layers are
included to exercise both layer kinds.
"""

from typing import Any

import torch
from torch import nn

from sparse_trp import TRP
from sparsecore.method import PruningMethod
from sparsecore.testing import MethodConformance

torch.set_num_threads(1)


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 12, 3, stride=2, padding=1)
        self.hidden = nn.Linear(12, 16)
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x).relu()
        h = self.bn1(self.conv1(h)).relu()
        h = self.conv2(h).relu().mean((2, 3))
        return self.fc(self.hidden(h).relu())


class TestTRPConformance(MethodConformance):
    method_cls = TRP
    sparsity = 0.0

    def make_method(self, **overrides: Any) -> PruningMethod:
        options = {"sparsity": 0.0, "include_linear": True, "period": 2, **overrides}
        return TRP(**options)

    def make_model(self, seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        return TinyCNN()

    def input_shape(self) -> tuple[int, ...]:
        return (1, 6, 6)

    def expected_sparsity(self, method: PruningMethod) -> float:
        return 0.0

    def test_trp_acts_during_conformance_run(self) -> None:
        """The scenario is not vacuous: TRP steps ran and lowered the rank of the targets."""
        _, method, _ = self.trained()
        assert isinstance(method, TRP)
        assert set(method.layers.values()) == {"conv1", "conv2", "hidden", "fc"}
        full = {"conv1.weight": 8, "conv2.weight": 12, "hidden.weight": 12, "fc.weight": 4}
        assert any(method.ranks[n][0] < r for n, r in full.items())

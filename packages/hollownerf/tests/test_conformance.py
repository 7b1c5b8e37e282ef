"""sparsecore's conformance suite on a toy model whose output is gated by a saliency grid."""

from typing import Any

import torch
from torch import nn

from sparse_hollownerf import HollowNeRF, SaliencyGrid
from sparsecore.testing import MethodConformance

torch.set_num_threads(1)


class GatedToy(nn.Module):
    """A linear classifier whose logits are scaled by s(x) read at a point computed from x."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.saliency = SaliencyGrid(4)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.saliency(torch.sigmoid(x[:, :3]))
        return self.head(x) * s[:, None]


class TestHollowNeRFConformance(MethodConformance):
    """The saliency grid (64 values) is the masked tensor; the hard prune happens at step 12."""

    method_cls = HollowNeRF

    def make_model(self, seed: int = 0) -> nn.Module:
        return GatedToy(seed)

    def make_method(self, **overrides: Any) -> HollowNeRF:
        options = {
            "sparsity": self.sparsity,
            "rho": 0.1,
            "admm_every": 3,
            "admm_start": 2,
            "prune_step": 12,
            **overrides,
        }
        return HollowNeRF(**options)

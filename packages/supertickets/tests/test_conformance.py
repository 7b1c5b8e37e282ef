"""The sparsecore conformance suite for SuperTickets, on a tiny supernet.

`expected_sparsity` is the exact count of the global selection: the final ratio applies to the
Conv / Linear weights, while the MaskSet also holds the searched groups' BatchNorm parameters
(channel masks, none masked in this short run), so the MaskSet-wide sparsity is that count over
all masked entries.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sparse_supertickets import SuperNet, SuperTickets
from sparsecore.select import keep_count
from sparsecore.testing import MethodConformance

SHAPE = (1, 8, 8)


def tiny_supernet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return SuperNet(num_classes=4, stem=4, stages=((4, 1), (8, 2)), expand_ratio=2)


class TestSuperTicketsConformance(MethodConformance):
    method_cls = SuperTickets
    sparsity = 0.75

    def make_method(self, **overrides: Any) -> SuperTickets:
        options = {"input_shape": SHAPE, "total_steps": 24, "prune_interval": 2}
        return SuperTickets(**{"sparsity": self.sparsity, **options, **overrides})

    def make_model(self, seed: int = 0) -> nn.Module:
        return tiny_supernet(seed)

    def input_shape(self) -> tuple[int, ...]:
        return SHAPE

    def expected_sparsity(self, method: SuperTickets) -> float:
        weights = sum(method.masks.mask(n).numel() for n in method._weights)
        total = sum(m.numel() for m in method.masks.masks().values())
        pruned = weights - keep_count(weights, 1.0 - self.sparsity)
        return pruned / total

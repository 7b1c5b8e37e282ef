"""sparsecore's conformance suite, for both GraNet variants."""

from typing import Any

import torch

from sparse_granet import GraNet
from sparsecore.testing import MethodConformance

torch.set_num_threads(1)


class TestGraNetSparseToSparse(MethodConformance):
    """ERK initialisation at d_i = 0.5, pruned to the suite's 0.75 within its 24 steps."""

    method_cls = GraNet

    def make_method(self, **overrides: Any) -> GraNet:
        options = {
            "sparsity": self.sparsity,
            "init_density": 0.5,
            "update_every": 4,
            "end_step": 16,
            "total_steps": 24,
            **overrides,
        }
        return GraNet(**options)


class TestGraNetDenseToSparse(TestGraNetSparseToSparse):
    """Dense initialisation (d_i = 1)."""

    def make_method(self, **overrides: Any) -> GraNet:
        return super().make_method(**{"init_density": 1.0, **overrides})

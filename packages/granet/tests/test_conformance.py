"""sparsecore's conformance suite, for both GraNet variants."""

from typing import Any

import torch

from sparse_granet import GraNet
from sparsecore.testing import MethodConformance, WindowCase, window_property_test

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


# ---------------------------------------------------------------------- the pruning window
def _granet_window(init_density: float):
    def make(case: WindowCase) -> GraNet:
        return GraNet(
            sparsity=0.75,
            init_density=init_density,
            update_every=case.every,
            begin_step=case.begin,
            end_step=case.end,
            total_steps=case.total,
        )

    return make


# Regeneration keeps running every ΔT until training stops (as in the official code), so a
# weight regrown at the very last step may still be exactly 0: count the masks, not the zeros.
test_window_sparse_to_sparse = window_property_test(
    _granet_window(0.5), count_zeros=False, max_examples=20
)
test_window_dense_to_sparse = window_property_test(
    _granet_window(1.0), count_zeros=False, max_examples=20
)

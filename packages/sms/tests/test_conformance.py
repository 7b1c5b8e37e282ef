import torch

from sparse_sms import SparseModelSoup
from sparsecore.testing import MethodConformance

torch.set_num_threads(1)


class TestSparseModelSoupConformance(MethodConformance):
    method_cls = SparseModelSoup

    def make_method(self, **overrides):
        return SparseModelSoup(**{"sparsity": self.sparsity, "n_phases": 3, **overrides})


class TestSparseModelSoupUniformSelector(MethodConformance):
    method_cls = SparseModelSoup
    # each tensor loses round(q * active) per phase: per-tensor rounding, up to 3 phases x 3 layers
    sparsity_tolerance = 0.005

    def make_method(self, **overrides):
        return SparseModelSoup(
            **{"sparsity": self.sparsity, "n_phases": 3, "selector": "uniform", **overrides}
        )

"""sparsecore's conformance suite for BDWP (2:4 and forward-only SR-STE mode)."""

import torch

from sparse_bdwp import BDWP
from sparsecore.testing import MethodConformance

torch.set_num_threads(1)


class TestBDWPConformance(MethodConformance):
    method_cls = BDWP


class TestBDWPForwardOnlyConformance(MethodConformance):
    """The SR-STE baseline mode, with masks recomputed every 5 steps."""

    method_cls = BDWP

    def make_method(self, **overrides):
        return BDWP(**{"backward": "forward", "update_every": 5, **overrides})

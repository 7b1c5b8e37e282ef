"""The conformance suite run over the core's own baselines."""

from __future__ import annotations

import torch

from sparsecore import GMP, IMP, SET, SNIP, OneShotMagnitude, RandomPruning, RigL
from sparsecore.testing import MethodConformance

torch.set_num_threads(1)


class TestMagnitude(MethodConformance):
    method_cls = OneShotMagnitude


class TestRandom(MethodConformance):
    method_cls = RandomPruning


class TestSNIP(MethodConformance):
    method_cls = SNIP


class TestGMP(MethodConformance):
    method_cls = GMP

    def make_method(self, **overrides):
        return GMP(**{"sparsity": self.sparsity, "end_step": 16, "update_every": 4, **overrides})


class TestIMP(MethodConformance):
    method_cls = IMP


class TestSET(MethodConformance):
    method_cls = SET

    def make_method(self, **overrides):
        return SET(**{"sparsity": self.sparsity, "update_every": 5, **overrides})


class TestRigL(MethodConformance):
    method_cls = RigL

    def make_method(self, **overrides):
        kw = {"sparsity": self.sparsity, "update_every": 5, "end_step": 20, **overrides}
        return RigL(**kw)

"""sparsecore's conformance suite for AP: a one-shot first level, and cycles during training."""

import math

import torch

from sparse_ap import ActivateWhilePruning
from sparsecore.select import keep_count
from sparsecore.testing import MethodConformance

torch.set_num_threads(1)


class TestAPConformance(MethodConformance):
    """AP around the core IMP, pruned once at setup (the base's one-shot first level)."""

    method_cls = ActivateWhilePruning


class TestAPCyclesConformance(MethodConformance):
    """Two AP pruning rounds inside the suite's run (steps 6 and 18, on both sides of the
    resume point), without rewinding: sparsity, zeros, finalize and exact resume still hold."""

    method_cls = ActivateWhilePruning
    sparsity = 0.5
    prune_at = (6, 18)

    def make_method(self, **overrides):
        options = {"sparsity": self.sparsity, "fraction": 0.3, "ap_fraction": 0.05}
        return ActivateWhilePruning(**{**options, **overrides})

    def run(self, model, method, optimizer, steps):
        for step in steps:
            if step in self.prune_at:
                method.prune_round()
            x, y = self.make_batch(step)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    def expected_sparsity(self, method):
        total = sum(m.numel() for m in method.masks.masks().values())
        nnz = keep_count(total, 1.0 - self.sparsity)
        for _ in self.prune_at:
            nnz -= math.ceil(0.3 * nnz)
        return 1.0 - nnz / total

"""sparsecore's conformance suite for PruneQuant, in its SPQ and PPQ schedules."""

import torch
from prunequant_helpers import SHAPE, resnet

from sparse_prunequant import PruneQuant
from sparsecore.testing import MethodConformance

torch.set_num_threads(1)


class TestSPQConformance(MethodConformance):
    """SPQ: quantized from step 0, soft FPGM every 5 steps, hard masks at finalize."""

    method_cls = PruneQuant
    sparsity = 0.5
    #: masks cover filters, biases and BatchNorm entries (the mask-entry sparsity is not the
    #: filter fraction) and stay all ones in the soft phase; exact counts are tested elsewhere
    check_sparsity_after_training = False

    def make_model(self, seed: int = 0):
        return resnet(seed)

    def input_shape(self):
        return SHAPE

    def make_method(self, **overrides):
        options = {"sparsity": self.sparsity, "input_shape": SHAPE, "prune_every": 5}
        return PruneQuant(**{**options, **overrides})


class TestPPQConformance(TestSPQConformance):
    """PPQ: soft FPGM, hard masks at step 8, then quantized fine-tuning (crosses the resume)."""

    def make_method(self, **overrides):
        options = {
            "sparsity": self.sparsity,
            "input_shape": SHAPE,
            "prune_every": 3,
            "prune_end": 8,
            "quant_start": 8,
            "weight_bits": 3,
        }
        return PruneQuant(**{**options, **overrides})

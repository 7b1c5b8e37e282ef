"""The sparsecore conformance suite for LAPP.

``check_sparsity_after_training`` is off: LAPP's budget is a FLOPs reduction, not a fraction of
the target weights, so ``masks.sparsity() == config.sparsity`` does not apply. The FLOPs budget
is checked instead in ``test_lapp.py`` (``test_final_flops_within_budget``). Every other check of
the suite runs unmodified (the model is a small plain BatchNorm CNN with bypasses, the data 8×8).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sparse_lapp import LAPP, PlainCNN, add_bypasses
from sparsecore.testing import MethodConformance

torch.set_num_threads(1)

SHAPE = (1, 8, 8)


def lapp_model(seed: int = 0, classes: int = 4, width: int = 8) -> nn.Module:
    """A small plain BatchNorm CNN with a bypass on every free convolution."""
    torch.manual_seed(seed)
    model = PlainCNN(SHAPE, classes, widths=(width, 2 * width, 2 * width))
    add_bypasses(model, LAPP.prunable_convs(model, SHAPE), torch.Generator().manual_seed(seed))
    return model


class TestLAPPConformance(MethodConformance):
    method_cls = LAPP
    sparsity = 0.5
    check_sparsity_after_training = False

    def make_method(self, **overrides: Any) -> LAPP:
        options = {"sparsity": 0.5, "input_shape": SHAPE, "prune_steps": 16, "threshold_lr": 0.2}
        return LAPP(**{**options, **overrides})

    def make_model(self, seed: int = 0) -> nn.Module:
        return lapp_model(seed)

    def input_shape(self) -> tuple[int, ...]:
        return SHAPE

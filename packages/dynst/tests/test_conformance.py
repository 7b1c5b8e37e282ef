"""The sparsecore conformance suite, applied to DynST's sensor gate.

DynST masks one tensor, the wrapper's ``sensor_gate`` (one entry per sensor), so the suite's
"weights" are the gate entries: sparsity, exact zeros, finalize, exact resume and bad-input checks
all apply unchanged. The only adaptation is the model: a tiny MLP behind a
`sparse_dynst.SensorGate` on sensor-graph input ``(B, T, N, C)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sparse_dynst import DynST, SensorGate
from sparsecore.testing import MethodConformance

torch.set_num_threads(1)

T, N, C = 3, 16, 2


def gated_mlp(seed: int = 0) -> nn.Module:
    """``(B, T, N, C)`` → 4 logits, behind a sensor gate over the N sensors."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(T * N * C, 32), nn.ReLU(), nn.Linear(32, 4))
    return SensorGate(net, "graph", N)


class TestDynSTConformance(MethodConformance):
    """Conformance on the sensor gate (iterative pruning to step 12, then drop/regrow)."""

    method_cls = DynST

    def make_method(self, **overrides: Any) -> DynST:
        options = {
            "sparsity": self.sparsity,
            "prune_end": 12,
            "regrow_end": 24,
            "update_every": 3,
            "drop_fraction": 0.5,
            **overrides,
        }
        return DynST(**options)

    def make_model(self, seed: int = 0) -> nn.Module:
        return gated_mlp(seed)

    def input_shape(self) -> tuple[int, ...]:
        return (T, N, C)

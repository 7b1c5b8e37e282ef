"""`sparsecore.evaluation.memory`: saved-tensor bytes (distinct storages, parameters left out)."""

import torch
from torch import nn

from sparsecore.evaluation import SavedTensorMeter, peak_memory_bytes


def test_meter_counts_distinct_non_parameter_storages() -> None:
    lin = nn.Linear(16, 16)
    x = torch.randn(4, 16, requires_grad=True)
    meter = SavedTensorMeter(exclude=lin.parameters())
    with meter:
        h = lin(x)  # saves x (and the weight, left out)
        out = (h * h).sum()  # saves h twice: one storage
    assert meter.bytes == x.numel() * 4 + h.numel() * 4
    assert meter.count >= 3
    assert meter.by_dtype == {"float32": meter.bytes}
    out.backward()  # the hooks returned the tensors unchanged
    assert x.grad is not None


def test_meter_resets_per_block_and_frozen_weight_saves_no_input() -> None:
    lin = nn.Linear(8, 8)
    lin.weight.requires_grad_(False)
    x = torch.randn(2, 8, requires_grad=True)
    meter = SavedTensorMeter(exclude=lin.parameters())
    with meter:
        lin(x)
    assert meter.bytes == 0
    with meter:
        torch.sigmoid(x)
    assert meter.bytes == x.numel() * 4  # the output of sigmoid


def test_peak_memory_is_positive_on_cpu() -> None:
    assert peak_memory_bytes() > 0

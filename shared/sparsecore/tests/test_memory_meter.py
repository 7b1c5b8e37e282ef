"""`sparsecore.evaluation.memory`: saved-tensor bytes (distinct storages, parameters left out)."""

import torch
from torch import nn

from sparsecore.evaluation import (
    SavedTensorMeter,
    current_rss_bytes,
    peak_memory_bytes,
    reset_peak_memory,
)


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


def test_cpu_peak_sees_a_large_allocation_after_reset() -> None:
    reset_peak_memory()
    before = peak_memory_bytes()
    big = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    after = peak_memory_bytes()
    del big
    rss = current_rss_bytes()
    assert after >= before > 0
    if rss is not None and reset_peak_memory():  # Linux: resettable high-water mark
        assert after - before >= 32 * 2**20

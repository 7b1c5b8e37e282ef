"""`sparse bench` runs the whole SMS procedure at bench scale (`sparse_sms.bench`)."""

from __future__ import annotations

import argparse

import torch

from sparse_sms import SparseModelSoup
from sparse_sms.bench import BENCH_INGREDIENTS, BENCH_PHASES, bench_procedure
from sparsecore.bench.scenarios import procedure_runner
from sparsecore.evaluation import count_params


def test_bench_procedure_reaches_the_sparsity_with_exact_zeros() -> None:
    torch.set_num_threads(1)
    args = argparse.Namespace(
        task="digits", model="mlp", epochs=1 + BENCH_PHASES * BENCH_INGREDIENTS, lr=0.1,
        batch_size=128, progress=False, method_options={},
    )  # fmt: skip
    accuracy, extras = bench_procedure(0.75, 0, args)
    assert 0.0 <= accuracy <= 1.0
    model = extras["model"]
    weights = {n: p for n, p in model.named_parameters() if n.endswith("weight")}
    total = sum(p.numel() for p in weights.values())
    zeros = sum(int((p == 0).sum()) for p in weights.values())
    assert abs(extras["sparsity"] - 0.75) < 1e-3  # 1 - (1 - q)^P up to rounding
    assert zeros == round(extras["sparsity"] * total)  # the masks are baked in as zeros
    assert count_params(model)[1] == count_params(model)[0] - zeros
    assert 0.0 < extras["flops_ratio"] < 0.5
    assert procedure_runner(SparseModelSoup) is not None

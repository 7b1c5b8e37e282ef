"""`sparse bench` runs the whole AP cycle procedure at bench scale (`sparse_ap.bench`)."""

from __future__ import annotations

import argparse

import pytest
import torch

from sparse_ap import ActivateWhilePruning
from sparse_ap.bench import BENCH_CYCLES, bench_procedure
from sparsecore.bench.scenarios import plan_bench, procedure_runner
from sparsecore.evaluation import count_params


def _args(**more: object) -> argparse.Namespace:
    options = {
        "task": "digits", "model": "mlp", "epochs": 1 + BENCH_CYCLES, "lr": 0.1,
        "batch_size": 128, "progress": False, "method_options": {},
    }  # fmt: skip
    return argparse.Namespace(**{**options, **more})


def test_bench_procedure_reaches_the_sparsity_with_exact_zeros() -> None:
    torch.set_num_threads(1)
    accuracy, extras = bench_procedure(0.75, 0, _args())
    assert 0.1 < accuracy <= 1.0  # above chance (10 classes) after 4 one-epoch runs
    model = extras["model"]
    weights = {n: p for n, p in model.named_parameters() if n.endswith("weight")}
    total = sum(p.numel() for p in weights.values())
    zeros = sum(int((p == 0).sum()) for p in weights.values())
    assert abs(extras["sparsity"] - 0.75) < 1e-3  # 1 - (1 - p)^3 up to ceil per cycle
    assert zeros == round(extras["sparsity"] * total)  # the masks are baked in as zeros
    assert count_params(model)[1] == count_params(model)[0] - zeros
    assert 0.0 < extras["flops_ratio"] < 0.5
    assert extras["wall_s"] > 0


def test_bench_procedure_rejects_fitted_options_before_training() -> None:
    with pytest.raises(ValueError, match="fraction"):
        bench_procedure(0.75, 0, _args(method_options={"fraction": 0.5}))
    with pytest.raises(ValueError, match="sparsity"):
        bench_procedure(1.0, 0, _args())


def test_the_bench_finds_the_runner_and_does_not_skip_ap() -> None:
    runner = procedure_runner(ActivateWhilePruning)
    assert runner is not None
    groups = plan_bench(_args(quick=True, seeds=None), {"ap": ActivateWhilePruning}, ["ap"], [])
    rows = [(name, s, skip) for g in groups for name, s, skip in g.plan if name == "ap"]
    assert rows and all(skip is None for _, _, skip in rows)
    assert all(s is not None and 0 < s < 1 for _, s, _ in rows)

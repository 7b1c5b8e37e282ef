"""Sparse Model Soups at `sparse bench` scale: the whole procedure as one bench variant.

`sparse bench` shows SMS in the default scenario (MNIST-1D MLP) beside the dense model and the
core baselines (IMP among them), through `SparseModelSoup.bench_procedure` (see
`sparsecore.bench.scenarios`: a method with a `procedure` runs it through its class's
`bench_procedure` when the core has no runner for it). Choices at bench scale (labelled):

* **Budget.** ``P = 2`` phases of ``m = 2`` ingredients (paper: 3..5 each). The scenario's
  epochs are split over the ``1 + P · m`` trainings (dense pretraining, then every ingredient of
  every phase), at least one epoch each, so that the procedure costs about what one run of the
  other methods costs, as IMP's rounds at bench scale do.
* **Data.** A fixed 90/10 split of the training set (the reproduction's): ingredients train on
  90%, the soup's validation score uses the other 10%; accuracy is on the test set.
* **Training.** Pretraining uses the bench's SGD (momentum 0.9, weight decay 1e-4) with a
  linear LR decay from ``--lr``; retraining follows SMS's LLR schedule from that peak. The soup
  is the uniform one. `--set field=value` options are `SMSConfig` fields.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from typing import Any

import torch

from sparse_sms.config import SMSConfig
from sparse_sms.ingredient import make_train_fn
from sparse_sms.runner import run
from sparse_sms.soup import batches_of

__all__ = ["BENCH_INGREDIENTS", "BENCH_PHASES", "bench_procedure"]

#: Phases and ingredients per phase of the bench-scale procedure.
BENCH_PHASES, BENCH_INGREDIENTS = 2, 2


def bench_procedure(sparsity: float, seed: int, args: argparse.Namespace) -> tuple[float, dict]:
    """Pretrain, then run SMS to `sparsity`; returns `(test accuracy, extras)`.

    Args:
        sparsity: The goal sparsity after the last phase.
        seed: Seed of the model initialisation and batch order (the soup's ingredients use
            seeds derived from `1000 + seed`, never the model's).
        args: The bench options (`task`, `model`, `epochs`, `lr`, `batch_size`, `progress`,
            `method_options`).

    Returns:
        `(accuracy, extras)` as `sparsecore.cli.common.run_variant` (`sparsity`,
        `flops_ratio`, `wall_s`, `macs`, `model`).
    """
    from sparsecore.bench import evaluate, load_task, make_model, train
    from sparsecore.evaluation import count_flops

    task = load_task(args.task)
    order = torch.randperm(task.num_train, generator=torch.Generator().manual_seed(12345))
    n_val = max(1, task.num_train // 10)
    val, kept = order[:n_val], order[n_val:]
    train_task = dataclasses.replace(task, x_train=task.x_train[kept], y_train=task.y_train[kept])
    trainings = 1 + BENCH_PHASES * BENCH_INGREDIENTS
    epochs = max(1, args.epochs // trainings)
    options = dict(getattr(args, "method_options", {}) or {})
    config = SMSConfig(
        **{
            "n_phases": BENCH_PHASES,
            "n_ingredients": BENCH_INGREDIENTS,
            "retrain_epochs": epochs,
            **options,
            "sparsity": sparsity,
            "seed": 1000 + seed,
        }
    )
    start = time.perf_counter()
    model = make_model(args.model, task, seed=seed)
    example = task.x_test[:1]
    dense_macs = count_flops(model, example).dense
    train(
        model, train_task, None, epochs=epochs, lr=args.lr, batch_size=args.batch_size,
        momentum=0.9, weight_decay=1e-4, lr_schedule="linear", seed=seed,
        progress=bool(getattr(args, "progress", False)),
    )  # fmt: skip
    steps = epochs * math.ceil(train_task.num_train / args.batch_size)
    lr_history = [args.lr * (1 - t / steps) for t in range(steps)]
    x_val, y_val = task.x_train[val], task.y_train[val]
    result = run(
        model,
        make_train_fn(
            train_task.x_train, train_task.y_train, batch_size=args.batch_size,
            lr_history=lr_history,
        ),
        lambda m: evaluate(m, x_val, y_val),
        config,
        bn_batches=batches_of(train_task.x_train, args.batch_size),
        lr_history=lr_history,
    )  # fmt: skip
    total = sum(int(m.numel()) for m in result.masks.values())
    kept_entries = sum(int(m.count_nonzero()) for m in result.masks.values())
    macs = count_flops(result.model, example)
    extras: dict[str, Any] = {
        "sparsity": 1.0 - kept_entries / total,
        "flops_ratio": macs.effective / dense_macs,
        "wall_s": time.perf_counter() - start,
        "macs": (macs.dense, macs.effective),
        "model": result.model,
    }
    return evaluate(result.model, task.x_test, task.y_test), extras

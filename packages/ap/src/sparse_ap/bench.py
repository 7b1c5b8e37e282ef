"""Activate-while-Pruning at `sparse bench` scale: the whole cycle procedure as one variant.

`sparse bench` shows AP in the default scenario (MNIST-1D MLP) beside the dense model and the
core baselines (IMP among them) through `ActivateWhilePruning.bench_procedure` (see
`sparsecore.bench.scenarios`: a method with a `procedure` the core does not know runs through
its class's `bench_procedure`). It runs the real procedure, `sparse_ap.run_cycles`: a dense
training run, then per cycle `prune_round` (the base's round at ``p - p_AP``, then the AP step),
the base's rewind and a retraining run. Choices at bench scale (labelled):

* **Cycles and fraction.** `BENCH_CYCLES` = 3 cycles (the core IMP's bench rounds; the paper
  prunes ``p = 20%`` per cycle for many more cycles). ``p = 1 - (1 - s)^(1/3)`` is fitted so
  that the last cycle lands on the goal sparsity ``s`` (up to the rounding of
  ``ceil(p · nnz)`` per cycle), as the core does for IMP.
* **AP's share.** ``p_AP = p / 10`` (the paper's and official code's 2-of-20 split of ``p``),
  unless ``--set ap_fraction=...`` is given.
* **Budget.** The scenario's epochs are split over the ``1 + 3`` training runs, at least one
  epoch each, so the whole procedure costs about the epochs of one run of the other methods;
  with ``--quick`` (3 epochs) each run gets one epoch (4 in all), and the default 10 epochs
  give 2 per run: far shorter than the paper's runs, so the bench row is a smoke-level
  comparison, not the reproduction (`benchmarks/reproduce.py`).
* **Base and training.** Base ``"imp"`` (global magnitude, rewind to the initialisation) by
  default; every run uses the bench's `sparsecore.bench.train` defaults (SGD, cosine LR
  restarted per run) with ``--lr`` and ``--batch-size``. `--set field=value` options are
  `APConfig` fields (``fraction`` and ``sparsity`` are fitted here and cannot be set).
* **Seeds.** The model's initialisation and batch order use ``seed``; the method's (the
  base's) generator uses ``1000 + seed``, never the model's seed.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from sparse_ap.config import APConfig
from sparse_ap.cycles import run_cycles
from sparse_ap.method import ActivateWhilePruning

__all__ = ["BENCH_CYCLES", "bench_procedure"]

#: Pruning cycles of the bench-scale procedure (after the dense run).
BENCH_CYCLES = 3


def bench_procedure(sparsity: float, seed: int, args: argparse.Namespace) -> tuple[float, dict]:
    """Train dense, then run `BENCH_CYCLES` AP cycles to `sparsity`; `(test accuracy, extras)`.

    Args:
        sparsity: The goal sparsity after the last cycle, in ``(0, 1)``.
        seed: Seed of the model initialisation and batch order (the method uses
            ``1000 + seed``).
        args: The bench options (``task``, ``model``, ``epochs``, ``lr``, ``batch_size``,
            ``progress``, ``method_options``).

    Returns:
        `(accuracy, extras)` as `sparsecore.cli.common.run_variant` (``sparsity``,
        ``flops_ratio``, ``wall_s``, ``macs``, ``model`` with the masks baked in as zeros).

    Raises:
        ValueError: ``sparsity`` out of range, or ``fraction``/``sparsity`` given as options.
    """
    from sparsecore.bench import load_task, make_model
    from sparsecore.evaluation import count_flops
    from sparsecore.validation import check_number

    check_number(sparsity, "sparsity", 0.0, 1.0, open_low=True, open_high=True)
    options = dict(getattr(args, "method_options", {}) or {})
    fitted = sorted({"fraction", "sparsity"} & set(options))
    if fitted:
        raise ValueError(f"method_options: {fitted} are fitted by the AP bench procedure")
    fraction = 1.0 - (1.0 - sparsity) ** (1.0 / BENCH_CYCLES)
    config = APConfig(
        **{
            "ap_fraction": fraction / 10,
            **options,
            "fraction": fraction,
            "sparsity": 0.0,
            "seed": 1000 + seed,
        }
    )
    method = ActivateWhilePruning(config)
    task = load_task(args.task)
    epochs = max(1, args.epochs // (BENCH_CYCLES + 1))
    start = time.perf_counter()
    model = make_model(args.model, task, seed=seed)
    example = task.x_test[:1]
    dense_macs = count_flops(model, example).dense
    results = run_cycles(
        model, task, method, BENCH_CYCLES, epochs, rewind=True, seed=seed,
        progress=bool(getattr(args, "progress", False)), lr=args.lr,
        batch_size=args.batch_size,
    )  # fmt: skip
    reached = method.masks.sparsity()
    final = method.finalize()
    macs = count_flops(final, example)
    extras: dict[str, Any] = {
        "sparsity": reached,
        "flops_ratio": macs.effective / dense_macs,
        "wall_s": time.perf_counter() - start,
        "macs": (macs.dense, macs.effective),
        "model": final,
    }
    return results[-1].accuracy, extras

"""One seed of the paper's protocol: large model → prune → fine-tuned vs Scratch-E vs Scratch-B.

From Liu et al., "Rethinking the Value of Network Pruning" (ICLR 2019, arXiv 1810.05270),
section 3 and the official code (``main_B.py`` / ``main_E.py`` / ``cifar/weight-level``):

1. train the large model for ``E`` epochs (network slimming: with the L1 penalty on γ);
2. prune it (L1 filters, predefined; BN-γ global, automatic; weight-level magnitude);
3. **fine-tuned**: the pruned model keeps the large model's surviving weights and trains on;
4. **Scratch-E**: the pruned architecture (or, weight-level, the pruned *mask*) re-initialised
   and trained for ``E`` epochs;
5. **Scratch-B**: the same, for the epochs of the same computation (`scratch_schedules`;
   FLOPs counted on kept channels, or on non-zero weights for weight-level).

CHOICE (labelled): fine-tuning runs ``finetune_epochs`` (default ``E // 2``) at
``finetune_lr`` (default 0.01), with the CIFAR steps; the original papers' fine-tuning schedules
differ per method (Li et al. fine-tune briefly, network slimming for a full run), and the paper
takes the fine-tuned numbers from each method's own recipe.

Also run (Sparseland R5, arXiv 2302.02596): **random-fine-tuned**, random channels (or weights)
with exactly the method's per-layer counts (`sparsecore.evaluation.matched_random_masks`),
inheriting the large model's weights and fine-tuned like the method's selection.

Seeds: the large model is initialised with ``seed``; data order with ``seed + 1000``; the
Scratch models' fresh initialisation with ``seed + 2000`` (never the weights' own seed);
the random baseline's positions with ``seed + 3000``.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sparse_rethinking.models import SmallVGG, reinitialize
from sparse_rethinking.pruning import magnitude_masks, prune_structured
from sparse_rethinking.schedule import MODES, EpochSchedule, scratch_schedules
from sparse_rethinking.training import apply_masks, train_model
from sparsecore.bench import Task
from sparsecore.bench.train import evaluate
from sparsecore.evaluation import count_flops, matched_random_masks
from sparsecore.validation import check_choice, check_int, check_number

__all__ = ["METHODS", "ProtocolConfig", "run_seed"]

#: The pruning methods of the protocol.
METHODS = ("l1", "slimming", "weight")


@dataclass(frozen=True)
class ProtocolConfig:
    """Settings of one protocol run (defaults: the CPU-scale reproduction).

    Attributes:
        epochs: ``E``, the large model's epochs (and Scratch-E's).
        channel_sparsity: Fraction of conv channels removed (L1 and slimming).
        weight_sparsity: Fraction of conv weights removed (weight-level).
        mode: ``"cifar"`` (Scratch-B uncapped) or ``"imagenet"`` (capped at 2E).
        slimming: L1 strength ``s`` on γ while training the large model for slimming.
        lr: Base learning rate of every from-scratch run (official 0.1).
        finetune_lr: Learning rate of fine-tuning.
        finetune_epochs: Fine-tuning epochs (``None``: ``E // 2``).
        batch_size: Mini-batch size (official CIFAR slimming: 64).
        widths: `SmallVGG` widths of the large model.
        methods: Which of `METHODS` to run.
    """

    epochs: int = 20
    channel_sparsity: float = 0.5
    weight_sparsity: float = 0.7
    mode: str = "cifar"
    slimming: float = 1e-4
    lr: float = 0.1
    finetune_lr: float = 0.01
    finetune_epochs: int | None = None
    batch_size: int = 64
    widths: tuple[int, ...] = (32, 32, 64, 64)
    methods: tuple[str, ...] = METHODS

    def __post_init__(self) -> None:
        check_int(self.epochs, "epochs", 1)
        check_number(self.channel_sparsity, "channel_sparsity", 0.0, 1.0, open_high=True)
        check_number(self.weight_sparsity, "weight_sparsity", 0.0, 1.0, open_high=True)
        check_choice(self.mode, "mode", MODES)
        check_number(self.slimming, "slimming", low=0.0, finite=True)
        check_number(self.lr, "lr", low=0.0, open_low=True, finite=True)
        check_number(self.finetune_lr, "finetune_lr", low=0.0, open_low=True, finite=True)
        if self.finetune_epochs is not None:
            check_int(self.finetune_epochs, "finetune_epochs", 1)
        check_int(self.batch_size, "batch_size", 1)
        for method in self.methods:
            check_choice(method, "methods", METHODS)

    @property
    def finetune(self) -> EpochSchedule:
        """The fine-tuning schedule."""
        return EpochSchedule.cifar(self.finetune_epochs or max(1, self.epochs // 2))


def _macs(model: nn.Module, task: Task) -> int:
    return count_flops(model, task.x_test[:1]).effective


def _weights(model: nn.Module) -> int:
    return sum(int(p.count_nonzero()) for n, p in model.named_parameters() if n.endswith("weight"))


def _timed(fn: Any) -> tuple[float, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def _structured(
    method: str, large: nn.Module, task: Task, cfg: ProtocolConfig, seed: int, dense: dict
) -> dict[str, dict[str, Any]]:
    criterion, scope = ("l1", "layer") if method == "l1" else ("bn", "global")
    pruned, keeps = prune_structured(
        large, task.input_shape, cfg.channel_sparsity, criterion, scope
    )
    macs = _macs(pruned, task)
    extras = {
        "sparsity": 1.0 - _weights(pruned) / dense["weights"],
        "flops_ratio": macs / dense["macs"],
    }
    scratch_e, scratch_b = scratch_schedules(cfg.epochs, dense["macs"], macs, cfg.mode)
    out: dict[str, dict[str, Any]] = {
        f"{method}/pruned": {
            **extras,
            "accuracy": evaluate(pruned, task.x_test, task.y_test),
            "per_layer": {n: 1.0 - float(k.float().mean()) for n, k in keeps.items()},
            "kept": {n: int(k.sum()) for n, k in keeps.items()},
            "sizes": {n: int(k.numel()) for n, k in keeps.items()},
            "macs": macs,
            "dense_macs": dense["macs"],
            "weights": _weights(pruned),
            "dense_weights": dense["weights"],
        }
    }
    # R5: random channels with exactly the method's per-layer widths, fine-tuned the same way
    generator = torch.Generator().manual_seed(seed + 3000)
    random_keeps = matched_random_masks(keeps, generator)
    rand, _ = prune_structured(large, task.input_shape, 0.0, criterion, scope, keeps=random_keeps)
    acc, wall = _timed(
        lambda: train_model(rand, task, cfg.finetune, seed + 1000, cfg.finetune_lr, cfg.batch_size)
    )
    out[f"{method}/random-fine-tuned"] = {**extras, "accuracy": acc, "wall_s": wall}
    tuned = copy.deepcopy(pruned)
    acc, wall = _timed(
        lambda: train_model(tuned, task, cfg.finetune, seed + 1000, cfg.finetune_lr, cfg.batch_size)
    )
    out[f"{method}/fine-tuned"] = {**extras, "accuracy": acc, "wall_s": wall}
    for name, schedule in (("scratch-E", scratch_e), ("scratch-B", scratch_b)):
        fresh = reinitialize(pruned, seed + 2000)
        acc, wall = _timed(
            lambda f=fresh, s=schedule: train_model(f, task, s, seed + 1000, cfg.lr, cfg.batch_size)
        )
        out[f"{method}/{name}"] = {
            **extras,
            "accuracy": acc,
            "wall_s": wall,
            "epochs": schedule.epochs,
        }
    return out


def _weight_level(
    large: nn.Module, task: Task, cfg: ProtocolConfig, seed: int, dense: dict
) -> dict[str, dict[str, Any]]:
    masks = magnitude_masks(large, cfg.weight_sparsity)
    pruned = copy.deepcopy(large)
    apply_masks(pruned, masks)
    macs = _macs(pruned, task)  # counted on the non-zero weights (cifar_B.py)
    extras = {
        "sparsity": 1.0 - _weights(pruned) / dense["weights"],
        "flops_ratio": macs / dense["macs"],
    }
    scratch_e, scratch_b = scratch_schedules(cfg.epochs, dense["macs"], macs, cfg.mode)
    out: dict[str, dict[str, Any]] = {
        "weight/pruned": {
            **extras,
            "accuracy": evaluate(pruned, task.x_test, task.y_test),
            "per_layer": {n: 1.0 - float(m.float().mean()) for n, m in masks.items()},
        }
    }
    generator = torch.Generator().manual_seed(seed + 3000)
    random_masks = matched_random_masks(masks, generator)
    rand = copy.deepcopy(large)
    acc, wall = _timed(
        lambda: train_model(
            rand,
            task,
            cfg.finetune,
            seed + 1000,
            cfg.finetune_lr,
            cfg.batch_size,
            masks=random_masks,
        )
    )
    out["weight/random-fine-tuned"] = {**extras, "accuracy": acc, "wall_s": wall}
    acc, wall = _timed(
        lambda: train_model(
            pruned, task, cfg.finetune, seed + 1000, cfg.finetune_lr, cfg.batch_size, masks=masks
        )
    )
    out["weight/fine-tuned"] = {**extras, "accuracy": acc, "wall_s": wall}
    for name, schedule in (("scratch-E", scratch_e), ("scratch-B", scratch_b)):
        fresh = reinitialize(large, seed + 2000)
        acc, wall = _timed(
            lambda f=fresh, s=schedule: train_model(
                f, task, s, seed + 1000, cfg.lr, cfg.batch_size, masks=masks
            )
        )
        out[f"weight/{name}"] = {
            **extras,
            "accuracy": acc,
            "wall_s": wall,
            "epochs": schedule.epochs,
        }
    return out


def run_seed(task: Task, cfg: ProtocolConfig, seed: int) -> dict[str, dict[str, Any]]:
    """Every variant of the protocol for one seed.

    Args:
        task: An image task (``sparsecore.bench.load_task("digits")``).
        cfg: The settings.
        seed: The large model's initialisation seed.

    Returns:
        ``{variant: {"accuracy", "sparsity", "flops_ratio", "wall_s", ...}}`` with the variants
        ``"dense"``, ``"slimming/dense"`` and ``"<method>/<stage>"``, stage one of ``pruned``,
        ``fine-tuned``, ``scratch-E``, ``scratch-B``.
    """
    check_int(seed, "seed")
    if len(task.input_shape) != 3:
        raise ValueError(f"task must have image inputs (C, H, W), got {task.input_shape}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        init = SmallVGG(task.input_shape[0], task.num_classes, cfg.widths)
    dense = {"macs": _macs(init, task), "weights": _weights(init)}
    full = EpochSchedule.cifar(cfg.epochs)
    out: dict[str, dict[str, Any]] = {}
    if {"l1", "weight"} & set(cfg.methods):
        large = copy.deepcopy(init)
        acc, wall = _timed(
            lambda: train_model(large, task, full, seed + 1000, cfg.lr, cfg.batch_size)
        )
        out["dense"] = {"accuracy": acc, "sparsity": 0.0, "flops_ratio": 1.0, "wall_s": wall}
        if "l1" in cfg.methods:
            out.update(_structured("l1", large, task, cfg, seed, dense))
        if "weight" in cfg.methods:
            out.update(_weight_level(large, task, cfg, seed, dense))
    if "slimming" in cfg.methods:
        slim = copy.deepcopy(init)
        acc, wall = _timed(
            lambda: train_model(
                slim, task, full, seed + 1000, cfg.lr, cfg.batch_size, slimming=cfg.slimming
            )
        )
        out["slimming/dense"] = {
            "accuracy": acc,
            "sparsity": 0.0,
            "flops_ratio": 1.0,
            "wall_s": wall,
        }
        out.update(_structured("slimming", slim, task, cfg, seed, dense))
    for values in out.values():
        values.setdefault("wall_s", math.nan)
    return out

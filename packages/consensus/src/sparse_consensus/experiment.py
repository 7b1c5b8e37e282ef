"""One seed of the reproduction: consensus one-pass vs dense, L1 + fine-tune, Scratch-E/B.

Used by ``benchmarks/reproduce.py`` (see its docstring for the protocol). Every variant starts
from the same initial weights of the plain ResNet (the gates are extra modules); the gate nets
and the data order use generators seeded apart from the weights (`sparsecore.method.method_seed`).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sparse_consensus.gates import attach_gates
from sparse_consensus.method import ConsensusPruning
from sparse_consensus.models import resnet_gate_names
from sparse_consensus.subnetwork import accuracy, consensus_subnetwork
from sparsecore.bench.models import ResNet
from sparsecore.evaluation import compare_latency, count_flops, scratch_budgets
from sparsecore.export import remove_channels
from sparsecore.groups import channel_groups, group_masks, group_scores, select_channels
from sparsecore.method import method_seed

__all__ = ["ExperimentConfig", "l1_prune_to_flops", "run_seed", "train"]


@dataclass(frozen=True)
class ExperimentConfig:
    """Settings of one seed (defaults: the full run)."""

    epochs: int = 12
    finetune_epochs: int = 6
    width: int = 16
    blocks: tuple[int, int, int] = (2, 2, 2)
    sparsity: float = 0.5
    lr: float = 0.05
    finetune_lr: float = 0.01
    batch_size: int = 64
    polarization_weight: float = 1.0
    sparsity_weight: float = 5.0
    latency_batch: int = 256
    latency_repeats: int = 15
    bisection_steps: int = 9


def train(
    model: nn.Module,
    task: Any,
    epochs: int,
    lr: float,
    seed: int,
    batch_size: int = 64,
    method: ConsensusPruning | None = None,
    masks: dict[str, torch.Tensor] | None = None,
) -> float:
    """SGD (momentum 0.9, wd 1e-4, cosine) for ``epochs``; returns the wall-clock seconds."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    steps = epochs * math.ceil(task.num_train / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
    if method is not None:
        method.attach(opt)
    gen = torch.Generator().manual_seed(method_seed(seed, "data-order"))
    start = time.perf_counter()
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(task.num_train, generator=gen)
        for i in range(0, task.num_train, batch_size):
            idx = perm[i : i + batch_size]
            loss = nn.functional.cross_entropy(model(task.x_train[idx]), task.y_train[idx])
            if method is not None:
                loss = loss + method.regularization()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return time.perf_counter() - start


def _inner_groups(model: nn.Module, example: torch.Tensor):
    _, channels = resnet_gate_names(model)
    groups = channel_groups(model, example, list(channels))
    return [g for g in groups.prunable() if g.producers[0] in channels], groups


def l1_prune_to_flops(
    model: nn.Module,
    example: torch.Tensor,
    target_macs: float,
    random_seed: int | None = None,
    steps: int = 9,
) -> tuple[nn.Module, float]:
    """Li et al.'s L1-norm filter pruning of each block's first conv, at ``target_macs``.

    One kept fraction for every block (found by bisection on the shrunk model's MACs). With
    ``random_seed``, the same per-layer counts are kept at random positions (matched random).
    Returns the shrunk copy and its MACs per example.
    """
    inner, groups = _inner_groups(model, example)
    scores = group_scores(groups, model, "l1")
    if random_seed is not None:
        gen = torch.Generator().manual_seed(random_seed)
        scores = {k: torch.rand(v.shape, generator=gen) for k, v in scores.items()}
    scores = {g.name: scores[g.name] for g in inner}
    ones = {n: torch.ones_like(p, dtype=torch.bool) for n, p in model.named_parameters()}

    def shrink(density: float) -> tuple[nn.Module, float]:
        keeps = select_channels(scores, density, "layer")
        masks = {**ones, **group_masks(groups, keeps, ones)}
        small = copy.deepcopy(model)
        remove_channels(small, example, masks)
        return small, count_flops(small, example[:1]).dense

    low, high = 1e-3, 1.0
    best = shrink(high)
    for _ in range(steps):
        mid = (low + high) / 2
        small, macs = shrink(mid)
        if macs <= target_macs:
            best, low = (small, macs), mid
        else:
            high = mid
    if best[1] > target_macs * 1.02:  # nothing at or below the target: the smallest tried
        best = shrink(low)
    return best


def _reinit(model: nn.Module, seed: int) -> nn.Module:
    fresh = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in fresh.modules():
            if hasattr(m, "reset_parameters") and m is not fresh:
                m.reset_parameters()
    return fresh


def _latency(model: nn.Module, dense: nn.Module, x: torch.Tensor, repeats: int) -> float:
    model.eval()
    dense.eval()
    with torch.no_grad():
        return float(compare_latency(lambda: model(x), lambda: dense(x), warmup=3, repeats=repeats))


def run_seed(task: Any, cfg: ExperimentConfig, seed: int) -> dict[str, dict[str, Any]]:
    """Every variant for one seed: ``{variant: {"accuracy", "flops_ratio", ...}}``."""
    shape = task.input_shape
    example = task.x_train[:8]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        base = ResNet(shape, task.num_classes, cfg.width, cfg.blocks)
    dense_macs = count_flops(base, example[:1]).dense
    epoch_cost = 3.0 * dense_macs * task.num_train  # forward + backward ≈ 3 × forward MACs
    out: dict[str, dict[str, Any]] = {}

    dense = copy.deepcopy(base)
    wall = train(dense, task, cfg.epochs, cfg.lr, seed, cfg.batch_size)
    out["dense"] = {
        "accuracy": accuracy(dense, task.x_test, task.y_test),
        "flops_ratio": 1.0,
        "wall_s": wall,
        "epochs": cfg.epochs,
        "train_cost": 1.0,
    }

    lat_x = task.x_test[: cfg.latency_batch]
    static_macs = None
    for variant, polarizer in (("consensus", "variance"), ("consensus/no-polarization", "none")):
        model = copy.deepcopy(base)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(method_seed(seed, "gates"))
            blocks, channels = resnet_gate_names(model)
            attach_gates(model, blocks=blocks, channels=channels)
        method = ConsensusPruning(
            sparsity=cfg.sparsity,
            input_shape=shape,
            polarization=polarizer,
            polarization_weight=cfg.polarization_weight,
            sparsity_weight=cfg.sparsity_weight,
        ).setup(model)
        wall = train(model, task, cfg.epochs, cfg.lr, seed, cfg.batch_size, method=method)
        dynamic = accuracy(model, task.x_test, task.y_test)
        gated_latency = _latency(model, dense, lat_x, cfg.latency_repeats)
        small, report = consensus_subnetwork(method, example, task.x_train)
        stats = report["statistics"]
        static = accuracy(small, task.x_test, task.y_test)
        out[variant] = {
            "accuracy": static,
            "dynamic_accuracy": dynamic,
            "gap": dynamic - static,
            "flops_ratio": report["flops_ratio"],
            "consensus_rate": stats.consensus_rate,
            "sample_agreement": stats.sample_agreement,
            "wall_s": wall,
            "epochs": cfg.epochs,
            "train_cost": 1.0,
            "removed_blocks": report["removed_blocks"],
            "removed_channels": report["removed_channels"],
            "latency_ratio": _latency(small, dense, lat_x, cfg.latency_repeats),
            "gated_latency_ratio": gated_latency,
            "params": sum(p.numel() for p in small.parameters()),
        }
        if variant == "consensus":
            static_macs, consensus_model = report["macs"], small

    # L1-norm filter pruning of the trained dense model at the consensus model's FLOPs
    ft_cost = cfg.finetune_epochs
    for variant, rnd in (
        ("l1+finetune", None),
        ("random-channels+finetune", method_seed(seed, "random")),
    ):
        small, macs = l1_prune_to_flops(
            dense, example, static_macs, random_seed=rnd, steps=cfg.bisection_steps
        )
        wall = train(small, task, cfg.finetune_epochs, cfg.finetune_lr, seed, cfg.batch_size)
        out[variant] = {
            "accuracy": accuracy(small, task.x_test, task.y_test),
            "flops_ratio": macs / dense_macs,
            "wall_s": wall,
            "epochs": cfg.epochs + ft_cost,
            "train_cost": 1.0 + ft_cost * macs / dense_macs / cfg.epochs,
        }

    # the consensus architecture trained from scratch: same epochs, same computation
    scratch_e, scratch_b = scratch_budgets(cfg.epochs, static_macs, dense_macs, max_factor=math.inf)
    for variant, epochs in (("scratch-E", scratch_e), ("scratch-B", scratch_b)):
        model = _reinit(consensus_model, method_seed(seed, variant))
        wall = train(model, task, epochs, cfg.lr, seed, cfg.batch_size)
        out[variant] = {
            "accuracy": accuracy(model, task.x_test, task.y_test),
            "flops_ratio": static_macs / dense_macs,
            "wall_s": wall,
            "epochs": epochs,
            "train_cost": epochs * static_macs / dense_macs / cfg.epochs,
        }
    for r in out.values():
        r["train_flops"] = r["train_cost"] * epoch_cost * cfg.epochs
    out["dense"]["macs"] = dense_macs
    return out

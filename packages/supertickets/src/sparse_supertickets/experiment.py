"""One seed of the SuperTickets protocol: the ticket against the pipelines it replaces.

All variants train for the same total number of epochs ``E`` on sklearn digits (8×8):

* ``supernet (dense)``: the supernet, no search, no pruning;
* ``supertickets``: one two-in-one run (search + progressive pruning, official
  ``reset_mask: False``), evaluated without retraining;
* ``supertickets + IR``: the same with iterative reactivation (``reset_mask: True``);
* ``supertickets, equal c_i``: the FLOPs-aware penalty replaced by ``c_i = 1`` (ablation);
* ``NAS-then-prune``: search alone for ``E/2`` epochs (same penalty, no weight pruning), shrink,
  then progressive magnitude pruning (same schedule shape, same final sparsity) for ``E/2``;
* ``scratch (ticket arch + mask)``: the SuperTicket's architecture and mask, re-initialised and
  trained from scratch for ``E`` epochs;
* ``random mask (ticket arch, matched counts)``: the same architecture re-initialised with
  random masks of the ticket's per-layer counts (the Sparseland R5 matched-random baseline).

Transfer (two digit splits): a ticket is drawn on digits 0-4, moved to digits 5-9 with a new
classifier and fine-tuned for ``E/2`` epochs with its mask fixed, against the same architecture
and mask re-initialised and trained for the same ``E/2`` epochs.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from sparse_supertickets.supernet import SuperNet
from sparse_supertickets.ticket import Ticket, weight_masks
from sparse_supertickets.training import (
    RecipeConfig,
    calibrate_bn,
    draw_ticket,
    evaluate,
    train_fixed,
)
from sparsecore.bench import Task
from sparsecore.evaluation import matched_random_masks
from sparsecore.evaluation.flops import count_flops

__all__ = ["ProtocolConfig", "digit_split", "run_seed"]


@dataclass(frozen=True)
class ProtocolConfig:
    """Settings of the protocol.

    Attributes:
        recipe: The training recipe (``recipe.epochs`` is ``E``).
        stem: Supernet stem width.
        stages: Supernet ``(channels, stride)`` per block.
        expand_ratio: Supernet expansion.
        transfer: Run the digit-split transfer.
    """

    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    stem: int = 8
    stages: tuple[tuple[int, int], ...] = ((8, 1), (16, 2))
    expand_ratio: int = 2
    transfer: bool = True


def _supernet(cfg: ProtocolConfig, classes: int, seed: int) -> SuperNet:
    torch.manual_seed(seed)
    return SuperNet(classes, 1, cfg.stem, cfg.stages, cfg.expand_ratio)


def digit_split(task: Task, classes: tuple[int, ...]) -> Task:
    """The examples of ``classes`` only, labels renumbered ``0..len(classes) - 1``."""
    lookup = torch.full((task.num_classes,), -1, dtype=torch.long)
    lookup[list(classes)] = torch.arange(len(classes))

    def pick(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keep = lookup[y] >= 0
        return x[keep], lookup[y[keep]]

    x_train, y_train = pick(task.x_train, task.y_train)
    x_test, y_test = pick(task.x_test, task.y_test)
    return dataclasses.replace(
        task,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=len(classes),
    )


def _reinit(model: nn.Module, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    for module in model.modules():
        if hasattr(module, "reset_parameters") and module is not model:
            module.reset_parameters()
    return model


def _measure(model: nn.Module, task: Task, dense_macs: int, start: float) -> dict[str, Any]:
    example = task.x_test[:1]
    flops = count_flops(model, example)
    masks = weight_masks(model)
    total = sum(m.numel() for m in masks.values())
    calibrate_bn(model, task.x_train)  # official bn_calibration before every evaluation
    return {
        "accuracy": evaluate(model, task.x_test, task.y_test),
        "flops_ratio": flops.effective / dense_macs,
        "macs_shrunk": flops.dense,
        "macs_effective": flops.effective,
        "sparsity": 1.0 - sum(int(m.sum()) for m in masks.values()) / total,
        "params": sum(p.numel() for p in model.parameters()),
        "wall_s": time.perf_counter() - start,
    }


def _ticket_run(
    task: Task, cfg: ProtocolConfig, recipe: RecipeConfig, seed: int, dense: int
) -> tuple[Ticket, dict[str, Any]]:
    start = time.perf_counter()
    ticket, record = draw_ticket(_supernet(cfg, task.num_classes, seed), task, recipe, seed)
    out = _measure(ticket.model, task, dense, start)
    out.update(architecture=ticket.architecture, shrinks=record["shrinks"])
    return ticket, out


def run_seed(task: Task, cfg: ProtocolConfig, seed: int) -> dict[str, dict[str, Any]]:
    """Every variant of the protocol for one seed (see the module docstring).

    Args:
        task: The digits task.
        cfg: The settings.
        seed: Seed of the weights; the data order and the method use derived seeds.

    Returns:
        ``{variant: measurements}`` (accuracy, flops_ratio, sparsity, params, wall_s, ...).
    """
    recipe = cfg.recipe
    epochs = recipe.epochs
    dense_model = _supernet(cfg, task.num_classes, seed)
    dense = count_flops(dense_model, task.x_test[:1]).dense
    results: dict[str, dict[str, Any]] = {}

    start = time.perf_counter()
    ones = Ticket(
        dense_model, {n: torch.ones_like(m) for n, m in weight_masks(dense_model).items()}
    )
    results["supernet (dense)"] = _measure(
        train_fixed(ones, task, recipe, seed, epochs), task, dense, start
    )

    ticket, results["supertickets"] = _ticket_run(task, cfg, recipe, seed, dense)
    _, results["supertickets + IR"] = _ticket_run(
        task, cfg, dataclasses.replace(recipe, reactivate=True), seed, dense
    )
    _, results["supertickets, equal c_i"] = _ticket_run(
        task, cfg, dataclasses.replace(recipe, penalty="equal"), seed, dense
    )

    # NAS then prune: search E/2 epochs (no weight pruning), then prune progressively E/2
    start = time.perf_counter()
    half = max(1, epochs // 2)
    search = dataclasses.replace(recipe, epochs=half, sparsity=0.0)
    searched, _ = draw_ticket(_supernet(cfg, task.num_classes, seed), task, search, seed)
    prune = dataclasses.replace(recipe, epochs=epochs - half, penalty="none")
    pruned, _ = draw_ticket(searched.model, task, prune, seed + 7)
    results["NAS-then-prune"] = _measure(pruned.model, task, dense, start)
    results["NAS-then-prune"]["architecture"] = searched.architecture

    # the SuperTicket's architecture and mask, re-initialised, trained from scratch
    start = time.perf_counter()
    scratch = ticket.copy()
    _reinit(scratch.model, seed + 11)
    results["scratch (ticket arch + mask)"] = _measure(
        train_fixed(scratch, task, recipe, seed, epochs), task, dense, start
    )

    # Sparseland R5: the same architecture, random masks with the ticket's per-layer counts
    start = time.perf_counter()
    randomised = ticket.copy()
    _reinit(randomised.model, seed + 11)
    generator = torch.Generator().manual_seed(seed + 19)
    randomised.masks = matched_random_masks(randomised.masks, generator)
    results["random mask (ticket arch, matched counts)"] = _measure(
        train_fixed(randomised, task, recipe, seed, epochs), task, dense, start
    )
    results["supertickets"]["per_layer"] = {
        n: 1.0 - int(m.sum()) / m.numel() for n, m in ticket.masks.items()
    }
    results["supertickets"]["dense_params"] = sum(p.numel() for p in dense_model.parameters())
    results["supertickets"]["dense_macs"] = dense

    if cfg.transfer:
        results.update(_transfer(task, cfg, seed))
    return results


def _transfer(task: Task, cfg: ProtocolConfig, seed: int) -> dict[str, dict[str, Any]]:
    """A ticket drawn on digits 0-4, fine-tuned on 5-9, against the same ticket from scratch."""
    source, target = digit_split(task, (0, 1, 2, 3, 4)), digit_split(task, (5, 6, 7, 8, 9))
    recipe = cfg.recipe
    dense = count_flops(_supernet(cfg, 5, seed), task.x_test[:1]).dense
    ticket, drawn = _ticket_run(source, cfg, recipe, seed, dense)
    tune = max(1, recipe.epochs // 2)
    out = {"transfer: drawn on 0-4 (eval 0-4)": drawn}
    start = time.perf_counter()
    moved = ticket.copy()
    torch.manual_seed(seed + 13)
    moved.model.classifier.reset_parameters()
    out["transfer: ticket fine-tuned on 5-9"] = _measure(
        train_fixed(moved, target, recipe, seed, tune), target, dense, start
    )
    start = time.perf_counter()
    fresh = ticket.copy()
    _reinit(fresh.model, seed + 17)
    out["transfer: same arch + mask from scratch on 5-9"] = _measure(
        train_fixed(fresh, target, recipe, seed, tune), target, dense, start
    )
    return out

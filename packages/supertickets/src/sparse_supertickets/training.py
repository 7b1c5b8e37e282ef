"""The two-in-one training loop (official `train.py`), scaled to epochs of a small task.

`draw_ticket` trains a supernet with `SuperTickets` attached: per epoch the optimizer steps
(task loss with label smoothing plus the γ penalty), then (every ``eval_every`` epochs) the
channel check, a physical shrink when the masked atomic blocks cost at least
``shrink_delta_macs`` MACs or at the last epoch. Pruning events happen inside the method, on
its step schedule.

Official recipe (`configs/cls_imagenet_g_0.9.yml`): RMSProp (α 0.9, ε 1e-3, momentum 0.9),
lr 0.016 per 256 examples, exponential decay 0.97 every 2.4 of 350 epochs, label smoothing 0.1,
weight decay 1e-5, ρ 1.8e-4 ramped over 25 epochs, pruning every 25 epochs, evaluation every 10.

CHOICE (labelled): every epoch count is scaled by ``epochs / 350`` (prune interval, ρ warm-up,
evaluation interval, lr decay interval), so a short run keeps the official shape: 14 pruning
events, the target reached at the 9th. CHOICE: ``shrink_delta_macs`` defaults to 2% of the
supernet's MACs (the official 1e6 MACs is an ImageNet-sized amount).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sparse_supertickets.method import SuperTickets, SuperTicketsConfig
from sparse_supertickets.ticket import Ticket, pruned_macs, shrink
from sparsecore.bench import Task
from sparsecore.masks import MaskSet, resolve_targets

__all__ = [
    "RecipeConfig",
    "calibrate_bn",
    "draw_ticket",
    "evaluate",
    "make_optimizer",
    "train_fixed",
]


@dataclass(frozen=True)
class RecipeConfig:
    """The training recipe (official values, epoch counts scaled; see the module docstring).

    Attributes:
        epochs: Training epochs (official 350).
        batch_size: Examples per step.
        lr_per_256: Learning rate per 256 examples (official 0.016).
        label_smoothing: Official 0.1.
        weight_decay: Official 1e-5.
        sparsity: Final weight prune ratio (official 0.9).
        rho: γ penalty weight (official 1.8e-4).
        penalty: ``"flops"``, ``"equal"`` or ``"none"``.
        reactivate: Iterative reactivation (official ``reset_mask``).
        reuse_mask: Carry masks through shrinking (official ``reuse_mask``).
        shrink_fraction: Shrink when the masked blocks cost this fraction of the supernet MACs.
    """

    epochs: int = 35
    batch_size: int = 64
    lr_per_256: float = 0.016
    label_smoothing: float = 0.1
    weight_decay: float = 1e-5
    sparsity: float = 0.9
    rho: float = 1.8e-4
    penalty: str = "flops"
    reactivate: bool = False
    reuse_mask: bool = True
    shrink_fraction: float = 0.02

    def scaled(self, official_epochs: float) -> float:
        """An official epoch count scaled to this run (``epochs / 350``)."""
        return official_epochs * self.epochs / 350.0


def make_optimizer(model: nn.Module, recipe: RecipeConfig) -> torch.optim.Optimizer:
    """The official RMSProp (α 0.9, ε 1e-3, momentum 0.9, weight decay 1e-5)."""
    return torch.optim.RMSprop(
        model.parameters(),
        lr=recipe.lr_per_256 * recipe.batch_size / 256,
        alpha=0.9,
        eps=1e-3,
        momentum=0.9,
        weight_decay=recipe.weight_decay,
    )


def _set_lr(optimizer: torch.optim.Optimizer, recipe: RecipeConfig, epoch: int) -> None:
    interval = recipe.scaled(2.4)
    lr = recipe.lr_per_256 * recipe.batch_size / 256 * 0.97 ** (epoch / interval)
    for group in optimizer.param_groups:
        group["lr"] = lr


@torch.no_grad()
def calibrate_bn(
    model: nn.Module, x: torch.Tensor, steps: int = 10, batch_size: int = 256, seed: int = 0
) -> nn.Module:
    """Re-estimate every BatchNorm's running statistics (official ``bn_calibration``).

    The official validation recomputes the BN statistics on ``bn_calibration_steps`` (10)
    training batches of ``bn_calibration_per_gpu_batch_size`` (256) before evaluating a pruned
    or shrunk network: the running averages of training lag behind each pruning event. The
    statistics are reset and averaged cumulatively over the batches.

    Args:
        model: The model (left in eval mode).
        x: Training inputs to draw the batches from.
        steps: Batches.
        batch_size: Examples per batch.
        seed: Seed of the batch draw.

    Returns:
        ``model``.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in norms]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        model(x[torch.randint(0, x.shape[0], (batch_size,), generator=gen)])
    for bn, momentum in zip(norms, momenta, strict=True):
        bn.momentum = momentum
    return model.eval()


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy (eval mode; the mode is restored)."""
    was = model.training
    model.eval()
    acc = float((model(x).argmax(1) == y).float().mean())
    model.train(was)
    return acc


def _batches(task: Task, batch_size: int, gen: torch.Generator):
    order = torch.randperm(task.num_train, generator=gen)
    for start in range(0, task.num_train, batch_size):
        idx = order[start : start + batch_size]
        yield task.x_train[idx], task.y_train[idx]


def _epoch(model, method, optimizer, task, recipe, gen, loss_fn) -> None:
    model.train()
    for x, y in _batches(task, recipe.batch_size, gen):
        loss = loss_fn(model(x), y)
        if method is not None:
            loss = loss + method.regularization()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def draw_ticket(
    model: nn.Module,
    task: Task,
    recipe: RecipeConfig,
    seed: int,
    *,
    log: Callable[[str], None] | None = None,
) -> tuple[Ticket, dict[str, Any]]:
    """Train ``model`` (a supernet) with SuperTickets; return the ticket and a run record.

    Args:
        model: The supernet (trained in place until its first shrink).
        task: The task (``input_shape`` traces the groups).
        recipe: The recipe.
        seed: Seed of the data order (the method's generator is seeded from it, salted).
        log: Progress lines (``None``: silent).

    Returns:
        ``(ticket, record)``; the record holds the pruning history, the shrink epochs, the
        supernet's MACs and the final channels.
    """
    steps_per_epoch = math.ceil(task.num_train / recipe.batch_size)
    total = recipe.epochs * steps_per_epoch
    interval = max(1, round(recipe.scaled(25) * steps_per_epoch))
    config = SuperTicketsConfig(
        sparsity=recipe.sparsity,
        input_shape=tuple(task.input_shape),
        total_steps=total,
        prune_interval=interval,
        reactivate=recipe.reactivate,
        rho=recipe.rho,
        rho_warmup_steps=max(1, round(recipe.scaled(25) * steps_per_epoch)),
        penalty=recipe.penalty,
        seed=seed + 1,
    )
    optimizer = make_optimizer(model, recipe)
    method = SuperTickets(config).setup(model, optimizer)
    supernet_macs = sum(g.macs_per_channel * g.group.size for g in method.searched)
    delta = recipe.shrink_fraction * max(supernet_macs, 1.0)
    eval_every = max(1, round(recipe.scaled(10)))
    gen = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    shrinks: list[int] = []
    for epoch in range(recipe.epochs):
        _set_lr(optimizer, recipe, epoch)
        _epoch(model, method, optimizer, task, recipe, gen, loss_fn)
        last = epoch == recipe.epochs - 1
        if recipe.penalty != "none" and ((epoch + 1) % eval_every == 0 or last):
            method.mask_channels()
            if not last and pruned_macs(method) >= delta:
                _, method, optimizer = shrink(
                    method,
                    reuse_mask=recipe.reuse_mask,
                    optimizer_factory=lambda m: make_optimizer(m, recipe),
                )
                model = method.model
                shrinks.append(epoch + 1)
        if log is not None:
            log(f"epoch {epoch + 1}: step {method.step}, sparsity {method.weight_sparsity():.3f}")
    history = method.history
    ticket, _, _ = shrink(method)
    shrinks.append(recipe.epochs)
    record = {"history": history, "shrinks": shrinks, "searched_macs": supernet_macs}
    return ticket, record


def train_fixed(
    ticket: Ticket, task: Task, recipe: RecipeConfig, seed: int, epochs: int
) -> nn.Module:
    """Train ``ticket.model`` for ``epochs`` with its masks fixed (hard masks, core MaskSet).

    Returns:
        The trained plain model (masks baked in).
    """
    model = ticket.model
    names = [n for n in ticket.masks if n in dict(model.named_parameters())]
    targets = resolve_targets(model, names)
    masks = MaskSet(model, targets)
    masks.update_all({n: ticket.masks[n] for n in names})
    optimizer = make_optimizer(model, recipe)
    masks.attach(optimizer)
    gen = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    run = dataclasses.replace(recipe, epochs=max(epochs, 1))
    for epoch in range(epochs):
        _set_lr(optimizer, run, epoch)
        _epoch(model, None, optimizer, task, recipe, gen, loss_fn)
    return masks.squash()

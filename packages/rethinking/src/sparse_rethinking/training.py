"""The training loop of the official code: SGD with step decay, optional slimming penalty and masks.

From Liu et al., "Rethinking the Value of Network Pruning" (ICLR 2019, arXiv 1810.05270),
official code ``cifar/network-slimming/main_B.py`` and ``cifar/weight-level/cifar_B.py``:

* SGD, momentum 0.9, weight decay 1e-4, base learning rate 0.1, multiplied by 0.1 at the
  schedule's milestones (`EpochSchedule`), batch 64 (CIFAR slimming);
* network slimming's sparsity penalty ``s · |γ|`` on every BatchNorm scale: its subgradient
  ``s · sign(γ)`` is added to ``γ.grad`` after ``backward`` (the code's ``updateBN``; Liu et al.
  2017, arXiv 1708.06519; ``s = 1e-4`` in the official commands);
* weight-level (unstructured) Scratch training keeps the pruned mask: the masked gradients are
  zeroed before the step and the weights multiplied by the mask after it, so they stay exactly
  zero (momentum and weight decay cannot revive them).

CHOICE: the accuracy reported is the final epoch's (the official code logs the best test
accuracy over epochs, which selects on the test set).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from sparse_rethinking.schedule import EpochSchedule
from sparsecore.bench import Task
from sparsecore.bench.train import evaluate
from sparsecore.validation import check_int, check_number

__all__ = ["apply_masks", "bn_l1_subgradient", "train_model"]


def bn_l1_subgradient(model: nn.Module, strength: float) -> None:
    """Add ``strength · sign(γ)`` to the gradient of every BatchNorm scale (slimming penalty)."""
    for module in model.modules():
        weight = getattr(module, "weight", None)
        norm = isinstance(module, nn.modules.batchnorm._BatchNorm)
        if norm and weight is not None and weight.grad is not None:
            weight.grad.add_(strength * torch.sign(weight.detach()))


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Multiply the named parameters by their keep-masks in place."""
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        params[name].mul_(mask.to(params[name].dtype))


def train_model(
    model: nn.Module,
    task: Task,
    schedule: EpochSchedule,
    seed: int,
    lr: float = 0.1,
    batch_size: int = 64,
    weight_decay: float = 1e-4,
    slimming: float = 0.0,
    masks: Mapping[str, torch.Tensor] | None = None,
    progress: bool = False,
) -> float:
    """Train ``model`` in place on ``task`` and return its final test accuracy.

    Args:
        model: The model (trained in place).
        task: The task (its train split is used for training, its test split for the result).
        schedule: Epochs and learning-rate milestones.
        seed: Seed of the data order (use one different from the weights' seed).
        lr: Base learning rate.
        batch_size: Mini-batch size.
        weight_decay: SGD weight decay.
        slimming: Strength ``s`` of the L1 penalty on BatchNorm scales (0: none).
        masks: Keep-masks by parameter name kept fixed through training (weight-level
            Scratch / fine-tuning); ``None``: no mask.
        progress: Show a tqdm bar over epochs.

    Returns:
        Test accuracy after the last epoch.

    Raises:
        ValueError: A bad option, or a mask naming no parameter of ``model`` (before training).
    """
    check_int(seed, "seed")
    check_number(lr, "lr", low=0.0, open_low=True, finite=True)
    check_int(batch_size, "batch_size", 1)
    check_number(weight_decay, "weight_decay", low=0.0, finite=True)
    check_number(slimming, "slimming", low=0.0, finite=True)
    params = dict(model.named_parameters())
    masks = dict(masks or {})
    for name, mask in masks.items():
        if name not in params or params[name].shape != mask.shape:
            raise ValueError(f"masks: {name!r} does not match a parameter of the model")
    apply_masks(model, masks)
    optimizer = torch.optim.SGD(model.parameters(), lr, momentum=0.9, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    n = task.num_train
    model.train()
    for epoch in tqdm(range(schedule.epochs), disable=not progress, desc="epochs"):
        for group in optimizer.param_groups:
            group["lr"] = lr * schedule.lr_factor(epoch)
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            index = order[start : start + batch_size]
            loss = F.cross_entropy(model(task.x_train[index]), task.y_train[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if slimming:
                bn_l1_subgradient(model, slimming)
            for name, mask in masks.items():
                if params[name].grad is not None:
                    params[name].grad.mul_(mask.to(params[name].dtype))
            optimizer.step()
            apply_masks(model, masks)
    return evaluate(model, task.x_test, task.y_test)

"""What one ingredient is trained with, and the default retraining loop.

An `Ingredient` is handed to the user's ``train_fn(model, method, ingredient)``: it says
which phase and copy this is, its seed, epochs, weight decay, momentum and learning-rate
schedule (`Ingredient.learning_rates`). `make_train_fn` builds a plain PyTorch SGD
loop that follows it, for tensors held in memory.

Choices (official ``runners/pretrainedRunner.py`` / ``baseRunner.py``): SGD with the configured
momentum and weight decay, and Nesterov momentum whenever weight decay is positive
(``nesterov=wd > 0.``); one LR per optimizer step from the retraining schedule; batch order and
the global torch generator seeded with the ingredient's seed (official ``seed + split_val`` for
``ensemble_by='pruned_seed'``, the run's seed otherwise). Automatic mixed precision of the
official code is left out (CPU first).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from sparse_sms.lr import retrain_lrs
from sparse_sms.method import SparseModelSoup

__all__ = ["EvalFn", "Ingredient", "TrainFn", "make_train_fn"]


@dataclass(frozen=True)
class Ingredient:
    """The retraining recipe of one ingredient of one phase.

    Attributes:
        phase: Phase number, from 1 (0: the dense segment of the gradual variant).
        index: Ingredient index in ``0..m-1``.
        seed: Seed of batch order and random state.
        epochs: Retraining epochs.
        weight_decay: SGD weight decay.
        momentum: SGD momentum.
        max_lr: The peak LR (largest pretraining LR).
        start_lr: LR reached after the warm-up when it is not ``max_lr`` (``vary="lr"``, ALLR).
        schedule: Retraining schedule name (`sparse_sms.lr`), or ``"global"`` for the
            gradual variant (one linear decay over the whole training run).
        warmup_fraction: Fraction of the steps in the cosine warm-up.
        sparsity: Sparsity of the phase's shared mask.
        global_epochs: ``(first_epoch, total_epochs)`` of this segment within the whole run, for
            ``schedule="global"``.
    """

    phase: int
    index: int
    seed: int
    epochs: int
    weight_decay: float
    momentum: float
    max_lr: float
    start_lr: float | None = None
    schedule: str = "llr"
    warmup_fraction: float = 0.1
    sparsity: float = 0.0
    global_epochs: tuple[int, int] | None = None

    def learning_rates(
        self, total_steps: int, lr_history: Sequence[float] | None = None
    ) -> list[float]:
        """The LR of each of ``total_steps`` optimizer steps of this ingredient.

        Args:
            total_steps: Steps of the whole retraining (``epochs * steps_per_epoch``).
            lr_history: Pretraining LRs (needed by the FT/LRW/SLR schedules).
        """
        if self.schedule == "global":
            if self.global_epochs is None:
                raise ValueError("global_epochs: schedule='global' needs (first_epoch, total)")
            first, total = self.global_epochs
            per_epoch = total_steps / self.epochs
            offset, span = first * per_epoch, total * per_epoch
            return [self.max_lr * max(0.0, 1.0 - (offset + t) / span) for t in range(total_steps)]
        return retrain_lrs(
            self.schedule,
            total_steps,
            max_lr=self.max_lr,
            lr_history=lr_history,
            warmup_fraction=self.warmup_fraction,
            start_lr=self.start_lr,
        )


#: ``train_fn(model, method, ingredient)``: retrain ``model`` in place. Build an optimizer over
#: ``model.parameters()``, call ``method.attach(optimizer)`` so the shared mask is enforced, and
#: follow ``ingredient`` (seed, epochs, weight decay, ``ingredient.learning_rates(...)``).
TrainFn = Callable[[nn.Module, SparseModelSoup, Ingredient], None]
#: ``eval_fn(model) -> validation score`` (higher is better), e.g. accuracy on a held-out split.
EvalFn = Callable[[nn.Module], float]


def make_train_fn(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int = 128,
    lr_history: Sequence[float] | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
    nesterov: bool | None = None,
    progress: bool = False,
) -> TrainFn:
    """A retraining loop over in-memory tensors that follows each `Ingredient`.

    Args:
        x: Training inputs.
        y: Training targets.
        batch_size: Batch size (the last batch of an epoch may be smaller).
        lr_history: Pretraining LRs, for schedules that need them.
        loss_fn: ``loss_fn(outputs, targets)``.
        nesterov: Nesterov momentum; ``None``: when weight decay > 0, as the official code.
        progress: Show a tqdm bar per ingredient.

    Returns:
        ``train_fn(model, method, ingredient)``.
    """
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"x and y must be non-empty and of equal length, got {len(x)}, {len(y)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")

    def train_fn(model: nn.Module, method: SparseModelSoup, ingredient: Ingredient) -> None:
        from tqdm.auto import tqdm

        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        steps_per_epoch = math.ceil(len(x) / batch_size)
        total = ingredient.epochs * steps_per_epoch
        lrs = ingredient.learning_rates(total, lr_history)
        use_nesterov = nesterov
        if use_nesterov is None:
            use_nesterov = ingredient.weight_decay > 0 and ingredient.momentum > 0
        optimizer = torch.optim.SGD(
            model.parameters(),
            lr=lrs[0],
            momentum=ingredient.momentum,
            weight_decay=ingredient.weight_decay,
            nesterov=use_nesterov,
        )
        method.attach(optimizer)
        generator = torch.Generator().manual_seed(ingredient.seed)
        torch.manual_seed(ingredient.seed)
        model.train()
        label = f"phase {ingredient.phase} ingredient {ingredient.index}"
        bar = tqdm(total=total, desc=label, disable=not progress, leave=False)
        step = 0
        try:
            for _ in range(ingredient.epochs):
                order = torch.randperm(len(x), generator=generator)
                for start in range(0, len(x), batch_size):
                    idx = order[start : start + batch_size]
                    for group in optimizer.param_groups:
                        group["lr"] = lrs[step]
                    loss = loss_fn(model(x[idx].to(device)), y[idx].to(device))
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    step += 1
                    bar.update(1)
        finally:
            bar.close()
            method.masks.detach()

    return train_fn

"""A step-indexed training loop that can start at any step ``k`` and resume exactly.

Lottery experiments train from the rewind step ``k`` to ``T`` and must continue exactly where a
stopped run was. ``sparsecore.bench.train`` always starts at step 0, so this module has its own
small loop, in which everything a step depends on is a pure function of the step:

* **Data order.** Step ``s`` belongs to epoch ``s // ceil(N / batch)``; the epoch's permutation is
  drawn from a generator seeded with ``(data_seed, epoch)``. Starting at step ``k`` therefore uses
  the batches a full run would use at steps ``k..T`` (OpenLTH skips the first iterations of the
  epoch likewise), and two copies with different ``data_seed`` see different orders.
* **Noise.** The global CPU generator is re-seeded with ``(noise_seed, step)`` before every
  step (dropout and the like) inside `torch.random.fork_rng`, so the caller's random state
  is untouched and a resumed run draws the same numbers.
* **Learning rate.** A ``LambdaLR`` of `TrainSpec.lr_factor` stepped once per optimizer
  step, advanced ``k`` steps before the first one (see `sparse_lth.advance_scheduler`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import torch
from torch import nn
from torch.nn import functional as F

from sparse_lth.config import TrainSpec
from sparse_lth.method import LotteryTicket

__all__ = [
    "Data",
    "StepCallback",
    "batch_indices",
    "evaluate",
    "train_steps",
    "train_subnetwork",
]

_MIX = 1_000_003

#: ``callback(step, model, optimizer)`` after every optimizer step (``step`` counts completed ones).
StepCallback = Callable[[int, nn.Module, torch.optim.Optimizer], None]


class Data(Protocol):
    """Anything with training and test tensors (e.g. ``sparsecore.bench.Task``)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def _seed(a: int, b: int) -> int:
    return (a * _MIX + b) % (2**62)


def batch_indices(step: int, num_examples: int, batch_size: int, data_seed: int) -> torch.Tensor:
    """Indices of the training batch of global ``step`` (0-based).

    Args:
        step: Completed optimizer steps before this batch.
        num_examples: Size of the training set.
        batch_size: Batch size; an epoch has ``ceil(num_examples / batch_size)`` batches.
        data_seed: Seed of the data order.
    """
    per_epoch = math.ceil(num_examples / batch_size)
    epoch, it = divmod(step, per_epoch)
    gen = torch.Generator().manual_seed(_seed(data_seed, epoch))
    order = torch.randperm(num_examples, generator=gen)
    return order[it * batch_size : (it + 1) * batch_size]


def _device_of(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024
) -> dict[str, float]:
    """Accuracy, error and mean cross-entropy of ``model`` on ``(x, y)`` in eval mode.

    The model's training mode is restored afterwards.
    """
    if len(x) != len(y) or len(y) == 0:
        raise ValueError(f"x and y must be non-empty and equally long, got {len(x)}, {len(y)}")
    device = _device_of(model)
    was_training = model.training
    model.eval()
    correct, loss = 0, 0.0
    try:
        for start in range(0, len(y), batch_size):
            xb = x[start : start + batch_size].to(device)
            yb = y[start : start + batch_size].to(device)
            logits = model(xb)
            correct += int((logits.argmax(-1) == yb).sum())
            loss += float(F.cross_entropy(logits, yb, reduction="sum"))
    finally:
        model.train(was_training)
    accuracy = correct / len(y)
    return {"accuracy": accuracy, "error": 1.0 - accuracy, "loss": loss / len(y)}


def train_steps(
    model: nn.Module,
    data: Data,
    spec: TrainSpec,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    start: int,
    end: int | None = None,
    data_seed: int = 0,
    noise_seed: int = 0,
    callbacks: Sequence[StepCallback] = (),
    regularization: Callable[[], torch.Tensor] | None = None,
    progress: Any = None,
) -> dict[str, float]:
    """Train steps ``start..end`` (``end`` defaults to ``spec.steps``) with cross-entropy.

    The optimizer (with any method attached to it) and the scheduler must already be at step
    ``start``.

    Returns:
        ``loss`` (mean training loss of the steps taken, ``nan`` if none), ``lr_first`` (learning
        rate of the first step taken, ``nan`` if none) and ``steps`` (number taken).

    Args:
        model: The model, trained in place on its device.
        data: Training tensors ``x_train``/``y_train``.
        spec: Batch size (the schedule is in ``scheduler``).
        optimizer: The optimizer.
        scheduler: Stepped once after every optimizer step.
        start: First step (completed steps so far).
        end: Stop after this many completed steps.
        data_seed: Data-order seed.
        noise_seed: Seed of the per-step global generator (dropout, augmentation).
        callbacks: Called after every step (a callback may raise to stop the run).
        regularization: A loss term to add (e.g. ``method.regularization``).
        progress: An object with ``update(n)`` (a tqdm bar), or ``None``.
    """
    end = spec.steps if end is None else end
    if not 0 <= start <= end:
        raise ValueError(f"need 0 <= start <= end, got start={start}, end={end}")
    device = _device_of(model)
    n = len(data.y_train)
    total, count = 0.0, 0
    lr_first = optimizer.param_groups[0]["lr"] if end > start else math.nan
    model.train()
    with torch.random.fork_rng(devices=[]):
        for step in range(start, end):
            idx = batch_indices(step, n, spec.batch_size, data_seed)
            x, y = data.x_train[idx].to(device), data.y_train[idx].to(device)
            torch.default_generator.manual_seed(_seed(noise_seed, step))
            loss = F.cross_entropy(model(x), y)
            if regularization is not None:
                loss = loss + regularization().to(loss.device)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += float(loss.detach())
            count += 1
            if progress is not None:
                progress.update(1)
            for callback in callbacks:
                callback(step + 1, model, optimizer)
    return {
        "loss": total / count if count else math.nan,
        "lr_first": float(lr_first),
        "steps": float(count),
    }


def train_subnetwork(
    model_fn: Callable[[int], nn.Module],
    data: Data,
    spec: TrainSpec,
    *,
    state: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor] | None = None,
    start_step: int = 0,
    end_step: int | None = None,
    model_seed: int = 0,
    data_seed: int = 0,
    noise_seed: int = 0,
    method_options: Mapping[str, Any] | None = None,
    resume: Mapping[str, Any] | None = None,
    checkpoint: Callable[[dict[str, Any]], None] | None = None,
    checkpoint_every: int = 0,
    callbacks: Sequence[StepCallback] = (),
    progress: Any = None,
) -> tuple[nn.Module, LotteryTicket, dict[str, float]]:
    """Train the subnetwork ``(state, masks)`` from step ``start_step`` to ``end_step``.

    Builds ``model_fn(model_seed)``, sets up a `LotteryTicket` (``rewind_step =
    start_step``) with ``masks``, makes ``state`` its rewind point and rewinds with a new optimizer
    and a scheduler advanced ``start_step`` steps, then trains.

    Args:
        model_fn: Builds a fresh model from a seed (the architecture; weights come from ``state``).
        data: Training tensors.
        spec: The training run.
        state: Starting weights and buffers (mask entries, if any, are ignored).
        masks: Boolean masks by target name (``None``: dense).
        start_step: The step the run starts at (``k``): the schedule position.
        end_step: Last step (default ``spec.steps``).
        model_seed: Seed passed to ``model_fn``.
        data_seed: Data-order seed.
        noise_seed: Per-step noise seed.
        method_options: Extra `LotteryTicketConfig` fields (``targets``, ``exclude``,
            ``layers_to_ignore``...).
        resume: A dict saved by ``checkpoint``: continue from its step exactly.
        checkpoint: Receives ``{"step", "model", "optimizer", "scheduler", "method"}`` every
            ``checkpoint_every`` steps (and never if 0).
        checkpoint_every: Steps between checkpoints.
        callbacks: Called after every step.
        progress: A tqdm-like bar or ``None``.

    Returns:
        The trained model, its method (masks attached) and the `train_steps` statistics
        of the steps taken in this call, except ``lr_first``: the learning rate of the run's
        first step (step ``start_step``), also when resumed.
    """
    model = model_fn(model_seed)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model_fn must return an nn.Module, got {type(model).__name__}")
    method = LotteryTicket(rewind_step=start_step, **dict(method_options or {})).setup(model)
    if masks is not None:
        method.masks.update_all({n: m.to(torch.bool) for n, m in masks.items()})
    skip = method.masks.state_keys()
    method.rewind_state = {k: v.detach().clone() for k, v in state.items() if k not in skip}
    optimizer = spec.make_optimizer(model)
    scheduler = spec.make_scheduler(optimizer)
    method.rewind(optimizer, scheduler)
    lr_first = float(optimizer.param_groups[0]["lr"])
    begin = start_step
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        method.load_state_dict(resume["method"])
        begin = int(resume["step"])
    hooks = list(callbacks)
    if checkpoint is not None and checkpoint_every > 0:

        def save(step: int, _model: nn.Module, _opt: torch.optim.Optimizer) -> None:
            if step % checkpoint_every == 0:
                checkpoint(
                    {
                        "step": step,
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "method": method.state_dict(),
                    }
                )

        hooks.insert(0, save)
    stats = train_steps(
        model,
        data,
        spec,
        optimizer,
        scheduler,
        begin,
        end_step,
        data_seed=data_seed,
        noise_seed=noise_seed,
        callbacks=hooks,
        progress=progress,
    )
    stats["lr_first"] = lr_first
    return model, method, stats

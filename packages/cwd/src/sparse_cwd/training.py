"""The detector training loop of the reproduction: SGD as ultralytics, method and CWD hooks.

ultralytics' detection defaults (``ultralytics/cfg/default.yaml``): SGD, momentum 0.937
(Nesterov), weight decay 5e-4 (not on BatchNorm parameters or biases), learning rate decaying
linearly to ``lrf = 0.01`` of its start. CHOICE: no warm-up epochs and no mosaic/flip
augmentation (the synthetic scenes are drawn fresh per seed, and runs are a few epochs long).

`train_detector` runs whole epochs over `sparse_cwd.scenes.Scenes` with pre-encoded CenterNet
targets; an attached `sparsecore.PruningMethod` (e.g. `sparse_cwd.SparsityAwareSlimming`) hooks
into the optimizer, and an optional `sparse_cwd.ChannelWiseDistillation` adds ``α·L_CWD``
(its adapters are optimised with the student).
"""

from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm

from sparse_cwd.centernet import detection_loss
from sparse_cwd.distill import ChannelWiseDistillation
from sparse_cwd.scenes import Scenes
from sparsecore import PruningMethod
from sparsecore.validation import check_int, check_number

__all__ = ["make_optimizer", "train_detector"]


def make_optimizer(
    modules: list[nn.Module], lr: float, weight_decay: float = 5e-4
) -> torch.optim.SGD:
    """Ultralytics' SGD: decay on conv / linear weights only, momentum 0.937, Nesterov."""
    decay, no_decay = [], []
    for module in modules:
        for sub in module.modules():
            for name, p in sub.named_parameters(recurse=False):
                if not p.requires_grad:
                    continue
                is_norm = isinstance(sub, nn.modules.batchnorm._BatchNorm)
                (no_decay if is_norm or name == "bias" else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay}]
    return torch.optim.SGD(groups, lr=lr, momentum=0.937, nesterov=True, weight_decay=0.0)


def train_detector(
    model: nn.Module,
    scenes: Scenes,
    targets: dict[str, torch.Tensor],
    epochs: int,
    lr: float = 0.02,
    batch_size: int = 32,
    seed: int = 0,
    method: PruningMethod | None = None,
    distill: ChannelWiseDistillation | None = None,
    progress: bool = False,
) -> list[float]:
    """Train ``model`` for ``epochs`` epochs; returns the mean loss per epoch.

    Args:
        model: The detector (``(heat, size, offset)`` outputs).
        scenes: Training `sparse_cwd.scenes.Scenes`.
        targets: `sparse_cwd.centernet.encode_targets` of ``scenes``.
        epochs: Epochs.
        lr: Initial learning rate (decays linearly to ``0.01·lr``).
        batch_size: Images per step.
        seed: Seed of the shuffling generator (give one distinct from the model's).
        method: A `sparsecore.PruningMethod`, not yet set up: it is set up here on ``model``
            with the optimizer (``None``: plain training).
        distill: A `sparse_cwd.ChannelWiseDistillation` for ``model`` (``None``: no CWD).
        progress: Show a tqdm bar over steps.

    Raises:
        ValueError: A bad option (named).
    """
    check_int(epochs, "epochs", 1)
    check_number(lr, "lr", 0.0, open_low=True, finite=True)
    check_int(batch_size, "batch_size", 1)
    modules = [model] + ([distill] if distill is not None else [])
    optimizer = make_optimizer(modules, lr)
    steps_per_epoch = -(-len(scenes) // batch_size)
    total = epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 1.0 - 0.99 * min(step, total) / total
    )
    if method is not None:
        method.setup(model, optimizer)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    losses = []
    bar = tqdm(total=total, disable=not progress, leave=False)
    for _ in range(epochs):
        order = torch.randperm(len(scenes), generator=gen)
        running = 0.0
        for start in range(0, len(scenes), batch_size):
            idx = order[start : start + batch_size]
            images = scenes.images[idx]
            loss = detection_loss(model(images), {k: v[idx] for k, v in targets.items()})
            if distill is not None:
                loss = loss + distill.loss(images)
            if method is not None:
                loss = loss + method.regularization()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            running += float(loss.detach()) * len(idx)
            bar.update()
        losses.append(running / len(scenes))
    bar.close()
    return losses

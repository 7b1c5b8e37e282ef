"""A plain training loop and PSNR evaluation for `sparse_hollownerf.HashNeRF`.

The loop is what a user would write (Adam, random ray batches, MSE on pixel colours, ``loss +
method.regularization()``); the method hooks into the optimizer. Optimizer choices follow
Instant-NGP (Adam, β = (0.9, 0.99), ε = 1e-15, lr 1e-2) at CPU scale.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from sparse_hollownerf.field import render_rays
from sparse_hollownerf.scene import Views, psnr
from sparsecore import PruningMethod

__all__ = ["FitResult", "evaluate_psnr", "fit", "make_optimizer", "render_views"]


def make_optimizer(
    model: nn.Module, lr: float = 1e-2, saliency_lr: float = 5e-2
) -> torch.optim.Adam:
    """Adam with Instant-NGP's betas and epsilon; saliency grids get their own learning rate.

    The saliency values must be able to follow the ADMM pull ``z - u`` within one z/u period
    (Adam moves a value by about ``lr`` per step), hence a larger rate than the hash tables'.
    """
    sal = [p for n, p in model.named_parameters() if n.endswith("saliency.values")]
    ids = {id(p) for p in sal}
    rest = [p for p in model.parameters() if id(p) not in ids]
    groups = [{"params": rest, "lr": lr}]
    if sal:
        groups.append({"params": sal, "lr": saliency_lr})
    return torch.optim.Adam(groups, lr=lr, betas=(0.9, 0.99), eps=1e-15)


@dataclass
class FitResult:
    """Wall time and the loss history of `fit`."""

    wall_s: float
    losses: list[float] = field(default_factory=list)


def fit(
    model: nn.Module,
    views: Views,
    steps: int,
    optimizer: torch.optim.Optimizer,
    method: PruningMethod | None = None,
    batch_rays: int = 512,
    n_samples: int = 32,
    seed: int = 0,
    before_step: Callable[[int], None] | None = None,
    progress: bool = False,
) -> FitResult:
    """Train on random ray batches of ``views``.

    Args:
        model: The field.
        views: Training views.
        steps: Optimizer steps.
        optimizer: The optimizer (methods are set up on it by the caller).
        method: A set-up method whose `regularization` is added to the loss.
        batch_rays: Rays per step.
        n_samples: Samples per ray.
        seed: Seed of ray sampling and jitter.
        before_step: Called with the step index before each step (e.g. to start a baseline).
        progress: Show a tqdm bar.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    if isinstance(batch_rays, bool) or not isinstance(batch_rays, int) or batch_rays < 1:
        raise ValueError(f"batch_rays must be a positive integer, got {batch_rays!r}")
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    origins = views.origins.reshape(-1, 3).to(device)
    dirs = views.dirs.reshape(-1, 3).to(device)
    colors = views.colors.reshape(-1, 3).to(device)
    n = origins.shape[0]
    iterator = range(steps)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="fit", leave=False)
    losses = []
    start = time.perf_counter()
    for step in iterator:
        if before_step is not None:
            before_step(step)
        idx = torch.randint(0, n, (batch_rays,), generator=gen).to(device)
        out = render_rays(
            model,
            origins[idx],
            dirs[idx],
            views.near,
            views.far,
            n_samples,
            gen,
            views.background,
        )
        loss = ((out.color - colors[idx]) ** 2).mean()
        total = loss + (method.regularization().to(loss.device) if method is not None else 0.0)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return FitResult(time.perf_counter() - start, losses)


@torch.no_grad()
def render_views(
    model: nn.Module, views: Views, n_samples: int = 32, chunk: int = 4096
) -> torch.Tensor:
    """Render every view at the bin midpoints; ``(V, H*W, 3)``."""
    device = next(model.parameters()).device
    origins = views.origins.reshape(-1, 3)
    dirs = views.dirs.reshape(-1, 3)
    parts = []
    for i in range(0, origins.shape[0], chunk):
        o = origins[i : i + chunk].to(device)
        d = dirs[i : i + chunk].to(device)
        out = render_rays(model, o, d, views.near, views.far, n_samples, None, views.background)
        parts.append(out.color.cpu())
    return torch.cat(parts).reshape(views.colors.shape)


def evaluate_psnr(model: nn.Module, views: Views, n_samples: int = 32) -> float:
    """PSNR (dB) over all pixels of ``views`` (one MSE over the whole set)."""
    return psnr(render_views(model, views, n_samples).clamp(0, 1), views.colors)

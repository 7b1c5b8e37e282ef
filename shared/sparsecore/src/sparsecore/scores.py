"""Importance scores: higher means more worth keeping.

Each score is a pure function of tensors already at hand (weights, gradients). SNIP needs a
gradient at initialisation on a batch of data: compute it with `gradients_on` and pass it to
`snip`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn

__all__ = [
    "SCORES",
    "gradient",
    "gradients_on",
    "magnitude",
    "movement",
    "random",
    "snip",
    "taylor",
]


def magnitude(weight: torch.Tensor, grad: torch.Tensor | None = None) -> torch.Tensor:
    """``|w|`` (Han et al. 2015)."""
    return weight.detach().abs()


def gradient(weight: torch.Tensor, grad: torch.Tensor | None = None) -> torch.Tensor:
    """``|g|``: the growth criterion of RigL and GraNet."""
    if grad is None:
        raise ValueError("gradient score needs a gradient (run backward first)")
    return grad.detach().abs()


def taylor(weight: torch.Tensor, grad: torch.Tensor | None = None) -> torch.Tensor:
    """``|w * g|``: first-order Taylor estimate of the loss change when removing ``w``."""
    if grad is None:
        raise ValueError("taylor score needs a gradient (run backward first)")
    return (weight.detach() * grad.detach()).abs()


def snip(weight: torch.Tensor, grad: torch.Tensor | None = None) -> torch.Tensor:
    """SNIP connection sensitivity ``|w * g|`` at initialisation (Lee et al., arXiv 1810.02340).

    Normalisation by the global sum does not change a ranking and is left out.
    """
    return taylor(weight, grad)


def movement(weight: torch.Tensor, grad: torch.Tensor | None = None) -> torch.Tensor:
    """``-w * g``: movement pruning's first-order score for one step (Sanh et al. 2020)."""
    if grad is None:
        raise ValueError("movement score needs a gradient (run backward first)")
    return -(weight.detach() * grad.detach())


def random(
    weight: torch.Tensor,
    grad: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Uniform random scores (from ``generator`` for reproducibility)."""
    return torch.rand(weight.shape, generator=generator, device="cpu").to(weight.device)


SCORES: dict[str, Callable[..., torch.Tensor]] = {
    "magnitude": magnitude,
    "gradient": gradient,
    "taylor": taylor,
    "snip": snip,
    "movement": movement,
    "random": random,
}


def gradients_on(
    model: nn.Module,
    params: Mapping[str, torch.Tensor],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Sum of gradients of ``loss_fn(model(x), y)`` over ``batches`` for ``params``.

    The model's existing ``.grad`` fields are left as they were.
    """
    loss_fn = loss_fn or nn.functional.cross_entropy
    tensors = list(params.values())
    totals = [torch.zeros_like(t) for t in tensors]
    seen = False
    for x, y in batches:
        seen = True
        loss = loss_fn(model(x), y)
        grads = torch.autograd.grad(loss, tensors, allow_unused=True)
        for total, g in zip(totals, grads, strict=True):
            if g is not None:
                total.add_(g)
    if not seen:
        raise ValueError("batches is empty: need at least one batch to compute gradients")
    return dict(zip(params, totals, strict=True))

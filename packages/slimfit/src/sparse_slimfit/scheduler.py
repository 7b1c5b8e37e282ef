"""SlimFit's units, training-dynamics scores and inter-layer scheduler (pure functions).

Paper: Arash Ardakani et al., "SlimFit: Memory-Efficient Fine-Tuning of Transformer-based
Models Using Training Dynamics", 2023 (arXiv 2305.18513); official code
github.com/arashardakani/SlimFit, the ``ParameterDiffer`` class and the loop of every task
script (``BERT/MRPC.py``, ``ViT/CIFAR10.py``, ...).

* Units: every parameter with ``dim > 1`` plus the LayerNorm weights (the official
  ``p.dim() > 1 or re.search('LayerNorm.weight', name)``; here: the ``weight`` of every
  ``nn.LayerNorm`` module, whatever its name, so ViT's ``layernorm_before/after`` are included
  as in the official ViT scripts). Biases are never units: they are always trained.
* Score after each step, for the units trained in it (frozen units keep their stale score):
  ``d_k = ‖(W_prev − W) / W_prev‖₁ / numel(W)``.
* Scheduler: before each iteration, freeze the ``F = ⌊ρ·t⌋`` units of smallest score.

Choices:

* [choice] Entries with ``W_prev == 0`` contribute 0 to the score (the official division
  gives ``inf``/``NaN``, which its ascending sort places last, i.e. never frozen).
* [choice] ``F = floor(ρ·t + 1e-9)`` (the official ``int(ρ·t)``, robust to ``0.29·100 =
  28.999...``); ties in the score are broken by unit order (stable sort).
* [choice] ``W_prev`` is copied right before each optimizer step and only for the units being
  trained, so the method holds ``(1 − ρ)`` of a weight copy, not a full one (the official
  ``ParameterDiffer`` keeps a clone of every unit). Same scores.
"""

from __future__ import annotations

import fnmatch
import math

import torch
from torch import nn

__all__ = ["freeze_count", "frozen_units", "relative_change", "slimfit_units"]


def slimfit_units(model: nn.Module, train_always: tuple[str, ...] = ()) -> list[str]:
    """Names of SlimFit's units in ``model.named_parameters()`` order.

    Args:
        model: The model.
        train_always: Names or globs of units left out (never frozen).

    Returns:
        Parameter names: every ``dim > 1`` parameter and every LayerNorm ``weight``.
    """
    norms = {
        f"{name}.weight" if name else "weight"
        for name, module in model.named_modules()
        if isinstance(module, nn.LayerNorm) and module.weight is not None
    }
    return [
        name
        for name, param in model.named_parameters()
        if (param.dim() > 1 or name in norms)
        and not any(fnmatch.fnmatchcase(name, glob) for glob in train_always)
    ]


def freeze_count(freeze_ratio: float, units: int) -> int:
    """``⌊ρ·t⌋``, the number of units frozen at every iteration."""
    return min(units, math.floor(freeze_ratio * units + 1e-9))


def frozen_units(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Bool mask of the ``count`` lowest scores (ties: lower index first)."""
    order = torch.sort(scores, stable=True).indices
    frozen = torch.zeros(scores.numel(), dtype=torch.bool)
    frozen[order[:count]] = True
    return frozen


def relative_change(previous: torch.Tensor, current: torch.Tensor) -> float:
    """``‖(previous − current) / previous‖₁ / numel`` (entries with ``previous == 0``: 0)."""
    previous = previous.detach().float()
    current = current.detach().float()
    nonzero = previous != 0
    ratio = torch.where(nonzero, (previous - current) / torch.where(nonzero, previous, 1.0), 0.0)
    return float(ratio.abs().sum() / max(previous.numel(), 1))

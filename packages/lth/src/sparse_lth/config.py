"""Configuration of `sparse_lth.LotteryTicket` and of the training runs it drives.

Two frozen dataclasses:

* `LotteryTicketConfig` extends sparsecore's `sparsecore.baselines.IMPConfig`
  (``fraction``, ``rewind_step``, ``scope``) with ``layers_to_ignore`` (OpenLTH's
  ``pruning_layers_to_ignore``).
* `TrainSpec` describes one training run of a lottery experiment: steps, batch size,
  optimizer and the learning-rate schedule as a pure function of the global step, so that "the
  schedule position at step k" is a well-defined number (``lr * lr_factor(k)``).

Choices:

* ``layers_to_ignore`` follows OpenLTH ``pruning/sparse_global.py``: ignored tensors carry a mask
  (all ones, forever) and **count** in the number of remaining weights, so ``n_prune =
  ceil(fraction * nnz_all)`` is removed from the other tensors and the overall sparsity after
  ``L`` levels is ``1 - (1 - fraction)^L`` over all targets. sparsecore's ``exclude`` is the
  other option: an excluded tensor has no mask and is not counted at all.
* The schedule is a step function (``lr_factor``), not an epoch function: rewinding is to an
  optimizer step, and OpenLTH steps its ``LambdaLR`` once per iteration too
  (``training/optimizers.py::get_lr_schedule``).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from sparsecore.baselines import IMPConfig
from sparsecore.validation import check_int, check_number

__all__ = ["OPTIMIZERS", "SCHEDULES", "LotteryTicketConfig", "TrainSpec"]

#: Optimizer names accepted by `TrainSpec`.
OPTIMIZERS = ("sgd", "adam")
#: Learning-rate schedules accepted by `TrainSpec`.
SCHEDULES = ("constant", "cosine", "linear", "step")


def _as_names(value: Any, name: str) -> tuple[str, ...]:
    items = (value,) if isinstance(value, str) else value
    try:
        items = tuple(items)
    except TypeError:
        raise TypeError(f"{name} must be a name or a sequence of names, got {value!r}") from None
    if not all(isinstance(item, str) and item for item in items):
        raise TypeError(f"{name} must contain non-empty strings, got {value!r}")
    return items


@dataclass(frozen=True)
class LotteryTicketConfig(IMPConfig):
    """Options of `sparse_lth.LotteryTicket`.

    Attributes:
        sparsity: Sparsity applied by magnitude at `setup` (``0``: start dense, the
            lottery-ticket default; a positive value is a one-shot first level).
        fraction: Fraction of the *remaining* weights removed per level (OpenLTH default 0.2).
        rewind_step: Optimizer step ``k`` whose weights are the rewind point; ``0`` is the
            original lottery ticket (rewind to initialisation).
        scope: ``"global"`` (one ranking over all tensors, OpenLTH ``sparse_global``) or
            ``"layer"`` (each tensor loses ``ceil(fraction * nnz)`` of its own weights, the
            layer-wise pruning of the 2019 LTH paper).
        layers_to_ignore: Target names or globs that keep a mask of ones forever but count
            in the remaining weights (OpenLTH ``pruning_layers_to_ignore``).
    """

    layers_to_ignore: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_number(self.fraction, "fraction")
        check_int(self.rewind_step, "rewind_step", 0)
        super().__post_init__()
        object.__setattr__(
            self, "layers_to_ignore", _as_names(self.layers_to_ignore, "layers_to_ignore")
        )


@dataclass(frozen=True)
class TrainSpec:
    """One training run of a lottery experiment, as a pure function of the step.

    Attributes:
        steps: Total optimizer steps ``T`` of a full run (a rewound run trains ``k..T``).
        batch_size: Training batch size (the last batch of an epoch may be smaller).
        lr: Peak learning rate.
        optimizer: ``"sgd"`` or ``"adam"``.
        momentum: SGD momentum.
        weight_decay: L2 weight decay (coupled, as in ``torch.optim.SGD``/``Adam``).
        schedule: ``"constant"``, ``"cosine"`` (to zero at ``steps``), ``"linear"`` (to zero) or
            ``"step"`` (multiply by ``gamma`` at each of ``milestones``).
        milestones: Steps of the ``"step"`` schedule.
        gamma: Factor of the ``"step"`` schedule.
        warmup_steps: Linear warm-up from 0 over this many steps (multiplies the schedule, as in
            OpenLTH).
    """

    steps: int
    batch_size: int = 128
    lr: float = 0.1
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        check_int(self.steps, "steps", 1)
        check_int(self.batch_size, "batch_size", 1)
        check_int(self.warmup_steps, "warmup_steps", 0)
        if not check_number(self.lr, "lr") > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0.0 <= check_number(self.momentum, "momentum") < 1.0:
            raise ValueError(f"momentum must lie in [0, 1), got {self.momentum}")
        if check_number(self.weight_decay, "weight_decay") < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        milestones = tuple(self.milestones)
        for m in milestones:
            check_int(m, "milestones", 1)
        if list(milestones) != sorted(milestones):
            raise ValueError(f"milestones must be increasing, got {milestones}")
        if self.schedule == "step" and not milestones:
            raise ValueError("milestones must be given for schedule='step'")
        object.__setattr__(self, "milestones", milestones)
        if not 0 < check_number(self.gamma, "gamma") <= 1:
            raise ValueError(f"gamma must lie in (0, 1], got {self.gamma}")

    def lr_factor(self, step: int) -> float:
        """Multiplier of `lr` for the optimizer step taken after ``step`` completed steps."""
        if self.schedule == "cosine":
            factor = 0.5 * (1.0 + math.cos(math.pi * min(step, self.steps) / self.steps))
        elif self.schedule == "linear":
            factor = max(0.0, 1.0 - step / self.steps)
        elif self.schedule == "step":
            factor = self.gamma ** bisect.bisect(self.milestones, step)
        else:
            factor = 1.0
        if self.warmup_steps:
            factor *= min(1.0, step / self.warmup_steps)
        return factor

    def lr_at(self, step: int) -> float:
        """The learning rate of the optimizer step taken after ``step`` completed steps."""
        return self.lr * self.lr_factor(step)

    def make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """A new optimizer over the model's trainable parameters (no state)."""
        params = [p for p in model.parameters() if p.requires_grad]
        if self.optimizer == "sgd":
            return torch.optim.SGD(
                params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
            )
        return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)

    def make_scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        """A ``LambdaLR`` at position 0 implementing `lr_factor`."""
        return torch.optim.lr_scheduler.LambdaLR(optimizer, self.lr_factor)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able fields."""
        data = asdict(self)
        data["milestones"] = list(self.milestones)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainSpec:
        """Inverse of `to_dict`."""
        data = dict(data)
        data["milestones"] = tuple(data.get("milestones", ()))
        return cls(**data)

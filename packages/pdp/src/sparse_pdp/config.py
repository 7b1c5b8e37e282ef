"""Configuration of `sparse_pdp.PDP` and its schedule.

The schedule follows the paper's training flow (Cho, Adya & Naik, "PDP: Parameter-free
Differentiable Pruning is All You Need", NeurIPS 2023, arXiv 2305.11203, Appendix D as summarised
by third-party re-implementations): dense warm-up for ``s`` epochs, then per-layer pruning targets
``r_l`` ramped in as ``r_l(e) = min(1, ε (e - s + 1)) · r_l``. Here everything is counted in
optimizer steps, as in the rest of ``sparsecore`` (``begin_step = s · steps_per_epoch``,
``update_every = steps_per_epoch``, ``end_step - begin_step = steps_per_epoch / ε``);
`PDPConfig.for_epochs` does this conversion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sparsecore import MethodConfig
from sparsecore.validation import check_bool, check_int, check_number

__all__ = ["DISTRIBUTIONS", "PDPConfig", "ramp_fraction"]

#: How the per-layer targets are allocated: one global magnitude ranking (the paper), or the same
#: sparsity in every layer.
DISTRIBUTIONS = ("global", "uniform")


def ramp_fraction(step: int, begin: int, end: int, every: int) -> float:
    """Fraction of the per-layer target in force after ``step`` completed optimizer steps.

    ``0`` before ``begin`` (dense warm-up). From ``begin`` on, the ramp has
    ``K = max(1, ceil((end - begin) / every))`` stages of ``every`` steps; stage
    ``j = (step - begin) // every`` uses ``min(1, (j + 1) / K)``. With ``every`` = one epoch this is
    the paper's ``min(1, ε (e - s + 1))`` with ``ε = 1 / K``: the first pruning stage already prunes
    ``1/K`` of the target, and the full target is in force from stage ``K - 1`` (which ends at
    ``end``) on.

    Args:
        step: Completed optimizer steps.
        begin: First step of pruning (end of the dense warm-up).
        end: Step by which the ramp is complete.
        every: Steps per ramp stage.
    """
    if step < begin:
        return 0.0
    stages = max(1, math.ceil((end - begin) / every))
    return min(1.0, ((step - begin) // every + 1) / stages)


@dataclass(frozen=True)
class PDPConfig(MethodConfig):
    """PDP options.

    Attributes:
        sparsity: Overall target sparsity over the targets (ignored for N:M, whose pattern fixes
            it). For the channel pattern it is the fraction of channels (output slices) removed.
        pattern: ``"unstructured"``, an N:M pattern (``"1:4"``, ``NM(2, 4)``) or ``"channel"``.
        tau: Temperature τ of the soft mask ``m(w) = σ((w² − t²)/τ)``; relative to ``t²`` by
            default (``relative_tau``). Smaller is sharper. Default 0.03 (relative): the
            package's measurement (+20 points over the paper's absolute τ = 1e-4, which diverged
            at 95% sparsity on MNIST-1D). The paper's setting is ``tau=1e-4,
            relative_tau=False``.
        relative_tau: Interpret ``tau`` relative to each threshold: the temperature is
            ``tau · t²``, so ``m = σ(((w/t)² − 1)/tau)`` does not depend on the weight scale
            (not in the paper; see the method docstring for why it exists). Default ``True``.
        begin_step: Dense warm-up steps; the per-layer targets are ranked from the weights after
            this many steps and pruning starts. Default 200 (a fifth of the default
            ``end_step``, about the paper's 16 warm-up epochs before a 67-epoch ramp). ``0``
            ranks the layers on their *initial* weights, which can starve whole layers (at 95%
            the hidden layer and classifier of an MLP kept one weight each): avoid it.
        end_step: Step by which the per-layer targets are fully ramped in (``>= begin_step``;
            equal means no ramp).
        update_every: Steps per ramp stage (one epoch reproduces the paper's per-epoch ramp; 1 is a
            smooth per-step ramp).
        harden_step: If set (``>= end_step``), `PDP.harden` runs automatically after this
            many steps: the rest of training fine-tunes with the final hard mask.
        distribution: ``"global"``: per-layer targets from one magnitude ranking over all targets
            (the paper); ``"uniform"``: every layer at ``sparsity``. Ignored for N:M.
    """

    tau: float = 0.03
    relative_tau: bool = True
    begin_step: int = 200
    end_step: int = 1000
    update_every: int = 1
    distribution: str = "global"
    harden_step: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        tau = check_number(self.tau, "tau", 0.0, open_low=True, finite=True)
        object.__setattr__(self, "tau", tau)
        check_bool(self.relative_tau, "relative_tau")
        check_int(self.begin_step, "begin_step", 0)
        check_int(self.end_step, "end_step", 0)
        check_int(self.update_every, "update_every", 1)
        if self.end_step < self.begin_step:
            raise ValueError(
                f"end_step ({self.end_step}) must be >= begin_step ({self.begin_step})"
            )
        if self.harden_step is not None:
            check_int(self.harden_step, "harden_step", 0)
            if self.harden_step < self.end_step:
                raise ValueError(
                    f"harden_step ({self.harden_step}) must be >= end_step ({self.end_step})"
                )
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(
                f"distribution must be one of {DISTRIBUTIONS}, got {self.distribution!r}"
            )

    @classmethod
    def for_epochs(
        cls,
        steps_per_epoch: int,
        warmup_epochs: int,
        ramp_epochs: int,
        finetune_from_epoch: int | None = None,
        **kwargs: Any,
    ) -> PDPConfig:
        """Build a config from the paper's epoch-based schedule.

        Args:
            steps_per_epoch: Optimizer steps per epoch.
            warmup_epochs: Dense epochs ``s``.
            ramp_epochs: Epochs until the full target, ``1/ε`` (the paper: ``ε`` = 0.015, so ≈ 67).
            finetune_from_epoch: Epoch (0-based) from which to fine-tune with the hard mask
                (sets ``harden_step``); ``None``: soft masks until the end.
            **kwargs: Other fields (``sparsity``, ``pattern``, ``tau``...).
        """
        check_int(steps_per_epoch, "steps_per_epoch", 1)
        check_int(warmup_epochs, "warmup_epochs", 0)
        check_int(ramp_epochs, "ramp_epochs", 0)
        begin = warmup_epochs * steps_per_epoch
        if finetune_from_epoch is not None:
            check_int(finetune_from_epoch, "finetune_from_epoch", 0)
            kwargs["harden_step"] = finetune_from_epoch * steps_per_epoch
        return cls(
            begin_step=begin,
            end_step=begin + ramp_epochs * steps_per_epoch,
            update_every=steps_per_epoch,
            **kwargs,
        )

    @property
    def ramp_complete_step(self) -> int:
        """The step from which the full per-layer targets are in force: the start of the last
        ramp stage, ``begin_step + (K - 1) update_every`` (at most ``end_step``).
        """
        stages = max(1, math.ceil((self.end_step - self.begin_step) / self.update_every))
        return self.begin_step + (stages - 1) * self.update_every

    def fraction(self, step: int) -> float:
        """`ramp_fraction` of this config after ``step`` completed steps."""
        return ramp_fraction(step, self.begin_step, self.end_step, self.update_every)

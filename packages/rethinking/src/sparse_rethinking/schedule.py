"""The epoch budgets and learning-rate steps of "Rethinking the Value of Network Pruning".

Liu, Sun, Zhou, Huang and Darrell, "Rethinking the Value of Network Pruning", ICLR 2019
(arXiv 1810.05270); official code Eric-mingjie/rethinking-network-pruning.

A pruned architecture trained from scratch is compared at two budgets:

* **Scratch-E**: the same number of epochs ``E`` as the large model (CIFAR 160, ImageNet 90);
* **Scratch-B**: the same *computation*: ``E × FLOPs_large / FLOPs_pruned`` epochs.

The official code has two rules (read in ``cifar/network-slimming/main_B.py`` and
``imagenet/l1-norm-pruning/main_B.py``):

* ``"cifar"``: ``epochs = int(E · ratio)``, uncapped; the learning rate is multiplied by 0.1 at
  the epochs ``int(0.5 · epochs)`` and ``int(0.75 · epochs)``;
* ``"imagenet"``: ``ratio ≥ 2`` → 180 epochs with a step of 60; otherwise ``int(90 · ratio)``
  epochs with a step of ``int(epochs / 3)``; the learning rate is ``lr · 0.1^(epoch // step)``.

CHOICE (generalisation to any ``E``, labelled): the official ImageNet code hard-codes ``E = 90``.
Here the cap is ``2E`` (``min(ratio, 2)``) and the step is always ``int(epochs / 3)``, which
gives the official 180 / 60 for ``E = 90`` and ``ratio ≥ 2`` (180 / 3 = 60) and the official
``int(90 · ratio)`` / ``int(epochs / 3)`` below the cap. Both rules round down (the code's
``int``), through the core's `sparsecore.evaluation.scratch_budgets` with ``rounding="floor"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sparsecore.evaluation import scratch_budgets
from sparsecore.validation import check_choice, check_int, check_number

__all__ = ["MODES", "EpochSchedule", "scratch_schedules"]

#: The two budget rules of the official code.
MODES = ("cifar", "imagenet")


@dataclass(frozen=True)
class EpochSchedule:
    """A training length and its step learning-rate decay (×0.1 at each milestone).

    Attributes:
        epochs: Number of epochs.
        milestones: Epochs at whose start the learning rate is multiplied by 0.1.
    """

    epochs: int
    milestones: tuple[int, ...]

    def lr_factor(self, epoch: int) -> float:
        """Multiplier of the base learning rate during ``epoch`` (0-based)."""
        return 0.1 ** sum(1 for m in self.milestones if epoch >= m)

    @classmethod
    def cifar(cls, epochs: int) -> EpochSchedule:
        """``epochs`` with the CIFAR steps at ``int(0.5·epochs)`` and ``int(0.75·epochs)``."""
        check_int(epochs, "epochs", 1)
        return cls(epochs, (int(epochs * 0.5), int(epochs * 0.75)))

    @classmethod
    def imagenet(cls, epochs: int) -> EpochSchedule:
        """``epochs`` with a ×0.1 step every ``int(epochs / 3)`` epochs (ImageNet rule)."""
        check_int(epochs, "epochs", 1)
        step = max(1, int(epochs / 3))
        return cls(epochs, tuple(range(step, epochs, step)))

    @property
    def step(self) -> int | None:
        """The constant step between milestones, when there is one (ImageNet rule)."""
        if len(self.milestones) < 1:
            return None
        gaps = {b - a for a, b in zip((0, *self.milestones), self.milestones, strict=False)}
        return gaps.pop() if len(gaps) == 1 else None


def scratch_schedules(
    epochs: int, dense_flops: float, pruned_flops: float, mode: str = "cifar"
) -> tuple[EpochSchedule, EpochSchedule]:
    """The Scratch-E and Scratch-B schedules of a pruned model.

    Args:
        epochs: Epochs ``E`` of the large model's training (Scratch-E trains this long).
        dense_flops: FLOPs (or MACs) per example of the large model.
        pruned_flops: FLOPs per example of the pruned model, same unit (for unstructured
            pruning: counted on the non-zero weights, as ``cifar/weight-level/cifar_B.py``).
        mode: ``"cifar"`` (uncapped) or ``"imagenet"`` (capped at ``2E``).

    Returns:
        ``(scratch_e, scratch_b)``.

    Raises:
        ValueError: A non-positive epoch count or FLOPs, or an unknown mode.
    """
    check_int(epochs, "epochs", 1)
    check_number(dense_flops, "dense_flops", low=0.0, open_low=True, finite=True)
    check_number(pruned_flops, "pruned_flops", low=0.0, open_low=True, finite=True)
    check_choice(mode, "mode", MODES)
    cap = math.inf if mode == "cifar" else 2.0
    e_epochs, b_epochs = scratch_budgets(epochs, pruned_flops, dense_flops, cap, "floor")
    build = EpochSchedule.cifar if mode == "cifar" else EpochSchedule.imagenet
    return build(e_epochs), build(b_epochs)

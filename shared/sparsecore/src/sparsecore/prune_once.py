"""Prune once, at a configured optimizer step or at `finalize`: the lifecycle of BN-γ slimming.

Network slimming (Liu et al., "Learning Efficient Convolutional Networks through Network
Slimming", arXiv 1708.06519; sparse-rethinking) and the YOLOv8 recipe's sparsity-aware BN
channel pruning (Sabaghian et al., arXiv 2509.12918; sparse-cwd) share one schedule: train with
a sparsity penalty, prune the channels once at ``config.prune_step`` (after that step's update),
then fine-tune with the masks fixed; with ``prune_step=None`` the pruning happens at `finalize`
(so the method can be attached to a sparsity-training run alone). `PruneOnce` is that schedule,
once; a method defines ``prune()`` (mask the selection) and its config a ``prune_step`` field.

`require_batchnorm` is the shared input check of methods that rank BatchNorm scales.

Choices:

* [choice] Whether the pruning has run is derived from the step (``step >= prune_step``), never
  stored, so resuming from a state dict is exact.
* [choice] A ``prune_step`` that was set but not reached at `finalize` is an incomplete schedule
  (``ScheduleIncompleteWarning`` naming ``prune_step``; the channels are pruned then anyway).
"""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["PruneOnce", "require_batchnorm"]


def require_batchnorm(model: nn.Module, what: str) -> None:
    """Refuse a model without BatchNorm layers (no γ to rank), before it is changed.

    Args:
        model: The model given to `setup`.
        what: The method, as the message names it (e.g. ``"network slimming"``).

    Raises:
        ValueError: ``model`` has no ``BatchNorm1d/2d/3d`` (or other ``_BatchNorm``) module.
    """
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise ValueError(f"{what} needs BatchNorm layers (their γ are the scores)")


class PruneOnce:
    """Mixin for a `sparsecore.PruningMethod` that prunes once (see the module docstring).

    Put it before the `PruningMethod` base (``class M(PruneOnce, ..., PruningMethod)``). The
    method implements ``prune()``; its config has ``prune_step: int | None``. A method that
    prunes at ``prune_step == 0`` does so itself in ``init_masks`` (no step precedes it).
    """

    config: Any
    step: int

    def prune(self) -> Any:  # pragma: no cover - the method's own
        """Mask the selected structures (the method's own)."""
        raise NotImplementedError

    @property
    def pruned(self) -> bool:
        """Whether the pruning phase has run: derived from the step, so resume is exact."""
        return self.config.prune_step is not None and self.step >= self.config.prune_step

    def on_after_optimizer_step(self) -> None:
        """Prune at ``prune_step`` (after its update)."""
        if self.step == self.config.prune_step:
            self.prune()

    def schedule_gap(self) -> str | None:
        """Pruning is pending when ``prune_step`` was set but not reached."""
        step = self.config.prune_step
        if step is not None and not self.pruned:
            return f"{type(self).__name__}: prune_step={step} not reached after {self.step} steps"
        return None

    def finalize(self) -> nn.Module:
        """Prune now if the pruning phase has not run, then bake the masks in."""
        if not self.pruned:
            self.prune()
        return super().finalize()  # type: ignore[misc]

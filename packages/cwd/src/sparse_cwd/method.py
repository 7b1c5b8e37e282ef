"""The recipe's sparsity-aware training and BN channel pruning as one sparsecore method.

Paper: Sabaghian et al., "A Novel Compression Framework for YOLOv8: Achieving Real-Time Aerial
Object Detection on Edge Devices via Structured Pruning and Channel-Wise Distillation", arXiv
2509.12918 (fork: melika-sce/YOLOv8_pruning). The three phases inside one training loop:

1. **sparsity-aware training** (steps ``< prune_step``): before every optimizer step (after
   ``backward``) ``γ.grad += λ(e)·sign(γ)`` and ``β.grad += beta_factor·λ₀·sign(β)`` on the
   eligible BatchNorms (`sparse_cwd.slimming`), with the fork's decaying ``λ(e)``, ``e = step //
   steps_per_epoch`` out of ``epochs``. No mask exists yet (all ones);
2. **BN channel pruning** (at ``prune_step``, or at `finalize` when it is ``None``): the paper's
   per-layer rule (``rule="layer"``, default) or the fork's global percentile threshold
   (``rule="global"``) picks channels by |γ|; whole groups are masked (conv rows, BatchNorm γ
   *and* β, as the fork's ``get_mask_bn`` zeroes both), so the channel outputs exactly zero and
   `sparsecore.export.remove_channels` rebuilds a thinner model that computes the same;
3. **fine-tuning** (after ``prune_step``): the L1 terms are off and the masks fixed. Channel-wise
   distillation (`sparse_cwd.distill`) is a separate loss the training loop adds.

Choices:
* CHOICE: the sign terms are added to ``.grad`` (as the fork does), not as a loss, so they are
  independent of loss scaling and the optimizer sees exactly the fork's gradient.
* CHOICE: ``e`` is clamped to ``epochs − 1`` when training runs longer than ``epochs``, so λ
  never turns negative.
* CHOICE: ``sparsity`` is the prune ratio (the fork's ``prune_ratio``, default 0.5 in the paper);
  ignored groups keep every channel, so the model-wide channel fraction removed is smaller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from sparse_cwd.slimming import (
    add_l1_subgradients,
    eligible_norms,
    l1_rate,
    select_global,
    select_per_layer,
)
from sparsecore import PruningMethod
from sparsecore.groups import group_masks
from sparsecore.groups.masking import ChannelGroupsSupport
from sparsecore.method import MethodConfig
from sparsecore.patterns import Channel, Pattern
from sparsecore.prune_once import PruneOnce, require_batchnorm
from sparsecore.targets import Target
from sparsecore.taxonomy import Taxonomy
from sparsecore.validation import check_bool, check_choice, check_int, check_number, check_shape

__all__ = ["SlimmingConfig", "SparsityAwareSlimming"]


@dataclass(frozen=True)
class SlimmingConfig(MethodConfig):
    """Options (with `MethodConfig`'s ``sparsity`` = prune ratio, ``targets``, ``exclude``).

    Attributes:
        pattern: Always ``"channel"`` (whole channel groups).
        input_shape: One example's shape (traces the channel groups; required).
        rule: ``"layer"`` (the paper: every eligible layer loses ``sparsity`` of its channels)
            or ``"global"`` (the fork: one |γ| percentile threshold).
        l1_rate: ``λ₀`` (the fork's ``sparsity_rate``, 1e-4).
        beta_factor: β coefficient in units of ``λ₀`` (the fork: 10; 0 turns the β term off).
        epochs: ``E`` of the decaying ``λ(e)``.
        steps_per_epoch: Optimizer steps per epoch (``e = step // steps_per_epoch``).
        prune_step: Step at which the channels are pruned (``None``: at `finalize`).
        ignore: Globs of BatchNorm names left out of the L1 term and the pruning (the fork's
            list: `sparse_cwd.detector.fork_ignored_norms`).
        ignore_coupled: Leave out groups with several producers (residual sums).
    """

    sparsity: float = 0.5
    pattern: Pattern | str = "channel"
    input_shape: tuple[int, ...] | None = None
    rule: str = "layer"
    l1_rate: float = 1e-4
    beta_factor: float = 10.0
    epochs: int = 1
    steps_per_epoch: int = 1
    prune_step: int | None = None
    ignore: tuple[str, ...] = ()
    ignore_coupled: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.pattern, Channel) or self.pattern.dim != 0:
            raise ValueError(
                f"pattern must be 'channel' for BN channel pruning, got {self.pattern}"
            )
        if self.input_shape is None:
            raise ValueError("input_shape is required: it traces the model's channel groups")
        object.__setattr__(self, "input_shape", check_shape(self.input_shape, "input_shape"))
        check_choice(self.rule, "rule", ("layer", "global"))
        check_number(self.l1_rate, "l1_rate", 0.0, finite=True)
        check_number(self.beta_factor, "beta_factor", 0.0, finite=True)
        check_int(self.epochs, "epochs", 1)
        check_int(self.steps_per_epoch, "steps_per_epoch", 1)
        if self.prune_step is not None:
            check_int(self.prune_step, "prune_step", 0)
        if not isinstance(self.ignore, tuple | list) or not all(
            isinstance(p, str) for p in self.ignore
        ):
            raise TypeError(f"ignore must be a tuple of name globs, got {self.ignore!r}")
        object.__setattr__(self, "ignore", tuple(self.ignore))
        check_bool(self.ignore_coupled, "ignore_coupled")


class SparsityAwareSlimming(PruneOnce, ChannelGroupsSupport, PruningMethod):
    """Decaying BN-L1 sparsity training, then |γ| channel pruning (see the module docstring).

    The schedule (`sparsecore.prune_once.PruneOnce`): prune at ``prune_step`` after its update,
    or at `finalize` when ``prune_step`` is ``None``.
    """

    taxonomy: ClassVar[Taxonomy | None] = Taxonomy(
        ("channel",),
        "during",
        "dense-to-sparse",
        "static",
        note="decaying L1 on BatchNorm scales and shifts, channels removed once by |gamma|",
    )

    name = "cwd"
    bench_scenario: ClassVar[str] = "cnn"
    config_class: ClassVar[type[MethodConfig]] = SlimmingConfig
    supported_patterns: ClassVar[tuple[type[Pattern], ...]] = (Channel,)
    config: SlimmingConfig

    @classmethod
    def bench_config(cls, total_steps: int, sparsity: float | None) -> dict[str, Any]:
        """`sparse bench` (CNN scenario): sparsity-train the first half, prune, fine-tune.

        The λ schedule spans the sparsity-training half as 4 "epochs"; λ₀ = 1e-3 because the
        bench's run is hundreds, not the fork's tens of thousands, of steps.
        """
        prune = max(1, total_steps // 2)
        return {
            "prune_step": prune,
            "epochs": 4,
            "steps_per_epoch": max(1, prune // 4),
            "l1_rate": 1e-3,
        }

    def validate(self, model: nn.Module, targets: list[Target]) -> None:
        """Refuse a model without BatchNorm (no γ to rank), before anything is changed."""
        require_batchnorm(model, "BN channel pruning")

    def init_masks(self) -> None:
        """No mask yet (dense sparsity training); the eligible BatchNorms are found here."""
        groups = self.channel_groups
        assert groups is not None  # input_shape is required, so companion_targets traced them
        self.eligible = eligible_norms(groups, self.config.ignore, self.config.ignore_coupled)
        if not self.eligible:
            raise ValueError("ignore: every BatchNorm group is ignored, nothing to prune")
        self._norms = [n for names in self.eligible.values() for n in names]
        self.threshold: float | None = None
        if self.config.prune_step == 0:
            self.prune()

    def current_rate(self) -> float:
        """``λ(e)`` of the step about to be taken (0 once pruned)."""
        if self.pruned:
            return 0.0
        cfg = self.config
        epoch = min(self.step // cfg.steps_per_epoch, cfg.epochs - 1)
        return l1_rate(cfg.l1_rate, epoch, cfg.epochs)

    def on_before_optimizer_step(self) -> None:
        """The fork's L1 subgradients on the eligible γ and β (sparsity training only)."""
        if self.pruned:
            return
        beta = self.config.beta_factor * self.config.l1_rate
        add_l1_subgradients(self.model, self._norms, self.current_rate(), beta)

    @torch.no_grad()
    def prune(self) -> dict[str, torch.Tensor]:
        """Mask the selected channels as whole groups; returns the keep-masks by group."""
        groups = self.channel_groups
        assert groups is not None
        if self.config.rule == "layer":
            keeps = select_per_layer(groups, self.model, self.eligible, self.config.sparsity)
        else:
            keeps, self.threshold = select_global(
                groups, self.model, self.eligible, self.config.sparsity
            )
        self.masks.update_all(group_masks(groups, keeps, self.masks.masks()))
        self.keeps = keeps
        return keeps

"""Network slimming as a sparsecore method: the structured pruning "Rethinking" re-examines.

Papers: Liu, Li, Shen, Huang, Yan & Zhang, "Learning Efficient Convolutional Networks through
Network Slimming", ICCV 2017, arXiv 1708.06519 (the method); Liu, Sun, Zhou, Huang & Darrell,
"Rethinking the Value of Network Pruning", ICLR 2019, arXiv 1810.05270 (the protocol this
package reproduces). Official code: Eric-mingjie/rethinking-network-pruning
(`cifar/network-slimming/main.py`: `updateBN`, `vggprune.py`).

The method, in the three phases of the official scripts, inside one training loop:

1. **sparsity training** (steps `< prune_step`): the loss gets `strength · Σ|γ|` over the
   BatchNorm scales of the prunable channel groups (`regularization`). Its gradient is the
   official `updateBN`'s `s · sign(γ)`, added through autograd instead of by editing `.grad`;
2. **pruning** (at `prune_step`, or at `finalize` when `prune_step` is `None`): channels are
   ranked by `|γ|` (the core's BN-γ group score, `sparsecore.groups.group_scores`) and the
   lowest `sparsity` fraction of them is masked as whole groups: conv rows, biases and the
   BatchNorm weight *and* bias. With the default `scope="global"` one threshold spans all
   layers, as in `vggprune.py`, and every group keeps at least one channel;
3. **fine-tuning** (after `prune_step`): the penalty is off and the masks are fixed. The model
   holds the surviving weights, and `sparsecore.export.remove_channels` shrinks it exactly.

The mask does not exist before the pruning phase: until then every mask is all ones, so the
sparsity-training phase is the official dense training.

Choices:
* CHOICE: `prune_step=None` prunes at `finalize`, so the method can be attached to a
  sparsity-training run alone, and the protocol's fine-tuning / Scratch runs happen afterwards
  (as `sparse_rethinking.experiment` does).
* CHOICE: exact channel counts (`keep_count` over all prunable channels, the core's tie rule)
  instead of the official percentile threshold, which keeps ties.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from sparsecore import PruningMethod
from sparsecore.baselines import OneShotConfig
from sparsecore.groups import group_masks, group_scores, select_channels
from sparsecore.groups.masking import ChannelGroupsSupport
from sparsecore.method import MethodConfig
from sparsecore.patterns import Channel, Pattern
from sparsecore.prune_once import PruneOnce, require_batchnorm
from sparsecore.targets import Target
from sparsecore.taxonomy import Taxonomy
from sparsecore.validation import check_int, check_number

__all__ = ["NetworkSlimming", "SlimmingConfig"]


@dataclass(frozen=True)
class SlimmingConfig(OneShotConfig):
    """Network slimming options (with `OneShotConfig`'s `input_shape`, `scope`, `round_to`).

    Attributes:
        pattern: Always `"channel"` (whole channel groups).
        scope: `"global"` (one |γ| threshold over all layers, the paper's) or `"layer"`.
        strength: `s`, the L1 coefficient on the BatchNorm scales (official `--s`, 1e-4).
        prune_step: Optimizer step at which the channels are pruned (`None`: at `finalize`).
    """

    pattern: Pattern | str = "channel"
    scope: str = "global"
    strength: float = 1e-4
    prune_step: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number(self.strength, "strength", 0.0, finite=True)
        if self.prune_step is not None:
            check_int(self.prune_step, "prune_step", 0)
        if not isinstance(self.pattern, Channel) or self.pattern.dim != 0:
            raise ValueError(f"pattern must be 'channel' for network slimming, got {self.pattern}")
        if self.input_shape is None:
            raise ValueError("input_shape is required: it traces the model's channel groups")


class NetworkSlimming(PruneOnce, ChannelGroupsSupport, PruningMethod):
    """BN-γ L1 sparsity training, then channel-group pruning by |γ| (see the module docstring).

    The schedule (`sparsecore.prune_once.PruneOnce`): prune at ``prune_step`` after its update,
    like ``vggprune.py`` after training, or at `finalize` when ``prune_step`` is ``None``.
    """

    taxonomy: ClassVar[Taxonomy | None] = Taxonomy(
        ("channel",),
        "during",
        "dense-to-sparse",
        "static",
        note="L1 on BatchNorm scales during training, channels removed once by |gamma|",
    )

    name = "slimming"
    #: Shown by `sparse bench` beside LAPP on the BatchNorm ResNet (a model with γ to rank).
    bench_scenario: ClassVar[str] = "cnn"
    config_class: ClassVar[type[MethodConfig]] = SlimmingConfig
    supported_patterns: ClassVar[tuple[type[Pattern], ...]] = (Channel,)
    config: SlimmingConfig

    def validate(self, model: nn.Module, targets: list[Target]) -> None:
        """Refuse a model without BatchNorm (no γ to rank), before anything is changed."""
        require_batchnorm(model, "network slimming")

    def init_masks(self) -> None:
        """No mask yet: the sparsity-training phase is dense. The γ to penalise are cached."""
        groups = self.channel_groups
        assert groups is not None  # input_shape is required, so companion_targets traced them
        params = dict(self.model.named_parameters())
        names = sorted({s.param for g in groups.prunable() for s in g.members("norm_weight")})
        self._gammas = [params[n] for n in names]
        if self.config.prune_step == 0:
            self.prune()

    def regularization(self) -> torch.Tensor:
        """`strength · Σ|γ|` during sparsity training, 0 once the channels are pruned."""
        if self.pruned or not self._gammas or self.config.strength == 0:
            return torch.zeros(())
        return self.config.strength * sum(g.abs().sum() for g in self._gammas)

    @torch.no_grad()
    def prune(self) -> dict[str, torch.Tensor]:
        """Mask the lowest-|γ| channels (whole groups); returns the channel keep-masks."""
        groups = self.channel_groups
        assert groups is not None
        scores = group_scores(groups, self.model, "bn")
        keeps = select_channels(
            scores, 1.0 - self.config.sparsity, self.config.scope, None, self.config.round_to
        )
        self.masks.update_all(group_masks(groups, keeps, self.masks.masks()))
        return keeps

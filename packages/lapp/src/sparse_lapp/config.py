"""Configuration of LAPP (see `sparse_lapp.method` for what each option does and why)."""

from __future__ import annotations

from dataclasses import dataclass

from sparsecore import MethodConfig
from sparsecore.patterns import Channel, Pattern
from sparsecore.validation import check_bool, check_int, check_number

__all__ = ["LAPPConfig"]


@dataclass(frozen=True)
class LAPPConfig(MethodConfig):
    """Options of `sparse_lapp.LAPP`.

    Attributes:
        sparsity: Target FLOPs *reduction*: the compacted network (bypasses included) has at
            most ``(1 - sparsity)`` times the MACs of the original model without bypasses.
            (LAPP's budget is FLOPs, not a fraction of weights; see the package docs.)
        pattern: Must be ``"channel"`` (output channels / filters).
        targets: Convolutions to prune (module names or globs); ``None``: every convolution
            whose output channels are free (not tied to another layer by a residual sum).
        exclude: Convolutions left at full width.
        input_shape: Shape of one input example, without the batch dimension (required: the
            FLOPs of a convolution depend on its spatial size).
        prune_steps: Optimizer steps of the progressive pruning phase (the paper's "first few
            epochs"): thresholds learn during these steps, then the masks freeze (required).
        flops_weight: Weight ``λ`` of the FLOPs constraint term in the loss.
        threshold_lr: Step size of the thresholds' normalised gradient step (one RMS
            normaliser shared by every layer, so per-layer gradient sizes survive).
        temperature: Width ``T`` of the sigmoid surrogate gradient, in units of the per-layer
            standardised importance score.
        init_threshold: Initial threshold (standardised score units; low enough to keep every
            channel at the start).
        schedule_power: Exponent of the FLOPs-target ramp over the pruning phase (3: cubic,
            Zhu–Gupta; 1: linear).
        min_channels: Fewest channels a layer keeps.
        ramp_delay: Fraction of ``prune_steps`` before the FLOPs ramp starts: during those
            first steps nothing is pruned and the thresholds do not move, so no channel is
            removed on the scores of a random initialisation.
        learn_thresholds: ``True``: LAPP (one learned threshold per layer). ``False``: the
            ablation without learned per-layer rates: every layer shares one threshold, set at
            every step to the lowest value that meets the FLOPs ramp.
        bypass: Whether every pruned convolution must carry a bypass (see
            `sparse_lapp.add_bypasses`).
    """

    sparsity: float = 0.5
    pattern: Pattern | str = "channel"
    input_shape: tuple[int, ...] | None = None
    prune_steps: int = 0
    flops_weight: float = 2.0
    threshold_lr: float = 0.1
    temperature: float = 0.5
    init_threshold: float = -3.0
    schedule_power: float = 3.0
    min_channels: int = 1
    ramp_delay: float = 0.25
    learn_thresholds: bool = True
    bypass: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.pattern, Channel) or self.pattern.dim != 0:
            raise ValueError(f"pattern must be 'channel' (output channels), got {self.pattern}")
        if self.input_shape is None:
            raise ValueError(
                "input_shape is required: the shape of one input example, e.g. (1, 8, 8)"
            )
        shape = self.input_shape
        if isinstance(shape, int | str) or not all(
            isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape
        ):
            raise ValueError(f"input_shape must be a tuple of positive integers, got {shape!r}")
        object.__setattr__(self, "input_shape", tuple(shape))
        check_int(self.prune_steps, "prune_steps (optimizer steps of the pruning phase)", 1)
        check_number(self.flops_weight, "flops_weight", 0.0, open_low=True, finite=True)
        check_number(self.threshold_lr, "threshold_lr", 0.0, open_low=True, finite=True)
        check_number(self.temperature, "temperature", 0.0, open_low=True, finite=True)
        check_number(self.schedule_power, "schedule_power", 0.0, open_low=True, finite=True)
        check_number(self.init_threshold, "init_threshold", finite=True)
        check_int(self.min_channels, "min_channels", 1)
        check_number(self.ramp_delay, "ramp_delay", 0.0, 1.0, open_high=True, finite=True)
        check_bool(self.learn_thresholds, "learn_thresholds")
        check_bool(self.bypass, "bypass")

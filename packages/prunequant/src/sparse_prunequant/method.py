"""FPGM filter pruning integrated with APoT quantization (SPQ and PPQ) as a sparsecore method.

Paper: Makenali, Rokh & Azarpeyvand, "Integrating Pruning with Quantization for Efficient Deep
Neural Networks Compression", arXiv 2509.04244 (2025). No official code for the combination;
its two components have official code, read for `sparse_prunequant.fpgm` (FPGM, He et al.,
arXiv 1811.00250, he-y/filter-pruning-geometric-median) and `sparse_prunequant.apot` (APoT,
Li et al., arXiv 1909.13144, yhhhli/APoT_Quantization).

The two schedules of the paper, in one training loop (`PruneQuantConfig`):

* **SPQ** (simultaneous): APoT quantization-aware training from step 0 while FPGM soft-prunes
  every ``prune_every`` steps (the paper's "each epoch"); the masks become hard at `finalize`
  (or at ``prune_end``), as the official FPGM ends with the last epoch's selection;
* **PPQ** (post-pruning): FPGM soft pruning of the full-precision model until ``prune_end``,
  hard masks there, then quantization-aware fine-tuning (``quant_start = prune_end``) with the
  masks fixed.

Masks are the core's channel-group masks (`sparsecore.groups`): a hard-pruned channel's filters,
biases and BatchNorm weight and bias are masked, so `sparsecore.export.remove_channels` removes it
exactly, and `sparse_prunequant.export` stores the compact network as integer codes. The
quantized layers multiply by the mask *after* the quantizer (`sparse_prunequant.layers`).

Choices:

* CHOICE: the quantizers (and their clips ``α``) are added to the model at `setup` for every
  schedule, inactive until ``quant_start`` (a persistent ``active`` buffer, so resume is exact):
  their ``α`` are constants until then (no gradient reaches them, and torch optimizers skip
  parameters without gradient, weight decay included). They join the optimizer as one new
  parameter group with the first group's hyperparameters.
* CHOICE: soft FPGM zeroing also runs at step 0 (the official code masks before the first
  epoch) and at every multiple of ``prune_every`` before ``prune_end``; optimizer state of the
  zeroed filters is left as it is (the official code does not touch it either).
* CHOICE: the first and last Linear / Conv in module order are the 8-bit "first conv / last FC".
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from sparse_prunequant.config import PruneQuantConfig
from sparse_prunequant.fpgm import fpgm_keeps, soft_zero
from sparse_prunequant.layers import install_quantizers, quant_parameters, set_quantization
from sparsecore import PruningMethod
from sparsecore.groups import group_masks
from sparsecore.groups.masking import ChannelGroupsSupport
from sparsecore.method import MethodConfig
from sparsecore.patterns import Channel, Pattern
from sparsecore.targets import Target
from sparsecore.taxonomy import Taxonomy

__all__ = ["PruneQuant"]


class PruneQuant(ChannelGroupsSupport, PruningMethod):
    """FPGM soft filter pruning with APoT quantization-aware training (module docstring)."""

    taxonomy: ClassVar[Taxonomy | None] = Taxonomy(
        ("channel",),
        "during",
        "dense-to-sparse",
        "dynamic",
        note="soft FPGM: pruned filters keep training and may return until the masks are hard; "
        "weights and activations quantized with APoT",
    )
    name: ClassVar[str] = "prunequant"
    bench_scenario: ClassVar[str] = "cnn"
    config_class: ClassVar[type[MethodConfig]] = PruneQuantConfig
    supported_patterns: ClassVar[tuple[type[Pattern], ...]] = (Channel,)
    config: PruneQuantConfig

    def __init__(self, config: PruneQuantConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self._alpha_group: dict[str, Any] | None = None
        self._optimizer: torch.optim.Optimizer | None = None

    @classmethod
    def bench_config(cls, total_steps: int, sparsity: float | None) -> dict[str, Any]:
        """``sparse bench``: SPQ at 4 bits, FPGM re-selected 10 times over the run."""
        return {"prune_every": max(1, total_steps // 10), "weight_bits": 4}

    # ------------------------------------------------------------------ setup
    def validate(self, model: nn.Module, targets: list[Target]) -> None:
        """Refuse a model with quantized layers already (before anything is changed)."""
        from sparse_prunequant.layers import quant_layers

        if quant_layers(model):
            raise ValueError("model: its layers are already quantized (set up once)")

    def setup(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> PruneQuant:
        """Trace the groups, add the masks, quantizers and their optimizer group (all or none)."""
        self._optimizer = optimizer
        self._backup: dict[str, torch.Tensor] = {}
        try:
            return super().setup(model, optimizer)
        except BaseException:
            self._drop_alpha_group()
            with torch.no_grad():  # undo the step-0 soft zeroing (the masks undo their own)
                if isinstance(model, nn.parallel.DistributedDataParallel):
                    model = model.module
                params = dict(model.named_parameters()) if isinstance(model, nn.Module) else {}
                for name, value in self._backup.items():
                    params[name].copy_(value)
            raise
        finally:
            self._backup = {}

    def _drop_alpha_group(self) -> None:
        if self._optimizer is not None and self._alpha_group is not None:
            groups = self._optimizer.param_groups
            if any(g is self._alpha_group for g in groups):
                groups.remove(self._alpha_group)
        self._alpha_group = None

    def init_masks(self) -> None:
        """Add the quantizers, then the first soft FPGM selection (step 0)."""
        config = self.config
        if config.quantizes:
            install_quantizers(
                self.model,
                config.weight_bits,  # type: ignore[arg-type]
                config.activation_bits,  # type: ignore[arg-type]
                config.edge_bits,
                config.weight_alpha,
                config.act_alpha,
                active=self.step >= config.quant_start,
            )
            if self._optimizer is not None:
                first = {k: v for k, v in self._optimizer.param_groups[0].items() if k != "params"}
                self._optimizer.add_param_group({**first, "params": quant_parameters(self.model)})
                self._alpha_group = self._optimizer.param_groups[-1]
        if config.prunes and self.channel_groups is None:
            raise ValueError("input_shape: the model has no prunable channel group")
        if config.prunes:
            params = dict(self.model.named_parameters())
            soft = {
                s.param for g in self.channel_groups.prunable() for s in g.members("out", "bias")
            }
            self._backup = {n: params[n].detach().clone() for n in soft}
        self._prune_event()

    # ------------------------------------------------------------------ schedule
    @property
    def hard(self) -> bool:
        """Whether the masks are hard (``step >= prune_end``); derived from the step."""
        end = self.config.prune_end
        return self.config.prunes and end is not None and self.step >= end

    def _prune_event(self) -> None:
        """Soft selection at multiples of ``prune_every``, hard masks at ``prune_end``."""
        config = self.config
        if not config.prunes:
            return
        if config.prune_end is not None and self.step == config.prune_end:
            self.harden()
        elif not self.hard and self.step % config.prune_every == 0:
            assert self.channel_groups is not None
            groups = self.channel_groups
            soft_zero(groups, self.model, fpgm_keeps(groups, self.model, config.sparsity))

    def on_after_optimizer_step(self) -> None:
        """Run the pruning events of this step and switch quantization on at ``quant_start``."""
        self._prune_event()
        if self.config.quantizes and self.step == self.config.quant_start:
            set_quantization(self.model, True)

    @torch.no_grad()
    def harden(self) -> dict[str, torch.Tensor]:
        """Select with FPGM once more and make the masks hard (whole channel groups)."""
        groups = self.channel_groups
        assert groups is not None
        keeps = fpgm_keeps(groups, self.model, self.config.sparsity)
        self.masks.update_all(group_masks(groups, keeps, self.masks.masks()))
        return keeps

    def schedule_gap(self) -> str | None:
        """Incomplete while ``prune_end`` or ``quant_start`` lies ahead."""
        config = self.config
        if config.prunes and config.prune_end is not None and self.step < config.prune_end:
            return f"PruneQuant: prune_end={config.prune_end} not reached after {self.step} steps"
        if config.quantizes and self.step < config.quant_start:
            return (
                f"PruneQuant: quant_start={config.quant_start} not reached after {self.step} "
                "steps (the model was never trained quantized)"
            )
        return None

    def finalize(self) -> nn.Module:
        """Make the masks hard if they are not yet (SPQ), then bake them into the weights.

        The returned model keeps its quantized layers (fake quantization, masked zeros);
        `sparse_prunequant.export.export_compact` shrinks and encodes it.
        """
        if self.config.prunes and not self.hard:
            self.harden()
        return super().finalize()

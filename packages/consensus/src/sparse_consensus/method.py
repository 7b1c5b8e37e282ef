"""`ConsensusPruning`: binary gates trained in one pass, then the static consensus sub-network.

Zhi, Babbar, Liu, Sun, Silavong, Shi & Moran, "Learning a Consensus Sub-Network with
Polarization Regularization and One Pass Training", arXiv 2302.10798 (no official code). The
labels [paper] / [recon] / CHOICE are explained in the package docstring.

Use: attach the gates first (`sparse_consensus.attach_gates`), build the optimizer over all the
model's parameters (the gate nets train with the network), set the method up, and add
`regularization()` to the task loss at every step (after the forward pass: it reads that pass's
gate decisions). ``finalize()`` then returns the plain static sub-network (or use
`sparse_consensus.consensus_subnetwork`, which also measures the training-set averages and
shrinks the model physically).

The loss term (``regularization``) is
``λ_s · (d(ḡ) − (1 − sparsity))² + λ_p · R_pol(ḡ)`` where ``ḡ`` are the batch means of the gates:

* ``d(ḡ)`` with ``budget="flops"`` (default) is the FLOPs density the batch-mean gates imply: each
  channel gate weighs the multiply-accumulates of its output channel (producer row plus the
  consumers' input slices), each block gate the MACs of its block (with its channel gates
  inside), over the dense model's MACs; with ``budget="gates"`` it is the plain mean of every
  gate. [recon: the paper's "user-defined sparsity" term; CHOICE: a FLOPs density, so that
  ``sparsity=0.5`` means half the FLOPs, the issue's operating point]
* ``R_pol`` is one of `sparse_consensus.regularizers.POLARIZERS` (``polarization``).

At ``finalize`` every gate whose average decision is below ``threshold`` (0.5) [paper: "gates
whose training-set average is below 0.5 are removed", per the digest, recon] is removed: a
channel gate's whole channel group is masked (conv rows, biases, BatchNorm weight *and* bias, so
`sparsecore.export.remove_channels` removes it exactly), a block gate's block becomes
``nn.Identity``; every gate module is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from sparse_consensus.gates import (
    _LAYERS,
    GATES_ATTRIBUTE,
    ConsensusGates,
    detach_gates,
    find_gates,
)
from sparse_consensus.regularizers import POLARIZERS, polarization
from sparsecore import PruningMethod
from sparsecore.groups import group_masks
from sparsecore.groups.masking import ChannelGroupsSupport
from sparsecore.method import MethodConfig
from sparsecore.patterns import Channel, Pattern
from sparsecore.targets import Target
from sparsecore.taxonomy import Taxonomy
from sparsecore.validation import check_choice, check_int, check_number

__all__ = ["BUDGETS", "ConsensusConfig", "ConsensusPruning"]

BUDGETS = ("flops", "gates")


@dataclass(frozen=True)
class ConsensusConfig(MethodConfig):
    """Options of `ConsensusPruning`.

    Attributes:
        sparsity: Target fraction removed: of the model's FLOPs (``budget="flops"``) or of the
            gates (``budget="gates"``).
        pattern: Always ``"channel"`` (channel groups).
        input_shape: One example's shape (required: traces the channel groups and the FLOPs).
        sparsity_weight: ``λ_s`` of the squared gap to the target density.
        polarization: Name of the polarizer (``"variance"`` = ``ḡ(1−ḡ)``, ``"zhuang"``,
            ``"none"``, or one added with `register_polarizer`).
        polarization_weight: ``λ_p``.
        zhuang_t: ``t`` of the ``"zhuang"`` polarizer.
        budget: ``"flops"`` or ``"gates"`` (see the module docstring).
        threshold: Gates whose average decision is below it are removed at ``finalize``.
    """

    sparsity: float = 0.5
    pattern: Pattern | str = "channel"
    input_shape: tuple[int, ...] | None = None
    sparsity_weight: float = 5.0
    polarization: str = "variance"
    polarization_weight: float = 1.0
    zhuang_t: float = 1.0
    budget: str = "flops"
    threshold: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.pattern, Channel) or self.pattern.dim != 0:
            raise ValueError(f"pattern must be 'channel' for consensus pruning, got {self.pattern}")
        if self.input_shape is None:
            raise ValueError("input_shape is required: it traces the channel groups and FLOPs")
        if not isinstance(self.input_shape, tuple | list) or not self.input_shape:
            raise TypeError(f"input_shape must be a tuple of ints, got {self.input_shape!r}")
        for dim in self.input_shape:
            check_int(dim, "input_shape", 1)
        object.__setattr__(self, "input_shape", tuple(self.input_shape))
        check_number(self.sparsity_weight, "sparsity_weight", 0.0, finite=True)
        check_number(self.polarization_weight, "polarization_weight", 0.0, finite=True)
        check_number(self.zhuang_t, "zhuang_t", 0.0, finite=True)
        check_number(self.threshold, "threshold", 0.0, 1.0, open_low=True)
        check_choice(self.polarization, "polarization", tuple(POLARIZERS))
        check_choice(self.budget, "budget", BUDGETS)
        # the gate nets are trained, never pruned
        if f"{GATES_ATTRIBUTE}.*" not in self.exclude:
            object.__setattr__(self, "exclude", (*self.exclude, f"{GATES_ATTRIBUTE}.*"))


def _macs(model: nn.Module, example: torch.Tensor) -> dict[str, float]:
    """Per-example MACs of every Linear / Conv (outside the gates) in one forward pass."""
    out: dict[str, float] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, _LAYERS) and not name.startswith(GATES_ATTRIBUTE + "."):

            def hook(m, _args, y, name=name):
                per_out = m.weight[0].numel()
                out[name] = out.get(name, 0.0) + y.numel() / y.shape[0] * per_out

            handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return out


class ConsensusPruning(ChannelGroupsSupport, PruningMethod):
    """Gated one-pass training with a sparsity and a polarization term (module docstring)."""

    taxonomy: ClassVar[Taxonomy | None] = Taxonomy(
        ("channel", "layer"),
        "during",
        "dense-to-sparse",
        "static",
        note="input-conditioned binary gates trained once; the consensus (average >= 0.5) "
        "is kept as a static sub-network",
    )
    name = "consensus"
    bench_scenario: ClassVar[str] = "consensus-gates"
    procedure: ClassVar[str | None] = (
        "attach gates (sparse_consensus.attach_gates) before building the optimizer, train "
        "once with the gated forward, then extract the static consensus sub-network"
    )
    config_class: ClassVar[type[MethodConfig]] = ConsensusConfig
    supported_patterns: ClassVar[tuple[type[Pattern], ...]] = (Channel,)
    config: ConsensusConfig

    @classmethod
    def bench_config(cls, total_steps: int, sparsity: float | None) -> dict[str, Any]:
        """Config overrides for ``sparse bench`` (the scenario runs the reproduction)."""
        return {} if sparsity is None else {"sparsity": sparsity}

    @property
    def gates(self) -> ConsensusGates:
        """The model's gates (after `setup`)."""
        gates = find_gates(self.model) if self.model is not None else None
        if gates is None:
            raise RuntimeError("ConsensusPruning: no gates (call setup on a gated model)")
        return gates

    def setup(
        self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
    ) -> ConsensusPruning:
        """`PruningMethod.setup` on a gated model (refused, untouched, without gates)."""
        plain = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
        if isinstance(plain, nn.Module):
            self.validate(plain, [])
        return super().setup(model, optimizer)  # type: ignore[return-value]

    def validate(self, model: nn.Module, targets: list[Target]) -> None:
        """Refuse a model without gates, before anything is changed."""
        gates = find_gates(model)
        if gates is None or not gates.all():
            raise ValueError(
                "model has no consensus gates: call sparse_consensus.attach_gates(model, ...) "
                "before building the optimizer"
            )

    def companion_targets(self, model: nn.Module, targets: list[Target]) -> list[Target]:
        """Trace the channel groups of the plain network (gates off)."""
        with find_gates(model).disabled():  # type: ignore[union-attr]
            return super().companion_targets(model, targets)

    def init_masks(self) -> None:
        """Masks start all ones (the gates do the pruning); the FLOPs weights are computed."""
        gates, groups = self.gates, self.channel_groups
        assert groups is not None
        self._group_of: dict[str, str] = {}
        for gate in gates.channels.values():
            group = groups.group_of(gate.target) if gate.target in groups else None
            if group is None or not group.prunable or group.size != gate.size:
                raise ValueError(f"channels: {gate.target!r} is not a prunable channel group")
            self._group_of[gate.target] = group.name
        param = next(self.model.parameters())
        example = torch.zeros((1, *self.config.input_shape), dtype=param.dtype, device=param.device)
        was_training = self.model.training
        self.model.eval()
        try:
            with gates.disabled():
                macs = _macs(self.model, example)
        finally:
            self.model.train(was_training)
        self._weights = self._cost_weights(macs)

    def _cost_weights(self, macs: dict[str, float]) -> dict[str, Any]:
        gates, groups = self.gates, self.channel_groups
        modules = dict(self.model.named_modules())
        total = sum(macs.values())
        channel: dict[str, torch.Tensor] = {}
        for gate in gates.channels.values():
            group = groups[self._group_of[gate.target]]
            producer = modules[gate.target]
            per = macs.get(gate.target, 0.0) / producer.weight.shape[0]
            for s in group.members("in"):
                layer = s.param.rpartition(".")[0]
                width = modules[layer].weight.shape[1]
                per += macs.get(layer, 0.0) * len(s.index) / width / group.size
            channel[gate.target] = torch.full((gate.size,), per / total)
        block: dict[str, float] = {}
        inside: dict[str, list[str]] = {}
        for gate in gates.blocks.values():
            prefix = gate.target + "."
            block[gate.target] = sum(v for k, v in macs.items() if k.startswith(prefix)) / total
            inside[gate.target] = [c for c in channel if c.startswith(prefix)]
        return {"channel": channel, "block": block, "inside": inside}

    def density(self, means: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """FLOPs (or gate) density implied by gate means (default: the last batch's means)."""
        gates = self.gates
        if means is None:
            means = {g.target: g.last.mean(0) for g in gates.all() if g.last is not None}
        if not means:
            return torch.ones(())
        if self.config.budget == "gates":
            return torch.cat([m.reshape(-1) for m in means.values()]).mean()
        w = self._weights
        one = torch.ones(())
        density = torch.ones(())
        outside = set(w["channel"]) - {c for cs in w["inside"].values() for c in cs}
        for c in outside:
            density = density - w["channel"][c].sum() + (means.get(c, one) * w["channel"][c]).sum()
        for b, cost in w["block"].items():
            kept = torch.full((), cost)
            for c in w["inside"][b]:
                kept = kept - w["channel"][c].sum() + (means.get(c, one) * w["channel"][c]).sum()
            density = density - cost + means.get(b, one).reshape(()) * kept
        return density

    def regularization(self) -> torch.Tensor:
        """``λ_s (d(ḡ) − (1 − s))² + λ_p R_pol(ḡ)`` on the last forward pass's gates."""
        gates = self.gates
        means = {g.target: g.last.mean(0) for g in gates.all() if g.last is not None}
        if not means:
            return torch.zeros(())
        cfg = self.config
        gap = self.density(means) - cfg.density
        pol = polarization(cfg.polarization, list(means.values()), cfg.zhuang_t)
        return cfg.sparsity_weight * gap.square() + cfg.polarization_weight * pol

    def on_after_optimizer_step(self) -> None:
        """Forget the step's gate decisions (their graph is spent)."""
        for gate in self.gates.all():
            gate.last = None

    def decisions(self) -> dict[str, torch.Tensor]:
        """Static keep decisions by gate target: ``average >= threshold``."""
        return {
            g.target: g.average.detach().cpu() >= self.config.threshold for g in self.gates.all()
        }

    @torch.no_grad()
    def finalize(self) -> nn.Module:
        """Remove the gates below the threshold, drop the gate modules; the plain sub-network.

        Channel groups of removed channel gates are masked (then baked to zeros, removable by
        `sparsecore.export.remove_channels`); removed blocks become ``nn.Identity``.
        """
        decisions = self.decisions()
        self.final_decisions = decisions
        keeps = {self._group_of[c]: decisions[c] for c in self.gates.channels_targets()}
        if keeps:
            self.masks.update_all(group_masks(self.channel_groups, keeps, self.masks.masks()))
        blocks = [g.target for g in self.gates.blocks.values()]
        model = super().finalize()
        detach_gates(model)
        self.removed_blocks = [b for b in blocks if not bool(decisions[b].all())]
        for name in self.removed_blocks:
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, nn.Identity())
        return model

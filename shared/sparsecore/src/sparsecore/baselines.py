"""Baselines every paper is compared against, each a small class on the core bases.

* `OneShotMagnitude`: prune once by ``|w|`` (layer-wise or global), then train with fixed
  masks (Han et al. 2015).
* `RandomPruning`: a random mask at the target sparsity (uniform or ERK layer densities).
* `SNIP`: one-shot at initialisation by connection sensitivity ``|w * g|``
  (Lee et al., "SNIP", arXiv 1810.02340); needs `SNIP.calibrate` on data.
* `GMP`: gradual magnitude pruning on the cubic schedule (Zhu & Gupta, "To prune, or not to
  prune", arXiv 1710.01878). Masks only shrink.
* `IMP`: iterative magnitude pruning with a rewind point (Frankle & Carbin, arXiv
  1803.03635; Frankle et al., arXiv 1903.01611): `IMP.prune_round` then `IMP.rewind`.
* `SET`: drop smallest ``|w|``, grow at random (Mocanu et al. 2018, arXiv 1707.04780).
* `RigL`: drop smallest ``|w|``, grow largest ``|g|`` (Evci et al., arXiv 1911.11134).

Channel groups: with ``pattern="channel"`` and ``input_shape`` set, ``OneShotMagnitude``,
``GMP`` and ``SNIP`` prune dependency groups (``sparsecore.groups``): the element scores are
aggregated per group channel, ``sparsity`` is the fraction of channels removed (per group, or over
all groups with ``scope="global"``), and the masks also cover biases and BatchNorm weights and
shifts, so ``export.remove_channels`` removes exactly what was masked. ``IMP`` refuses
``input_shape`` (its rounds count entries, not channels).

Layouts: every selection uses the per-target, stored-layout pattern
``method.masks.targets[name].pattern`` (patterns are written in ``nn.Linear``'s ``(out, in)``
convention and transposed for Hugging Face ``Conv1D`` weights, see `sparsecore.layouts`). A
global ranking with a structured pattern needs the same stored pattern on every target; mixing
layouts (``Channel`` over ``Linear`` and ``Conv1D``) raises ``ValueError`` in ``validate``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from sparsecore.groups import ChannelGroupsSupport, prune_channel_groups
from sparsecore.layouts import common_pattern
from sparsecore.method import (
    Batch,
    DynamicSparseMethod,
    LossFn,
    MethodConfig,
    PruningMethod,
    check_sparsity,
)
from sparsecore.patterns import NM, Block, Channel, Pattern, Unstructured
from sparsecore.schedules import Polynomial
from sparsecore.scores import gradients_on
from sparsecore.select import select, select_global
from sparsecore.targets import Target
from sparsecore.taxonomy import Taxonomy
from sparsecore.validation import check_choice, check_int, check_number, check_shape
from sparsecore.window import PruningWindow

__all__ = [
    "GMP",
    "IMP",
    "SET",
    "SNIP",
    "GMPConfig",
    "IMPConfig",
    "OneShotConfig",
    "OneShotMagnitude",
    "RandomPruning",
    "RigL",
    "check_scope_layouts",
    "prune_by_scores",
]

SCOPES = ("layer", "global")


def prune_by_scores(
    method: PruningMethod,
    scores: dict[str, torch.Tensor],
    sparsity: float,
    scope: str = "layer",
    only_active: bool = True,
) -> None:
    """Set every mask of ``method`` from ``scores`` at ``sparsity``.

    Each tensor is selected with its own stored-layout pattern
    (``method.masks.targets[name].pattern``, e.g. ``NM(2, 4, dim=0)`` on a GPT-2 ``Conv1D``).

    Args:
        method: A set-up method.
        scores: Scores per target name.
        sparsity: Target sparsity over the targets (ignored for N:M patterns).
        scope: ``"layer"`` (each tensor at ``sparsity``) or ``"global"`` (one ranking).
        only_active: Rank currently masked entries last, so masks only shrink.

    Raises:
        ValueError: ``scope="global"`` with a structured pattern whose stored layout differs
            between targets (``Channel`` / ``Block`` over both ``Linear`` and ``Conv1D``).
    """
    if getattr(method.masks, "sharded", False):  # FSDP2: local shards, distributed top-k
        from sparsecore.fsdp_setup import sharded_prune_by_scores

        sharded_prune_by_scores(method, scores, sparsity, scope, only_active)
        return
    groups = getattr(method, "channel_groups", None)
    if groups is not None:  # channel groups (pattern="channel" with input_shape)
        round_to = getattr(method.config, "round_to", None)
        prune_channel_groups(method, groups, scores, sparsity, scope, only_active, round_to)
        return
    targets = method.masks.targets
    patterns = {n: targets[n].pattern for n in scores}
    if only_active:
        scores = {
            n: torch.where(method.masks.mask(n), s.to(torch.float64), -math.inf)
            for n, s in scores.items()
        }
    density = 1.0 - sparsity
    if scope == "global" and not isinstance(method.config.pattern, NM):
        pattern = common_pattern(patterns, "scope='global'")
        floor = getattr(method.config, "min_per_layer", 1)
        keeps = select_global(scores, density, pattern, min_per_tensor=floor)
    else:
        keeps = {n: select(s, density, patterns[n], name=n) for n, s in scores.items()}
    method.masks.update_all(keeps)


def check_scope_layouts(method: PruningMethod, targets: list[Target]) -> None:
    """Raise (before the model is touched) if a global ranking would mix stored layouts.

    ``scope="global"`` with a structured pattern needs one stored-layout pattern for all targets
    (see `sparsecore.layouts.common_pattern`); N:M is per group and always fine.
    """
    if getattr(method.config, "scope", "layer") == "global" and not isinstance(
        method.config.pattern, NM
    ):
        common_pattern({t.name: t.pattern for t in targets}, "scope='global'")


def _magnitudes(method: PruningMethod) -> dict[str, torch.Tensor]:
    return {n: p.detach().abs() for n, p in method.masks.params().items()}


@dataclass(frozen=True)
class OneShotConfig(MethodConfig):
    """One-shot pruning options.

    Attributes:
        scope: ``"layer"`` (every tensor at the sparsity) or ``"global"`` (one ranking).
        min_per_layer: With ``scope="global"``: units (weights, or channels / blocks) every
            target keeps at least, so a global ranking never cuts a layer off (see
            `sparsecore.select.select_global`; the total stays exact). ``0`` opts out.
        input_shape: The shape of one input example (no batch dimension); ignored unless
            ``pattern="channel"``. With the channel pattern it makes the method prune channel
            *groups* (see
            `sparsecore.groups.masking`): coupled layers, biases and BatchNorm channels
            together, so that ``export.remove_channels`` removes what was masked.
        round_to: With ``input_shape`` and ``scope="layer"``: every group keeps a multiple of
            ``round_to`` channels (rounded down, at least ``round_to``), e.g. 16 for AVX-512.
    """

    scope: str = "layer"
    min_per_layer: int = 1
    input_shape: tuple[int, ...] | None = None
    round_to: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self.scope, "scope", SCOPES)
        check_int(self.min_per_layer, "min_per_layer", 0)
        if self.input_shape is not None:
            object.__setattr__(self, "input_shape", check_shape(self.input_shape, "input_shape"))
        if self.round_to is not None:
            check_int(self.round_to, "round_to", 1)
            if self.input_shape is None or self.scope != "layer":
                raise ValueError("round_to needs input_shape (channel groups) and scope='layer'")


class OneShotMagnitude(ChannelGroupsSupport, PruningMethod):
    """Prune by ``|w|`` at setup, then keep the masks fixed."""

    taxonomy: ClassVar[Taxonomy | None] = Taxonomy(
        ("unstructured", "n:m", "channel", "block"),
        "after",
        "dense-to-sparse",
        "static",
        note="prunes once at setup: post-training on a trained model, at init otherwise",
    )

    name = "magnitude"
    fsdp2: ClassVar[bool] = True
    config_class: ClassVar[type[MethodConfig]] = OneShotConfig
    supported_patterns: ClassVar[tuple[type[Pattern], ...]] = (Unstructured, NM, Channel, Block)

    def validate(self, model: nn.Module, targets: list[Target]) -> None:  # noqa: D102
        check_scope_layouts(self, targets)

    def init_masks(self) -> None:  # noqa: D102
        prune_by_scores(self, _magnitudes(self), self.config.sparsity, self.config.scope, False)


class RandomPruning(PruningMethod):
    """A random mask at the target sparsity, layer-wise uniform, fixed afterwards."""

    taxonomy: ClassVar[Taxonomy | None] = Taxonomy(
        ("unstructured", "n:m", "channel", "block"), "before", "sparse-to-sparse", "static"
    )

    name = "random"
    requires_finite_weights: ClassVar[bool] = False
    supported_patterns: ClassVar[tuple[type[Pattern], ...]] = (Unstructured, NM, Channel, Block)

    def init_masks(self) -> None:  # noqa: D102
        scores = {
            n: torch.rand(p.shape, generator=self.generator).to(p.device)
            for n, p in self.masks.params().items()
        }
        prune_by_scores(self, scores, self.config.sparsity, "layer", False)


class SNIP(ChannelGroupsSupport, PruningMethod):
    """Single-shot pruning at initialisation by ``|w * g|`` on calibration batches (global)."""

    taxonomy: ClassVar[Taxonomy | None] = Taxonomy(
        ("unstructured", "channel"), "before", "sparse-to-sparse", "static"
    )

    name = "snip"
    config_class: ClassVar[type[MethodConfig]] = OneShotConfig
    supported_patterns: ClassVar[tuple[type[Pattern], ...]] = (Unstructured, Channel)
    needs_calibration = True

    def validate(self, model: nn.Module, targets: list[Target]) -> None:  # noqa: D102
        check_scope_layouts(self, targets)

    def calibrate(self, batches: Iterable[Batch], loss_fn: LossFn | None = None) -> None:
        """Score ``|w * g|`` on ``batches`` and prune (``RuntimeError`` before `setup`)."""
        params = self.masks.params()
        assert self.model is not None
        grads = gradients_on(self.model, params, batches, loss_fn)
        scores = {n: (params[n].detach() * grads[n]).abs() for n in params}
        scope = "global" if self.config.scope == "global" else "layer"
        prune_by_scores(self, scores, self.config.sparsity, scope, False)


@dataclass(frozen=True)
class GMPConfig(OneShotConfig):
    """Gradual magnitude pruning options.

    Attributes:
        initial_sparsity: Sparsity at ``begin_step`` (``<= sparsity``: masks only shrink).
        begin_step: First pruning step.
        end_step: Step at which ``sparsity`` is reached: the last update always runs exactly
            there, also when ``end_step - begin_step`` is not a multiple of ``update_every``.
        update_every: Steps between pruning updates.
        power: Exponent of the polynomial (3: the cubic schedule).
    """

    initial_sparsity: float = 0.0
    begin_step: int = 0
    end_step: int = 1000
    update_every: int = 100
    power: float = 3.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_sparsity(self.initial_sparsity, "initial_sparsity")
        if self.initial_sparsity > self.sparsity:
            raise ValueError(
                f"initial_sparsity ({self.initial_sparsity}) must be <= sparsity "
                f"({self.sparsity}): GMP masks only shrink"
            )
        check_number(self.power, "power", 0.0, open_low=True, finite=True)
        self.window  # noqa: B018 - validates begin_step / end_step / update_every

    @property
    def window(self) -> PruningWindow:
        """The pruning window (``"begin"`` grid: the last update lands on ``end_step``)."""
        return PruningWindow(self.begin_step, self.end_step, self.update_every)

    @property
    def schedule(self) -> Polynomial:
        """The sparsity schedule."""
        return Polynomial(
            self.initial_sparsity,
            self.sparsity,
            self.begin_step,
            self.end_step,
            self.update_every,
            self.power,
        )


class GMP(ChannelGroupsSupport, PruningMethod):
    """Zhu & Gupta gradual magnitude pruning: at each update step prune to ``s_t`` by ``|w|``.

    Updates run every ``update_every`` steps from ``begin_step`` and at ``end_step`` itself
    (`sparsecore.window.PruningWindow`), so ``sparsity`` is reached exactly at
    ``end_step``; ``schedule_complete`` tells whether training got there.
    """

    taxonomy: ClassVar[Taxonomy | None] = Taxonomy(
        ("unstructured", "channel", "block"), "during", "dense-to-sparse", "static"
    )

    name = "gmp"
    fsdp2: ClassVar[bool] = True
    config_class: ClassVar[type[MethodConfig]] = GMPConfig
    supported_patterns: ClassVar[tuple[type[Pattern], ...]] = (Unstructured, Channel, Block)
    config: GMPConfig

    def validate(self, model: nn.Module, targets: list[Target]) -> None:  # noqa: D102
        check_scope_layouts(self, targets)

    def init_masks(self) -> None:  # noqa: D102
        if self.config.initial_sparsity > 0 and self.config.begin_step == 0:
            self.prune_to(self.config.initial_sparsity)

    def prune_to(self, sparsity: float) -> None:
        """Prune (monotonically) to ``sparsity`` by magnitude."""
        prune_by_scores(self, _magnitudes(self), sparsity, self.config.scope, True)

    def on_after_optimizer_step(self) -> None:  # noqa: D102
        schedule = self.config.schedule
        if schedule.is_update_step(self.step):
            self.prune_to(schedule(self.step))

    def schedule_gap(self) -> str | None:  # noqa: D102
        return self.config.window.gap(self.step, "GMP")


@dataclass(frozen=True)
class IMPConfig(OneShotConfig):
    """Iterative magnitude pruning options.

    Attributes:
        fraction: Fraction of the remaining weights removed per round.
        rewind_step: Optimizer step whose weights are the rewind point (0: initialisation).
        scope: ``"global"`` by default, as in the lottery-ticket papers.
    """

    sparsity: float = 0.0
    fraction: float = 0.2
    rewind_step: int = 0
    scope: str = "global"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number(self.fraction, "fraction", 0.0, 1.0, open_low=True, open_high=True)
        check_int(self.rewind_step, "rewind_step", 0)


class IMP(PruningMethod):
    """Iterative magnitude pruning: train, `prune_round`, `rewind`, repeat.

    Each round removes ``ceil(fraction * nnz)`` of the remaining weights (globally by default;
    masks only shrink). The rewind point is the full model state at ``rewind_step`` (captured at
    setup when it is 0). Rebuilding the optimizer and the LR schedule after a rewind is the
    caller's (see ``sparse-lth`` for the complete procedure).
    """

    taxonomy: ClassVar[Taxonomy | None] = Taxonomy(
        ("unstructured", "channel"), "iterative", "dense-to-sparse", "static"
    )

    name = "imp"
    config_class: ClassVar[type[MethodConfig]] = IMPConfig
    procedure: ClassVar[str | None] = "iterative rounds with rewinding"
    supported_patterns: ClassVar[tuple[type[Pattern], ...]] = (Unstructured, Channel)
    config: IMPConfig

    def validate(self, model: nn.Module, targets: list[Target]) -> None:  # noqa: D102
        check_scope_layouts(self, targets)
        if self.config.input_shape is not None and isinstance(self.config.pattern, Channel):
            raise ValueError("IMP: input_shape (channel groups) is not supported yet")

    def __init__(self, config: MethodConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.round = 0
        self.rewind_state: dict[str, torch.Tensor] | None = None

    def init_masks(self) -> None:  # noqa: D102
        if self.config.rewind_step == 0:  # before the initial pruning: the unpruned init
            self.capture_rewind_point()
        if self.config.sparsity > 0:
            prune_by_scores(self, _magnitudes(self), self.config.sparsity, self.config.scope)

    def capture_rewind_point(self) -> None:
        """Store the model's state (weights and buffers, not masks) as the rewind point."""
        self.masks  # noqa: B018 - a RuntimeError before setup, not an AssertionError
        assert self.model is not None
        masks = self.masks.state_keys()
        self.rewind_state = {
            k: v.detach().clone() for k, v in self.model.state_dict().items() if k not in masks
        }

    def on_after_optimizer_step(self) -> None:  # noqa: D102
        if self.config.rewind_step > 0 and self.step == self.config.rewind_step:
            self.capture_rewind_point()

    def prune_round(self) -> dict[str, int]:
        """Remove ``ceil(fraction * nnz)`` of the remaining weights by magnitude.

        Returns:
            The new nnz per tensor.
        """
        total_nnz = sum(self.masks.nnz().values())
        total = sum(m.numel() for m in self.masks.masks().values())
        remove = math.ceil(self.config.fraction * total_nnz)
        target = 1.0 - (total_nnz - remove) / total
        prune_by_scores(self, _magnitudes(self), target, self.config.scope, True)
        self.round += 1
        return self.masks.nnz()

    @torch.no_grad()
    def rewind(self) -> None:
        """Load the rewind point's weights and buffers, keep the current masks, re-apply them."""
        if self.rewind_state is None:
            raise RuntimeError(f"no rewind point yet (rewind_step={self.config.rewind_step})")
        self.masks  # noqa: B018 - a RuntimeError before setup, not an AssertionError
        assert self.model is not None
        self.model.load_state_dict(self.rewind_state, strict=False)
        self.masks.apply()
        self.step = self.config.rewind_step

    def extra_state(self) -> dict[str, Any]:  # noqa: D102
        return {"round": self.round, "rewind_state": copy.copy(self.rewind_state)}

    def load_extra_state(self, state: dict[str, Any]) -> None:  # noqa: D102
        self.round = int(state["round"])
        self.rewind_state = state["rewind_state"]


class SET(DynamicSparseMethod):
    """Sparse Evolutionary Training: drop the smallest ``|w|``, grow uniformly at random."""

    taxonomy: ClassVar[Taxonomy | None] = Taxonomy(
        ("unstructured",), "during", "sparse-to-sparse", "dynamic"
    )

    name = "set"

    def grow_scores(self, name: str, weight: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return torch.rand(weight.shape, generator=self.generator).to(weight.device)


class RigL(DynamicSparseMethod):
    """Rigging the Lottery: drop the smallest ``|w|``, grow the largest dense ``|g|``."""

    taxonomy: ClassVar[Taxonomy | None] = Taxonomy(
        ("unstructured",), "during", "sparse-to-sparse", "dynamic"
    )

    name = "rigl"
    fsdp2: ClassVar[bool] = True

    def grow_scores(self, name: str, weight: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return grad.detach().abs()

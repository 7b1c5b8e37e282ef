"""SuperTickets as a sparsecore method: channel-shrinking search and progressive pruning at once.

Paper: Haoran You, Baopu Li, Zhanyi Sun, Xu Ouyang, Yingyan Celine Lin, "SuperTickets: Drawing
Task-Agnostic Lottery Tickets from Supernets via Jointly Architecture Searching and Parameter
Pruning", ECCV 2022, arXiv 2207.03677. Official code: GATECH-EIC/SuperTickets (`train.py`
two-in-one loop, `utils/prune.py`, `models/compress_utils.py`, `pruners/mag.py`,
`pruners/pruner.py`, `configs/cls_imagenet_g_0.9.yml`).

One training run does both, on one set of bool masks (hard mode):

1. **Search by channel shrinking** (`regularization`, `mask_channels`): the loss gets
   ``ρ(t) Σ_i c_i |γ_i|`` over the γ of the BN after each depthwise conv, with FLOPs-aware
   ``c_i`` (`sparse_supertickets.penalty`) and ρ ramped linearly from 0 to ``rho`` over
   ``rho_warmup_steps``. Every ``channel_every`` steps (official: every evaluation), the
   atomic blocks with ``|γ| <= channel_threshold`` are masked as whole core channel groups
   (expand row, both BNs, depthwise filter): their output is then exactly zero, and
   `sparse_supertickets.ticket.shrink` removes them physically (`sparsecore.export`).
2. **Progressive pruning** (`prune_weights`): every ``prune_interval`` steps, one global
   magnitude ranking (`sparsecore.select.select_global`) over every Conv / Linear weight (no
   bias, no BN: official ``prune_bias: False``, ``prune_batchnorm: False``) keeps
   ``1 - r`` of the weights still alive, ``r = min(k · ratio_increment, sparsity)``.
3. **Iterative reactivation** (``reactivate=True``, official ``reset_mask``): after each
   pruning event except the last, the masks are reset to ones and the weights keep their
   values, so a pruned connection can come back at the next (higher-ratio) selection. The
   selection is recorded in `history` and `last_selection`.

Choices (labelled):

* CHOICE: in the official loop a pruned weight keeps its stale value (`Pruner.set_zeros`
  rebinds a local name, a no-op; the forward multiplies by the mask), so even without
  ``reset_mask`` it can re-enter a later selection. Here masks are hard (pruned weights are
  exactly 0, the core's contract): without reactivation the masks only shrink; with it, the
  reset restores every weight to the value it had at the selection, which is the official
  state after ``pruner.alpha_mask(1)``.
* CHOICE: the reset happens right after the selection (the official code evaluates the pruned
  model, then resets, before any further training step); `last_selection` keeps the pruned
  masks for that evaluation.
* CHOICE: the ratio is over the weights still alive (not in masked channels), exactly
  ``keep_count`` of them kept with the core's tie rule and at least one weight per tensor
  (the official ``kthvalue`` threshold counts the supernet's removed channels as shrunk away,
  which is what this does, and keeps ties).
* CHOICE: masked channels are masked with their BN bias (the core group rule, so removal is
  exact); the official shrink folds ``act(β)`` of a removed channel into the next conv's bias
  instead. No EMA model (official ``moving_average_decay`` 0.9999 is meaningless over a few
  hundred steps): channels are thresholded on the trained γ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from sparse_supertickets.penalty import SearchedGroup, penalties, searched_groups
from sparse_supertickets.schedule import prune_events, prune_ratio, rho_at
from sparsecore import PruningMethod
from sparsecore.groups import channel_groups, group_masks
from sparsecore.method import MethodConfig
from sparsecore.patterns import Channel, Pattern, Unstructured
from sparsecore.select import keep_count, select_global
from sparsecore.targets import Target
from sparsecore.taxonomy import Taxonomy
from sparsecore.validation import check_bool, check_choice, check_int, check_number, check_shape

__all__ = ["SuperTickets", "SuperTicketsConfig"]


@dataclass(frozen=True)
class SuperTicketsConfig(MethodConfig):
    """SuperTickets options (steps are optimizer steps; official values are in epochs).

    Attributes:
        sparsity: Final global prune ratio of the Conv / Linear weights (official
            ``target_ratio`` 0.9).
        input_shape: One example's shape (no batch); traces the channel groups. Required.
        total_steps: Steps of the run; the pruning event at the last multiple of
            ``prune_interval`` is final (no reactivation after it). Required.
        prune_interval: Steps between pruning events (official 25 epochs).
        ratio_increment: Ratio added per event (official 0.1).
        reactivate: Iterative reactivation (official ``reset_mask``).
        rho: L1 weight of the γ penalty (official 1.8e-4).
        rho_free_steps: Steps without penalty (official ``epoch_free`` 0).
        rho_warmup_steps: Step at which ρ reaches ``rho`` (official 25 epochs).
        penalty: ``"flops"`` (FLOPs-aware ``c_i``, official ``expansion_only``), ``"equal"``
            (``c_i = 1``, the network-slimming baseline) or ``"none"`` (no search).
        channel_threshold: Atomic blocks with ``|γ| <=`` it are masked (official
            ``model_shrink_threshold`` 1e-3).
        channel_every: Steps between channel checks (official: every evaluation, 10 epochs);
            ``None``: only at `finalize`.
        penalty_normalizer: The ``c_i`` normaliser; ``None``: computed on the model at setup
            (pass the supernet's `normalizer` to a method set up on a shrunk model).
    """

    sparsity: float = 0.9
    input_shape: tuple[int, ...] | None = None
    total_steps: int | None = None
    prune_interval: int = 25
    ratio_increment: float = 0.1
    reactivate: bool = False
    rho: float = 1.8e-4
    rho_free_steps: int = 0
    rho_warmup_steps: int = 25
    penalty: str = "flops"
    channel_threshold: float = 1e-3
    channel_every: int | None = None
    penalty_normalizer: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "input_shape", check_shape(self.input_shape, "input_shape"))
        if self.total_steps is None:
            raise ValueError("total_steps is required (it fixes the final pruning event)")
        check_int(self.total_steps, "total_steps", 1)
        check_int(self.prune_interval, "prune_interval", 1)
        check_number(self.ratio_increment, "ratio_increment", 0.0, 1.0, open_low=True)
        check_bool(self.reactivate, "reactivate")
        check_number(self.rho, "rho", 0.0, finite=True)
        check_int(self.rho_free_steps, "rho_free_steps", 0)
        check_int(self.rho_warmup_steps, "rho_warmup_steps", 0)
        if self.rho_warmup_steps < self.rho_free_steps:
            raise ValueError("rho_warmup_steps must be >= rho_free_steps")
        check_choice(self.penalty, "penalty", ("flops", "equal", "none"))
        check_number(self.channel_threshold, "channel_threshold", 0.0, finite=True)
        if self.channel_every is not None:
            check_int(self.channel_every, "channel_every", 1)
        if self.penalty_normalizer is not None:
            check_number(self.penalty_normalizer, "penalty_normalizer", 0.0, open_low=True)
        if not isinstance(self.pattern, Unstructured):
            raise ValueError(f"pattern must be 'unstructured' for SuperTickets, got {self.pattern}")


class SuperTickets(PruningMethod):
    """Joint channel search and progressive magnitude pruning (see the module docstring)."""

    taxonomy: ClassVar[Taxonomy | None] = Taxonomy(
        ("unstructured", "channel"),
        "during",
        "dense-to-sparse",
        "static",
        note="BN-gamma channel search and progressive global magnitude pruning in one run; "
        "with reactivate=True (official reset_mask) pruned weights return at each event (dynamic)",
    )

    name = "supertickets"
    bench_scenario: ClassVar[str] = "supernet"
    config_class: ClassVar[type[MethodConfig]] = SuperTicketsConfig
    supported_patterns: ClassVar[tuple[type[Pattern], ...]] = (Unstructured,)
    config: SuperTicketsConfig

    def companion_targets(self, model: nn.Module, targets: list[Target]) -> list[Target]:
        """Trace the channel groups; mask the searched groups' BN parameters with the weights.

        Raises:
            ValueError: ``input_shape`` does not fit the model, or the model has no depthwise
                conv whose channels can be searched (with ``penalty != "none"``).
        """
        param = next(model.parameters())
        example = torch.zeros((1, *self.config.input_shape), dtype=param.dtype, device=param.device)
        try:
            groups = channel_groups(model, example)
        except ValueError as err:
            raise ValueError(f"input_shape {self.config.input_shape} does not fit: {err}") from err
        found = searched_groups(model, groups, example) if self.config.penalty != "none" else []
        if self.config.penalty != "none" and not found:
            raise ValueError(
                "input_shape: the model has no searchable op (a prunable channel group with a "
                "depthwise conv followed by BatchNorm); use penalty='none' to prune weights only"
            )
        self._groups, self._searched = groups, found
        self._weights = [t.name for t in targets]
        known = set(self._weights)
        extra = []
        for group in found:
            for s in group.group.members("bias", "norm_weight", "norm_bias"):
                if s.param not in known:
                    known.add(s.param)
                    module_name, _, param_name = s.param.rpartition(".")
                    extra.append(Target(s.param, module_name, param_name, Channel()))
        return extra

    def init_masks(self) -> None:
        """No mask yet (dense start); caches the γ and the FLOPs-aware penalties."""
        params = dict(self.model.named_parameters())
        kind = "flops" if self.config.penalty == "none" else self.config.penalty
        self.penalties = penalties(self._searched, kind, self.config.penalty_normalizer)
        self._gammas = [(params[g.gamma], self.penalties[g.name]) for g in self._searched]
        self.history: list[dict[str, Any]] = []
        self.last_selection: dict[str, torch.Tensor] | None = None

    @property
    def searched(self) -> list[SearchedGroup]:
        """The searched ops' channel groups."""
        return list(self._searched)

    @property
    def normalizer(self) -> float:
        """The ``c_i`` normaliser in use (pass it on to a method on the shrunk model)."""
        from sparse_supertickets.penalty import channel_normalizer

        given = self.config.penalty_normalizer
        return given if given is not None else channel_normalizer(self._searched)

    def rho(self) -> float:
        """ρ at the current step."""
        c = self.config
        return rho_at(self.step, c.rho, c.rho_free_steps, c.rho_warmup_steps)

    def regularization(self) -> torch.Tensor:
        """``ρ(t) Σ_i c_i |γ_i|`` (0 with ``penalty="none"``)."""
        rho = self.rho()
        if self.config.penalty == "none" or rho == 0 or not self._gammas:
            return torch.zeros(())
        return rho * sum(c * gamma.abs().sum() for gamma, c in self._gammas)

    def on_after_optimizer_step(self) -> None:
        """Channel check every ``channel_every`` steps, then the pruning event if one is due."""
        every = self.config.channel_every
        if every is not None and self.step % every == 0 and self.config.penalty != "none":
            self.mask_channels()
        if self.step <= self.config.total_steps:
            ratio = prune_ratio(
                self.step,
                self.config.prune_interval,
                self.config.sparsity,
                self.config.ratio_increment,
            )
            if ratio is not None:
                self.prune_weights(ratio)

    # ------------------------------------------------------------------ the two mechanisms
    def channel_keeps(self) -> dict[str, torch.Tensor]:
        """Channels alive per searched group (their γ mask), by group name."""
        return self.channel_keeps_from(self.masks.masks())

    def channel_keeps_from(self, masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`channel_keeps` read from a copy of the masks (e.g. taken before `finalize`)."""
        out = {}
        for g in self._searched:
            s = next(s for s in g.group.members("norm_weight") if s.param == g.gamma)
            keep = torch.zeros(g.group.size, dtype=torch.bool)
            rows = masks[g.gamma].cpu()[torch.tensor(s.index)]
            keep[torch.tensor(s.channel)[rows]] = True
            out[g.name] = keep
        return out

    @torch.no_grad()
    def mask_channels(self) -> dict[str, torch.Tensor]:
        """Mask the atomic blocks with ``|γ| <= channel_threshold`` (whole groups; only shrinks).

        Returns:
            The channel keep-masks by searched group name.
        """
        params = dict(self.model.named_parameters())
        keeps = {}
        for g, (name, alive) in zip(self._searched, self.channel_keeps().items(), strict=True):
            s = next(s for s in g.group.members("norm_weight") if s.param == g.gamma)
            gamma = params[g.gamma].detach().abs().cpu()[torch.tensor(s.index)]
            keep = alive.clone()
            keep[torch.tensor(s.channel)] &= gamma > self.config.channel_threshold
            keeps[name] = keep
        current = self.masks.masks()
        ones = {n: torch.ones_like(m) for n, m in current.items()}
        new = group_masks(self._groups, keeps, ones)
        self.masks.update_all({n: m & current[n] for n, m in new.items()})
        return keeps

    def alive(self) -> dict[str, torch.Tensor]:
        """Entries of the prunable weights outside masked channels."""
        current = self.masks.masks()
        ones = {n: torch.ones_like(m) for n, m in current.items()}
        channel = group_masks(self._groups, self.channel_keeps(), ones)
        return {n: channel.get(n, ones[n]) for n in self._weights}

    @torch.no_grad()
    def prune_weights(self, ratio: float) -> dict[str, torch.Tensor]:
        """One global magnitude selection at prune ratio ``ratio`` over the alive weights.

        Applied to the masks, unless reactivation is on and this is not the final event (then
        only recorded: the masks are reset and the weights keep their values).

        Returns:
            The selected keep-masks of the Conv / Linear weights.
        """
        alive = self.alive()
        current = self.masks.masks()
        params = self.masks.params()
        scores = {}
        for name in self._weights:
            score = params[name].detach().abs().clone()
            excluded = ~alive[name] if self.config.reactivate else ~current[name]
            score[excluded] = float("-inf")
            scores[name] = score
        total = sum(s.numel() for s in scores.values())
        n_alive = sum(int(a.sum()) for a in alive.values())
        kept = keep_count(n_alive, 1.0 - ratio)
        selection = select_global(scores, kept / total, min_per_tensor=1)
        final = self.step >= self.final_event_step
        applied = final or not self.config.reactivate
        if applied:
            self.masks.update_all(selection)
        self.last_selection = {n: m.clone() for n, m in selection.items()}
        realised = 1.0 - sum(int(m.sum()) for m in selection.values()) / n_alive
        self.history.append(
            {"step": self.step, "ratio": ratio, "sparsity": realised, "applied": applied}
        )
        return selection

    @property
    def final_event_step(self) -> int:
        """The step of the final pruning event."""
        c = self.config
        return (c.total_steps // c.prune_interval) * c.prune_interval

    def weight_sparsity(self) -> float:
        """Masked fraction of the alive Conv / Linear weights (the ticket's sparsity)."""
        alive = self.alive()
        current = self.masks.masks()
        n_alive = sum(int(a.sum()) for a in alive.values())
        kept = sum(int((current[n] & alive[n]).sum()) for n in self._weights)
        return 1.0 - kept / max(n_alive, 1)

    def events(self) -> list[tuple[int, float]]:
        """The run's ``(step, ratio)`` pruning events."""
        c = self.config
        return prune_events(c.total_steps, c.prune_interval, c.sparsity, c.ratio_increment)

    def schedule_gap(self) -> str | None:
        """Pending while the final pruning event has not happened."""
        if self.final_event_step and self.step < self.final_event_step:
            final = self.final_event_step
            return f"SuperTickets: final pruning event at step {final}, now {self.step}"
        return None

    def extra_state(self) -> dict[str, Any]:  # noqa: D102
        return {"history": [dict(h) for h in self.history]}

    def load_extra_state(self, state: dict[str, Any]) -> None:  # noqa: D102
        self.history = [dict(h) for h in state.get("history", [])]

    def finalize(self) -> nn.Module:
        """Last channel check (official: shrink at the last epoch), then bake the masks."""
        if self.config.penalty != "none":
            self.mask_channels()
        return super().finalize()

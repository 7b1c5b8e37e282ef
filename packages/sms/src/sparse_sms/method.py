"""The per-phase pruning of Sparse Model Soups as a `sparsecore.PruningMethod`.

Paper: Max Zimmer, Christoph Spiegel, Sebastian Pokutta, "Sparse Model Soups: A Recipe for
Improved Pruning via Model Averaging", ICLR 2024, arXiv 2306.16788. Official code:
https://github.com/ZIB-IOL/SMS.

`SparseModelSoup` is the mask side of the algorithm: it prunes by magnitude, phase by
phase, and keeps the mask fixed while an ingredient retrains. The orchestration (phases,
ingredients, merging) lives in `sparse_sms.runner`. Choices, checked against the official
code (``strategies/strategies.py``):

* **Fraction per phase.** ``q = 1 - (1 - s)^(1/P)`` of the *currently active* weights is removed
  in every phase (``IMP.at_train_end``: ``prune_per_phase``), so phase ``p`` ends at sparsity
  ``1 - (1 - q)^p``. The official code calls ``torch.nn.utils.prune.global_unstructured`` with
  ``amount=q`` on an already pruned model; torch then removes ``round(q * n_active)`` entries of
  the active ones. We remove exactly that count (Python ``round``), so the final sparsity equals
  ``1 - (1 - q)^P`` up to this per-phase rounding (at most ``P / 2`` weights).
* **Scores.** ``|w|`` (``L1Unstructured``) ranked over all targets together (``selector="global"``,
  the default), per tensor (``"uniform"``: every tensor loses ``round(q * n_active)`` of its own
  active weights, as ``prune.l1_unstructured`` does) or at random (``"random"``,
  ``RandomUnstructured``, drawn from the method's seeded generator). Masks only shrink: entries
  pruned in earlier phases are never regrown. Ties: lower flat index kept first
  (`sparsecore.select`).
* **Targets.** The official code prunes the ``weight`` of every module that has one except
  ``BatchNorm2d`` (so Linear and Conv layers, classifier included). sparsecore's default targets
  are exactly the Linear/Conv weights; LayerNorm/Embedding weights (pruned by the official code
  in transformer runs) can be added through ``targets``. Hugging Face ``Conv1D`` weights (GPT-2)
  are default targets too; selection uses the per-target, stored-layout pattern
  (``masks.targets[name].pattern``), which only matters for structured patterns.
* **Fixed masks while retraining.** ``setup(model, optimizer, masks=shared)`` installs a given
  mask without pruning: every ingredient of a phase gets the *same* mask object computed once on
  the previous soup. The hard-mask hooks zero gradients, momentum and weights at pruned entries
  (the official ``prune_momentum`` / ``enforce_prunedness``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from sparse_sms.config import SMSConfig
from sparsecore import MethodConfig, Pattern, PruningMethod
from sparsecore.layouts import common_pattern
from sparsecore.select import select, select_global
from sparsecore.targets import Target
from sparsecore.taxonomy import Taxonomy

__all__ = ["SparseModelSoup", "proportional_removals", "removal_count"]


def removal_count(active: int, fraction: float) -> int:
    """Entries removed from ``active`` ones by one phase: ``round(fraction * active)``.

    This is torch's ``_compute_nparams_toprune`` for a float amount, which the official code's
    ``prune.global_unstructured(amount=q)`` uses on the active entries.
    """
    return min(active, max(0, round(fraction * active)))


def proportional_removals(active: Mapping[str, int], remove: int) -> dict[str, int]:
    """Split ``remove`` removals over tensors in proportion to their ``active`` entries.

    Each tensor gets ``floor(remove * n_i / N)``, and the remaining removals go to the largest
    fractional parts (ties: the earlier tensor), so the counts sum to exactly ``remove``.
    """
    total = sum(active.values())
    if remove <= 0 or total == 0:
        return {n: 0 for n in active}
    remove = min(remove, total)
    base = {n: remove * a // total for n, a in active.items()}
    order = sorted(active, key=lambda n: -((remove * active[n]) % total))
    left = remove - sum(base.values())
    for name in order[:left]:
        base[name] += 1
    return base


class SparseModelSoup(PruningMethod):
    """Iterative global magnitude pruning in ``P`` phases, with masks shared by the ingredients.

    In a plain training loop it behaves like one-shot magnitude pruning to the sparsity of
    ``phase`` (the goal sparsity by default) reached through ``phase`` successive prunings of
    ``q`` of the active weights. `next_phase` prunes one more phase. The complete method
    (retraining ``m`` ingredients per phase and merging them) is `sparse_sms.run`.

    Example:
        >>> method = SparseModelSoup(sparsity=0.9, n_phases=3, phase=1).setup(model, optimizer)
        >>> # ... retrain ...; then method.next_phase(), retrain, ...
    """

    taxonomy: ClassVar[Taxonomy | None] = Taxonomy(
        ("unstructured", "n:m", "channel"),
        "iterative",
        "dense-to-sparse",
        "static",
        note="prune-retrain phases whose ingredients are averaged",
    )

    name = "sms"
    config_class: ClassVar[type[MethodConfig]] = SMSConfig
    procedure: ClassVar[str | None] = (
        "phases of pruning, m retrained ingredients per phase and their soup: sparse_sms.run"
    )
    config: SMSConfig

    @classmethod
    def bench_procedure(cls, sparsity: float, seed: int, args: Any) -> tuple[float, dict]:
        """`sparse bench`: the whole procedure at bench scale (`sparse_sms.bench`)."""
        from sparse_sms.bench import bench_procedure

        return bench_procedure(sparsity, seed, args)

    def __init__(self, config: MethodConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.phases_done = 0
        self._start_masks: dict[str, torch.Tensor] | None = None
        self._phases_done_arg: int | None = None

    # ------------------------------------------------------------------ lifecycle
    def setup(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        masks: Mapping[str, torch.Tensor] | None = None,
        phases_done: int | None = None,
    ) -> SparseModelSoup:
        """Add masks to ``model`` and hook into ``optimizer``.

        Args:
            model: The model.
            optimizer: The optimizer that trains it (optional: pruning a soup needs none).
            masks: A fixed keep-mask per target name (bool, the parameter's shape). Given: the
                masks are installed as they are and nothing is pruned (an ingredient retrains on
                the phase's shared mask). ``None``: the dense model is pruned through phases
                ``1..phase``.
            phases_done: How many phases ``masks`` already went through (for `next_phase`
                and the phase count in `state_dict`); default ``phase`` or 0.

        Returns:
            ``self``.
        """
        if masks is not None and not isinstance(masks, Mapping):
            raise TypeError(f"masks must be a mapping from target name to tensor, got {masks!r}")
        self._start_masks = None if masks is None else dict(masks)
        if phases_done is not None:
            if isinstance(phases_done, bool) or not isinstance(phases_done, int):
                raise TypeError(f"phases_done must be an integer, got {phases_done!r}")
            if not 0 <= phases_done <= self.config.n_phases:
                raise ValueError(f"phases_done must lie in [0, n_phases], got {phases_done}")
        self._phases_done_arg = phases_done
        try:
            super().setup(model, optimizer)
        finally:
            self._start_masks = None
        return self

    def validate(self, model: nn.Module, targets: list[Target]) -> None:  # noqa: D102
        if self._start_masks is None:
            return
        params = dict(model.named_parameters())
        names = {t.name for t in targets}
        unknown = sorted(set(self._start_masks) - names)
        missing = sorted(names - set(self._start_masks))
        if unknown or missing:
            raise ValueError(
                f"masks: names do not match the targets (missing {missing[:3]}, "
                f"unknown {unknown[:3]})"
            )
        for name, mask in self._start_masks.items():
            if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
                raise TypeError(f"masks: {name!r} must be a bool tensor")
            if mask.shape != params[name].shape:
                raise ValueError(
                    f"masks: {name!r} has shape {tuple(mask.shape)}, the parameter "
                    f"{tuple(params[name].shape)}"
                )

    def init_masks(self) -> None:  # noqa: D102
        if self._start_masks is not None:
            self.masks.update_all(
                {n: m.to(self.masks.mask(n).device) for n, m in self._start_masks.items()}
            )
            done = self._phases_done_arg
            self.phases_done = self.config.target_phase if done is None else done
            return
        self.phases_done = 0
        for _ in range(self.config.target_phase):
            self.next_phase()

    # ------------------------------------------------------------------ pruning
    def next_phase(self) -> dict[str, int]:
        """Prune one more phase: remove ``round(q * active)`` weights by the selector.

        Returns:
            The new nnz per tensor.

        Raises:
            RuntimeError: All ``n_phases`` phases are done already.
        """
        if self.phases_done >= self.config.n_phases:
            raise RuntimeError(
                f"{type(self).__name__}: all n_phases={self.config.n_phases} phases are done"
            )
        self.prune_fraction_of_active(self.config.prune_fraction)
        self.phases_done += 1
        return self.masks.nnz()

    @torch.no_grad()
    def scores(self) -> dict[str, torch.Tensor]:
        """Pruning scores per target: ``|w|``, or uniform noise for ``selector="random"``."""
        params = self.masks.params()
        if self.config.selector == "random":
            return {
                n: torch.rand(p.shape, generator=self.generator).to(p.device)
                for n, p in params.items()
            }
        return {n: p.detach().abs() for n, p in params.items()}

    @torch.no_grad()
    def prune_fraction_of_active(self, fraction: float) -> None:
        """Remove ``round(fraction * active)`` of the active entries (per tensor or globally)."""
        scores = {
            n: torch.where(self.masks.mask(n), s.to(torch.float64), -math.inf)
            for n, s in self.scores().items()
        }
        nnz = self.masks.nnz()
        if self.config.selector == "uniform":
            keeps = {}
            for name, score in scores.items():
                keep = nnz[name] - removal_count(nnz[name], fraction)
                keeps[name] = self._keep_top(name, score, keep)
        else:
            active = sum(nnz.values())
            keep = active - removal_count(active, fraction)
            total = sum(s.numel() for s in scores.values())
            if keep == 0:
                keeps = {n: torch.zeros_like(s, dtype=torch.bool) for n, s in scores.items()}
            else:
                keeps = select_global(scores, keep / total, self._global_pattern())
        self.masks.update_all(keeps)

    @torch.no_grad()
    def prune_to(self, sparsity: float) -> None:
        """Prune (masks only shrink) to a global ``sparsity`` by the selector's scores.

        Used by the pruning-during-training variant, whose targets come from a schedule. The
        global count is exact for every selector: ``"uniform"`` splits the removals over the
        tensors in proportion to their active entries (largest remainders, ties to the earlier
        tensor), so each tensor loses the same fraction up to one entry.
        """
        nnz = self.masks.nnz()
        total = sum(m.numel() for m in self.masks.masks().values())
        keep = min(sum(nnz.values()), math.floor((1.0 - sparsity) * total + 1e-6))
        if self.config.selector == "uniform":
            removals = proportional_removals(nnz, sum(nnz.values()) - keep)
            scores = {
                n: torch.where(self.masks.mask(n), s.to(torch.float64), -math.inf)
                for n, s in self.scores().items()
            }
            keeps = {n: self._keep_top(n, sc, nnz[n] - removals[n]) for n, sc in scores.items()}
            self.masks.update_all(keeps)
            return
        scores = {
            n: torch.where(self.masks.mask(n), s.to(torch.float64), -math.inf)
            for n, s in self.scores().items()
        }
        if keep == 0:
            keeps = {n: torch.zeros_like(s, dtype=torch.bool) for n, s in scores.items()}
        else:
            keeps = select_global(scores, keep / total, self._global_pattern())
        self.masks.update_all(keeps)

    def _global_pattern(self) -> Pattern:
        targets = self.masks.targets
        return common_pattern({n: t.pattern for n, t in targets.items()}, "SMS global ranking")

    def _keep_top(self, name: str, score: torch.Tensor, keep: int) -> torch.Tensor:
        if keep == 0:
            return torch.zeros_like(score, dtype=torch.bool)
        return select(score, keep / score.numel(), self.masks.targets[name].pattern, name=name)

    # ------------------------------------------------------------------ resume
    def extra_state(self) -> dict[str, Any]:  # noqa: D102
        return {"phases_done": self.phases_done}

    def load_extra_state(self, state: dict[str, Any]) -> None:  # noqa: D102
        self.phases_done = int(state["phases_done"])

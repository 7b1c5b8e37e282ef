"""Lottery tickets: iterative magnitude pruning with rewinding, as a sparsecore method.

Papers:

* Frankle & Carbin, "The Lottery Ticket Hypothesis: Finding Sparse, Trainable Neural Networks",
  ICLR 2019, arXiv 1803.03635.
* Frankle, Dziugaite, Roy & Carbin, "Stabilizing the Lottery Ticket Hypothesis", arXiv 1903.01611,
  and its ICML 2020 version "Linear Mode Connectivity and the Lottery Ticket Hypothesis",
  arXiv 1912.05671.
* Official framework: https://github.com/facebookresearch/open_lth

`LotteryTicket` is sparsecore's `sparsecore.baselines.IMP` (``prune_round``,
``rewind``, ``capture_rewind_point``) with what the papers add: rewinding to step ``k`` *with the
learning-rate schedule position* (a new optimizer, the scheduler advanced ``k`` steps), layers to
ignore, a check that masks only shrink, and the two control branches (same mask with a random
re-initialisation; a random mask at the same sparsity). The level/branch experiment on disk is
`sparse_lth.LotteryExperiment`; instability analysis is in `sparse_lth.instability`.

Implementation choices (checked against OpenLTH at commit ``2ce732f``):

* **Pruning count.** ``n_prune = ceil(fraction * nnz)`` with ``nnz`` counted over every mask,
  ignored layers included (``pruning/sparse_global.py``). OpenLTH then keeps ``|w| > thr`` with
  ``thr = sort(|w_unpruned|)[n_prune]``: the strict comparison also removes the weight *at* the
  threshold, i.e. ``n_prune + 1`` weights (and every tie). We remove exactly ``n_prune`` (ties
  broken by position, sparsecore's rule) so that ``nnz_L = nnz_{L-1} - ceil(f * nnz_{L-1})``
  holds exactly and sparsity after ``L`` levels is ``1 - (1 - f)^L`` up to rounding; the
  difference is one weight per level.
* **Masks only shrink.** Scores of already-pruned weights are ``-inf`` (only the unpruned ones are
  ranked, as OpenLTH's threshold is over ``current_mask == 1``); `prune_round` verifies
  ``new ⊆ old`` and raises if not.
* **Where masks act.** OpenLTH's ``PrunedModel`` multiplies the weights by the mask before every
  forward. sparsecore's "hard" mode masks gradients, optimizer state and weights around every
  optimizer step; pruned weights start at zero and stay exactly zero, which is equivalent for
  the forward pass and keeps the model plain.
* **Rewinding.** `rewind` loads ``θ_k`` (weights and buffers), re-applies the masks, sets
  ``step = k``; with ``optimizer``/``scheduler`` it checks they are new and advances the
  scheduler ``k`` times, as OpenLTH's ``training/train.py`` does
  (``for _ in range(start_step.iteration): lr_schedule.step()``), so the first retraining step
  uses ``schedule(k)``.
* **Rewind point.** With ``rewind_step=k > 0`` the point is captured automatically after step
  ``k`` of the run the method is attached to (IMP). OpenLTH gets ``θ_k`` from a separate
  "pretrain" run of ``k`` steps with the same hyperparameters; the experiment driver does that.
* **Random re-init branch** (``lottery/branch/randomly_reinitialize.py``): same mask, weights of a
  fresh initialisation, trained from step ``k`` by default (``start_at_step_zero=False``).
* **Random pruning branch** (``lottery/branch/randomly_prune.py``): the default strategy
  ``"layerwise"`` shuffles each tensor's mask (same per-layer counts); ``"global"`` shuffles over
  all tensors together. OpenLTH starts that branch from the *saved* level weights, which are
  ``θ_k`` already multiplied by the ticket's mask, so weights outside the ticket start at zero;
  we start from the unmasked ``θ_k`` (a random subnetwork of the same initial weights), the
  control the paper describes.
"""

from __future__ import annotations

import fnmatch
import math
import warnings
from collections.abc import Mapping
from typing import ClassVar

import torch
from torch import nn

from sparse_lth.config import LotteryTicketConfig
from sparsecore.baselines import IMP, prune_by_scores
from sparsecore.method import MethodConfig
from sparsecore.patterns import Pattern, Unstructured
from sparsecore.select import drop_lowest, keep_count
from sparsecore.targets import Target
from sparsecore.taxonomy import Taxonomy

__all__ = ["RANDOM_PRUNE_STRATEGIES", "LotteryTicket", "advance_scheduler", "shuffled_masks"]

#: Strategies of the random-pruning control branch.
RANDOM_PRUNE_STRATEGIES = ("layerwise", "global")


def advance_scheduler(scheduler: torch.optim.lr_scheduler.LRScheduler, steps: int) -> None:
    """Step ``scheduler`` ``steps`` times without an optimizer step (OpenLTH's rewind).

    PyTorch warns when a scheduler steps before its optimizer; that warning is expected here and
    silenced.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(steps):
            scheduler.step()


def shuffled_masks(
    masks: Mapping[str, torch.Tensor], strategy: str, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Random masks with the same counts as ``masks`` (the random-pruning control).

    Args:
        masks: Boolean masks by name.
        strategy: ``"layerwise"`` (each tensor keeps its own count, OpenLTH's default) or
            ``"global"`` (the total count is kept, spread at random over all tensors).
        generator: Source of randomness (CPU generator).

    Returns:
        New boolean masks, same shapes and devices.
    """
    if strategy not in RANDOM_PRUNE_STRATEGIES:
        raise ValueError(f"strategy must be one of {RANDOM_PRUNE_STRATEGIES}, got {strategy!r}")
    if strategy == "layerwise":
        out = {}
        for name, mask in masks.items():
            flat = mask.reshape(-1).cpu()
            perm = torch.randperm(flat.numel(), generator=generator)
            out[name] = flat[perm].reshape(mask.shape).to(mask.device)
        return out
    flat = torch.cat([m.reshape(-1).cpu() for m in masks.values()])
    flat = flat[torch.randperm(flat.numel(), generator=generator)]
    out, offset = {}, 0
    for name, mask in masks.items():
        out[name] = flat[offset : offset + mask.numel()].reshape(mask.shape).to(mask.device)
        offset += mask.numel()
    return out


class LotteryTicket(IMP):
    """Iterative magnitude pruning with rewinding (Frankle et al. 2019/2020).

    Use in a plain loop, one level at a time:

    ```python
    lt = LotteryTicket(fraction=0.2, rewind_step=k).setup(model, optimizer)
    train(model, optimizer, scheduler, 0, T)          # θ_k is captured after step k
    for level in range(1, levels + 1):
        lt.prune_round()                                # remove ceil(f * nnz) by |w|
        optimizer, scheduler = make_opt(model), make_sched(...)
        lt.rewind(optimizer, scheduler)                 # θ_k, masks, schedule(k)
        train(model, optimizer, scheduler, k, T)
    ```

    Attributes:
        round: Completed pruning levels.
        rewind_state: The rewind point ``θ_k`` (weights and buffers, no masks), once known.
    """

    taxonomy: ClassVar[Taxonomy | None] = Taxonomy(
        ("unstructured",), "iterative", "dense-to-sparse", "static"
    )

    name = "lth"
    config_class: ClassVar[type[MethodConfig]] = LotteryTicketConfig
    supported_patterns: ClassVar[tuple[type[Pattern], ...]] = (Unstructured,)
    config: LotteryTicketConfig

    # ------------------------------------------------------------------ setup
    def validate(self, model: nn.Module, targets: list[Target]) -> None:  # noqa: D102
        names = [t.name for t in targets]
        for spec in self.config.layers_to_ignore:
            if not any(fnmatch.fnmatchcase(n, spec) for n in names):
                raise ValueError(
                    f"layers_to_ignore: {spec!r} matches no pruning target (targets: {names})"
                )
        if all(self._is_ignored(n) for n in names):
            raise ValueError("layers_to_ignore: every target is ignored, nothing left to prune")

    def _is_ignored(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, s) for s in self.config.layers_to_ignore)

    @property
    def ignored(self) -> list[str]:
        """Targets that keep a mask of ones forever (``layers_to_ignore``)."""
        return [n for n in self.masks.names if self._is_ignored(n)]

    def init_masks(self) -> None:  # noqa: D102
        # θ_0 is captured before the initial pruning, so that rewinding (and the random-pruning
        # control, which unmasks other entries) restores the unpruned initial weights
        if self.config.rewind_step == 0:
            self.capture_rewind_point()
        if self.config.sparsity > 0 and self.config.scope == "layer":
            for name, mask in self.masks.masks().items():
                if not self._is_ignored(name):
                    self._prune_layer(
                        name, mask.numel() - keep_count(mask.numel(), self.config.density)
                    )
        elif self.config.sparsity > 0:
            total = sum(m.numel() for m in self.masks.masks().values())
            self._prune_to_keep(total - keep_count(total, self.config.density))

    # ------------------------------------------------------------------ pruning
    def _scores(self) -> dict[str, torch.Tensor]:
        scores = {}
        for name, param in self.masks.params().items():
            score = param.detach().abs().to(torch.float64)
            scores[name] = torch.full_like(score, math.inf) if self._is_ignored(name) else score
        return scores

    @torch.no_grad()
    def _prune_to_keep(self, remove: int) -> None:
        """Remove ``remove`` unpruned, non-ignored weights by one global ranking."""
        nnz = self.masks.nnz()
        prunable = sum(v for n, v in nnz.items() if not self._is_ignored(n))
        remove = min(remove, prunable)
        if remove <= 0:
            return
        total = sum(m.numel() for m in self.masks.masks().values())
        kept = sum(nnz.values()) - remove
        prune_by_scores(self, self._scores(), 1.0 - kept / total, "global", True)

    def prune_round(self) -> dict[str, int]:
        """One level: remove ``ceil(fraction * nnz)`` of the remaining weights by ``|w|``.

        ``nnz`` counts every mask (ignored layers included, as OpenLTH does); the weights are
        removed from the non-ignored tensors only. With ``scope="layer"`` every non-ignored
        tensor loses ``ceil(fraction * its nnz)`` instead.

        Returns:
            The new nnz per tensor.

        Raises:
            RuntimeError: If a mask grew (it cannot, by construction; this is a safety net).
        """
        before = {n: m.clone() for n, m in self.masks.masks().items()}
        if self.config.scope == "layer":
            for name, count in self.masks.nnz().items():
                if self._is_ignored(name) or count == 0:
                    continue
                self._prune_layer(name, math.ceil(self.config.fraction * count))
        else:
            remaining = sum(self.masks.nnz().values())
            self._prune_to_keep(math.ceil(self.config.fraction * remaining))
        for name, mask in self.masks.masks().items():
            if (mask & ~before[name]).any():
                raise RuntimeError(f"mask of {name!r} grew during pruning")
        self.round += 1
        return self.masks.nnz()

    @torch.no_grad()
    def _prune_layer(self, name: str, remove: int) -> None:
        mask = self.masks.mask(name)
        remove = min(remove, int(mask.sum()))
        self.masks.update(name, drop_lowest(self.masks.param(name).detach().abs(), mask, remove))

    # ------------------------------------------------------------------ rewinding
    def rewind(
        self,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    ) -> None:
        """Rewind to ``θ_k`` and, if given, to the schedule position ``k``.

        Loads the rewind point's weights and buffers, keeps the masks and re-applies them, sets
        ``step = k``. A given ``optimizer`` must be newly built (no state): the method attaches to
        it. A given ``scheduler`` must be newly built on that optimizer: it is advanced ``k``
        steps, so the first retraining step uses the learning rate of step ``k``.

        Raises:
            RuntimeError: No rewind point yet.
            ValueError: A used optimizer or scheduler, or a scheduler of another optimizer.
        """
        if optimizer is not None:
            if not isinstance(optimizer, torch.optim.Optimizer):
                raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {optimizer!r}")
            if optimizer.state:
                raise ValueError("optimizer: rewinding needs a newly built optimizer (no state)")
        if scheduler is not None:
            if optimizer is not None and scheduler.optimizer is not optimizer:
                raise ValueError("scheduler: must be built on the optimizer passed to rewind")
            if scheduler.last_epoch != 0:
                raise ValueError(
                    f"scheduler: must be newly built (last_epoch 0), got {scheduler.last_epoch}"
                )
        super().rewind()
        if optimizer is not None:
            self.attach(optimizer)
        if scheduler is not None:
            advance_scheduler(scheduler, self.config.rewind_step)

    # ------------------------------------------------------------------ control branches
    @torch.no_grad()
    def randomly_reinitialize(self, fresh: nn.Module | Mapping[str, torch.Tensor]) -> None:
        """Control branch: keep the masks, replace the weights by a new initialisation.

        Args:
            fresh: A newly initialised model of the same architecture, or its ``state_dict``.
                Its weights and buffers (masks excluded) are loaded, then the masks re-applied;
                ``step`` is set to ``rewind_step`` (OpenLTH trains the branch from step ``k``).
        """
        self.masks  # noqa: B018 - a RuntimeError before setup, not an AssertionError
        assert self.model is not None
        state = fresh.state_dict() if isinstance(fresh, nn.Module) else dict(fresh)
        mask_keys = self.masks.state_keys()
        state = {k: v for k, v in state.items() if k not in mask_keys}
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        missing = [k for k in missing if k not in mask_keys]
        if missing or unexpected:
            raise ValueError(
                f"fresh: does not match the model (missing {missing[:3]}, "
                f"unexpected {unexpected[:3]})"
            )
        self.masks.apply()
        self.step = self.config.rewind_step

    @torch.no_grad()
    def randomly_prune(self, strategy: str = "layerwise") -> None:
        """Control branch: replace the masks by random ones with the same counts.

        Uses the method's seeded generator. Ignored layers keep their masks of ones. Rewind
        afterwards (the weights of newly unmasked entries come from ``θ_k``).

        Args:
            strategy: ``"layerwise"`` (same nnz per tensor) or ``"global"`` (same total nnz).
        """
        masks = {n: m for n, m in self.masks.masks().items() if not self._is_ignored(n)}
        self.masks.update_all(shuffled_masks(masks, strategy, self.generator))

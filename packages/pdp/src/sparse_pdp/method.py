"""PDP: parameter-free differentiable pruning on sparsecore's ``soft`` mask mode.

Paper: Minsik Cho, Saurabh Adya, Devang Naik, "PDP: Parameter-free Differentiable Pruning is All
You Need", NeurIPS 2023, arXiv 2305.11203. Official code: none published (no link exists);
checked against the paper's abstract and method summary and two third-party re-implementations:
the PQuant
``PDP`` layer (Keras 3 / torch) and the "neural-pruning-impl" README, which summarises the paper's
Appendix D. Labels below: [paper] from the paper text, [3rd-party] from those re-implementations,
[choice] decided here.

Algorithm, per optimizer step (``self.step`` counts completed steps):

1. Dense warm-up while ``step < begin_step`` (the soft mask is identically 1) [paper].
2. After ``begin_step`` steps, per-layer targets are fixed from ONE global magnitude ranking over
   all target tensors that hits the overall sparsity exactly [paper/3rd-party: PQuant ranks all
   weights globally after pre-training and sets each layer's ``r_l`` to its fraction below the
   global threshold]. Targets are stored as exact kept-unit counts ``k_l`` [choice: exact
   counts, so the final model has exactly the requested sparsity].
3. The targets are ramped in: ``r_l(e) = min(1, ε (e − s + 1)) · r_l`` [3rd-party, PQuant and
   the Appendix D summary agree], here in steps (`sparse_pdp.config.ramp_fraction`); the
   pruned count at fraction ``f`` is ``floor(f · (n_l − k_l))``.
4. Forward: ``ŵ = m(w) · w`` with ``m(w) = σ((w² − t²)/τ)`` [paper: ``e^{w²/τ} / (e^{w²/τ} +
   e^{t²/τ})``, the same function], ``t = (W_h + W_t)/2`` midway between the smallest kept and the
   largest pruned magnitude of the layer at the current ramped target [paper/3rd-party]. The mask
   is recomputed from the current weights at every forward (as in PQuant's layer), so it is always
   consistent with the weights, also after ``load_state_dict``.
5. ``t`` is a stop-gradient constant [choice: the paper's gradient analysis treats ``t`` as given;
   PQuant lets autograd through ``top_k``, which only touches the two boundary weights]. So
   ``∂ŵ/∂w = m + 2 w² m (1 − m)/τ``: every weight, pruned or not, gets a gradient, and weights
   near ``t`` get the paper's extra push.
6. Final hard mask ``m >= 0.5``, i.e. ``|w| > t`` [paper], implemented as the exact top-``k_l``
   by magnitude (ties: lower index first) [choice: identical for distinct magnitudes; exact even
   with ties]. `PDP.finalize` writes it (at the FULL target, whatever the ramp state) into
   the bool buffers and bakes ``W ⊙ mask``; `PDP.harden` does the same but keeps training:
   optional hard-mask fine-tuning [paper: "fine-tune or deploy"; PQuant's ``pre_finetune``].
7. The bool buffers hold the hard decision (exact top-k at the ramped target), refreshed at the
   start of every ramp stage, i.e. every ``update_every`` steps from ``begin_step`` [choice: so
   ``masks.sparsity()`` reports the ramp without a full sort at every step; the forward does
   not read them until `PDP.harden`, and `PDP.finalize` recomputes them].

Variants [paper: PDP "can be applied to N:M and channel pruning by adapting how t is
determined"]:

* N:M: ``t`` per group of ``m`` consecutive weights along the pattern's ``dim``, midway between
  the ``n``-th and ``(n+1)``-th largest ``|w|``; every group keeps exactly ``n``. The ramp is
  applied to the per-group pruned count: ``m − floor(f (m − n))`` kept per group (1:4 goes
  4:4 → 3:4 → 2:4 → 1:4) [choice: the same ramp formula as unstructured; the paper's N:M ramp
  is not documented in the sources we could read].
* channel: units are output slices (``Channel(dim)``), their magnitude is the L2 norm
  [3rd-party: PQuant's structured variant], ``m_c = σ((‖w_c‖² − t²)/τ)`` broadcast over the
  channel. ``sparsity`` is then the fraction of channels removed (one global ranking by norm, or
  per layer with ``distribution="uniform"``).

Layouts [choice]: the pattern is written in ``nn.Linear``'s ``(out, in)`` convention; every
computation uses the per-target, stored-layout pattern ``masks.targets[name].pattern``
(`PDP.pattern`), which sparsecore transposes for Hugging Face ``Conv1D`` weights (GPT-2,
stored ``(in, out)``): N:M groups still run along the inputs and channels are still output
features there.

Hyperparameters: τ = 1e-4 by default [3rd-party: the Appendix D summary; PQuant's default is
1e-5]; τ is absolute (in squared-weight units), as in the paper, so it interacts with the
weight scale: near ``t`` the gradient is amplified by about ``t²/(2τ)``. ``s`` = 16 of 100 epochs
and ε = 0.015 per epoch in the paper's CIFAR/ImageNet runs [3rd-party]; `PDP.for_epochs`
converts epoch schedules.

``relative_tau`` [choice, not in the paper]: the temperature becomes ``τ · t²`` per threshold
(per layer, per N:M group, per channel-norm ranking), i.e. ``m = σ(((w/t)² − 1)/τ)``, a function
of ``|w|/t`` only. Reason: on our CPU-scale models (``t`` ≈ 0.05–0.1) the paper's absolute
τ = 1e-4 amplified the gradient of weights near ``t`` 20–50× under SGD (lr 0.05) and training
diverged (ConvBase 90% unstructured: 16% test accuracy, weights up to |w| ≈ 25); a relative τ
keeps the push the same at any weight scale. The benchmark uses ``relative_tau=True,
tau=0.03`` (picked on a held-out split of the training set from {0.03, 0.1, 0.3}).

``harden_step`` [choice, exposing the paper's "fine-tune" option]: after this many steps
`PDP.harden` runs automatically, so the last epochs fine-tune with the final hard mask.

Layer-collapse guard [choice]: with the global ranking a layer could lose every unit; it then
takes over the weakest kept unit elsewhere (total unchanged). Not in the sources.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from sparse_pdp import functional as F
from sparse_pdp.config import PDPConfig
from sparsecore import NM, Channel, MethodConfig, Pattern, PruningMethod, Target, Unstructured
from sparsecore.masks import MaskMode
from sparsecore.taxonomy import Taxonomy

__all__ = ["PDP"]


class PDP(PruningMethod):
    """Parameter-free Differentiable Pruning (Cho et al., NeurIPS 2023).

    Example:
        ```python
        pdp = PDP(sparsity=0.9, begin_step=500, end_step=3000).setup(model, optimizer)
        for x, y in loader:
            loss = loss_fn(model(x), y)
            optimizer.zero_grad(); loss.backward(); optimizer.step()
        model = pdp.finalize()   # hard mask m >= 0.5, exactly the target sparsity
        ```

    Args:
        config: A `sparse_pdp.PDPConfig`.
        **overrides: Config fields.
    """

    taxonomy: ClassVar[Taxonomy | None] = Taxonomy(
        ("unstructured", "n:m", "channel"),
        "during",
        "dense-to-sparse",
        "dynamic",
        note="soft masks: a pruned weight can come back until the mask is frozen",
    )

    name = "pdp"
    config_class: ClassVar[type[MethodConfig]] = PDPConfig
    mask_mode: ClassVar[MaskMode] = "soft"
    supported_patterns: ClassVar[tuple[type[Pattern], ...]] = (Unstructured, NM, Channel)
    config: PDPConfig

    def __init__(self, config: MethodConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        #: Kept units per target at the full target (``None`` until ranked).
        self.full_keep: dict[str, int] | None = None
        #: Whether `harden` switched the forward to the hard mask.
        self.hardened = False

    @classmethod
    def bench_config(cls, total_steps: int, sparsity: float | None) -> dict[str, Any]:
        """Config overrides for one ``sparse bench`` run: the paper's schedule, scaled.

        The paper trains 100 epochs: dense warm-up for ``s = 16``, then the per-layer targets
        ramp in over ``1 / ε ≈ 67`` epochs. Starting at step 0 would rank the layers by their
        *initial* magnitudes, which on an MLP gives almost every weight to the first layer.
        """
        return {"begin_step": int(0.16 * total_steps), "end_step": int(0.83 * total_steps)}

    @classmethod
    def for_epochs(
        cls,
        steps_per_epoch: int,
        warmup_epochs: int,
        ramp_epochs: int,
        finetune_from_epoch: int | None = None,
        **kwargs: Any,
    ) -> PDP:
        """A PDP whose schedule is given in epochs (see `PDPConfig.for_epochs`)."""
        return cls(
            PDPConfig.for_epochs(
                steps_per_epoch, warmup_epochs, ramp_epochs, finetune_from_epoch, **kwargs
            )
        )

    # ------------------------------------------------------------------ lifecycle hooks
    def validate(self, model: nn.Module, targets: list[Target]) -> None:  # noqa: D102
        params = dict(model.named_parameters())
        for t in targets:
            pattern = t.pattern
            if isinstance(pattern, Channel) and params[t.name].dim() < 1:
                raise ValueError(f"PDP: channel pattern needs a tensor with a dimension: {t.name}")
            if F.num_units(params[t.name].shape, pattern) < 2:
                raise ValueError(f"PDP: {t.name!r} has fewer than 2 units to rank")

    def init_masks(self) -> None:  # noqa: D102
        if self.config.begin_step == 0:
            self.rank_targets()
            self._write_hard(self.keep_at(0))

    def on_after_optimizer_step(self) -> None:  # noqa: D102
        if self.hardened or self.step < self.config.begin_step:
            return
        if self.full_keep is None:
            self.rank_targets()
        harden_at = self.config.harden_step
        if harden_at is not None and self.step >= harden_at:
            self.harden()
            return
        if (self.step - self.config.begin_step) % self.config.update_every == 0:
            self._write_hard(self.keep_at(self.step))

    def soft_mask(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        """``σ((w² − t²)/τ)`` at the current ramped target (ones during warm-up)."""
        if self.hardened:
            return self.masks.mask(name).to(weight.dtype)
        if self.full_keep is None or self.step < self.config.begin_step:
            return torch.ones((), dtype=weight.dtype, device=weight.device)
        keep = self._keep_one(name, weight.shape, self.config.fraction(self.step))
        cfg = self.config
        return F.soft_mask(weight, self.pattern(name), keep, cfg.tau, cfg.relative_tau)

    def schedule_gap(self) -> str | None:
        """Why the ramp is not complete (``finalize()`` would jump to the full target), or
        ``None`` once the full targets are in force (or after `harden`).
        """
        cfg = self.config
        if self.hardened or self.step >= cfg.ramp_complete_step:
            return None
        return (
            f"PDP: finalize() after {self.step} steps, but the per-layer targets are fully "
            f"ramped in only from step {cfg.ramp_complete_step} (begin_step={cfg.begin_step}, "
            f"end_step={cfg.end_step}): the final hard mask jumps from the ramped "
            f"{cfg.fraction(self.step):.0%} of the target to all of it. Set begin_step and "
            f"end_step to fit the training length"
        )

    # ------------------------------------------------------------------ targets
    def pattern(self, name: str) -> Pattern:
        """The pattern of target ``name`` in its stored layout (transposed for HF ``Conv1D``)."""
        return self.masks.targets[name].pattern

    def rank_targets(self) -> dict[str, int]:
        """Fix the per-layer targets from the current weights (one global ranking).

        Returns:
            Kept units per target at the full target (also stored in `full_keep`).
        """
        params = self.masks.params()
        if isinstance(self.config.pattern, NM):
            self.full_keep = {n: self.pattern(n).n for n in params}  # type: ignore[attr-defined]
        else:
            mags = {n: F.unit_magnitudes(p, self.pattern(n)) for n, p in params.items()}
            self.full_keep = F.allocate_keep(mags, self.config.density, self.config.distribution)
        return dict(self.full_keep)

    def _keep_one(self, name: str, shape: torch.Size, fraction: float) -> int:
        assert self.full_keep is not None
        units = F.num_units(shape, self.pattern(name))
        pruned = math.floor(fraction * (units - self.full_keep[name]) + 1e-9)
        return units - pruned

    def keep_at(self, step: int) -> dict[str, int]:
        """Kept units per target after ``step`` completed steps (per group for N:M)."""
        if self.full_keep is None:
            raise RuntimeError("PDP: targets are not ranked yet (before begin_step)")
        fraction = self.config.fraction(step)
        return {n: self._keep_one(n, p.shape, fraction) for n, p in self.masks.params().items()}

    def layer_sparsities(self) -> dict[str, float]:
        """Per-layer target sparsities ``r_l`` from the global ranking (fraction of entries)."""
        if self.full_keep is None:
            raise RuntimeError("PDP: targets are not ranked yet (before begin_step)")
        return {
            n: 1.0 - float(F.hard_mask(p, self.pattern(n), self.full_keep[n]).float().mean())
            for n, p in self.masks.params().items()
        }

    # ------------------------------------------------------------------ hard masks
    def _write_hard(self, keeps: dict[str, int]) -> None:
        for name, param in self.masks.params().items():
            self.masks.update(name, F.hard_mask(param, self.pattern(name), keeps[name]))

    def final_masks(self) -> dict[str, torch.Tensor]:
        """The final hard masks (``m >= 0.5`` at the full target, exact counts), not applied.

        Ranks the targets first if that has not happened yet (finalize during warm-up).
        """
        if self.hardened:
            return {n: m.clone() for n, m in self.masks.masks().items()}
        full = self.full_keep if self.full_keep is not None else self.rank_targets()
        return {n: F.hard_mask(p, self.pattern(n), full[n]) for n, p in self.masks.params().items()}

    @torch.no_grad()
    def harden(self) -> None:
        """Switch to the final hard mask for fine-tuning (idempotent).

        Writes `final_masks` into the bool buffers, zeroes the pruned weights and their
        optimizer state; from then on the forward is ``W ⊙ mask``, so pruned weights get a zero
        gradient and stay exactly zero (SGD, momentum, Adam, decoupled weight decay).
        """
        if self.hardened:
            return
        self.masks.update_all(self.final_masks())
        for name, param in self.masks.params().items():
            param.masked_fill_(~self.masks.mask(name), 0)  # exactly 0, even where inf
        self.masks.mask_optimizer_state()
        self.hardened = True

    def finalize(self) -> nn.Module:
        """Write the final hard mask (exact target sparsity), bake ``W ⊙ mask``, remove hooks."""
        if not self.hardened:
            self.masks.update_all(self.final_masks())
        return super().finalize()

    # ------------------------------------------------------------------ resume
    def extra_state(self) -> dict[str, Any]:  # noqa: D102
        full = None if self.full_keep is None else dict(self.full_keep)
        return {"full_keep": full, "hardened": self.hardened}

    def load_extra_state(self, state: dict[str, Any]) -> None:  # noqa: D102
        full = state["full_keep"]
        self.full_keep = None if full is None else {str(k): int(v) for k, v in full.items()}
        self.hardened = bool(state["hardened"])

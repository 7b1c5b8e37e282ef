"""HollowNeRF: ADMM sparsification of a trainable saliency grid that gates a hash-grid NeRF.

Paper: Xie, Gherardi, Pan & Huang (Baidu), "HollowNeRF: Pruning
Hashgrid-Based NeRFs with Trainable Collision Mitigation", ICCV 2023, arXiv 2308.10122.
Official code: none found (searched the paper title, arXiv id and authors). The paper's full text
could not be retrieved here either; only its abstract (a trainable 3-D saliency mask guides the
pruning of hash-grid features, optimised with an ADMM pruner; ≈31% of Instant-NGP's parameters
at comparable quality, up to 1 dB higher PSNR at ≈56%). Everything below the abstract level is
[reconstructed] from the project digest and standard ADMM pruning (Zhang et al., "A Systematic
DNN Weight Pruning Framework using ADMM", ECCV 2018, arXiv 1804.03294).

The problem: ``min_{θ, s} L_render(θ, s)  s.t.  ‖s‖₀ ≤ k`` over the saliency values ``s``, split
with ``z = s`` and solved in scaled form:

1. θ/s step: the user's optimizer minimises ``L_render + (ρ/2)‖s − z + u‖²``
   (:meth:`HollowNeRF.regularization`) for ``admm_every`` steps;
2. z step: ``z = Π_k(s + u)``, the Euclidean projection onto ``{‖z‖₀ ≤ k}``: keep the ``k``
   entries of largest magnitude (ties: lower flat index, :func:`sparsecore.topk_mask`), zero the
   rest (:func:`project_topk`);
3. dual step: ``u ← u + s − z``; then ``ρ ← ρ · rho_growth``.

At ``prune_step`` the masks are set to ``supp(Π_k(s + u))`` and stay fixed (hard mode: the pruned
saliency values are exactly zero and their gradients/optimizer state are masked), so regions with
``s(x) = 0`` skip their hash lookups for the rest of training and at inference.

Choices [reconstructed]:

* ``ρ`` grows geometrically (default ×1.3 per z/u update), as in ADMM pruning practice, so that
  ``s`` is pulled onto a ``k``-sparse point before the hard prune.
* No box constraint by default (``clamp=False``): ``s`` is a free real "gate" and the projection
  keeps the ``k`` largest ``|s + u|``. We first kept ``s`` in ``[0, 1]`` (the natural range of a
  saliency) but the box fights the scaled dual variable: a pruned entry must be able to move to
  ``z - u < 0`` for ``s + u`` to leave the top-k, and clamped at 0 it cannot, so the support kept
  flipping and our first runs emptied the grid. ``clamp=True`` restores the box (``[floor, 1]``
  before the prune, ``floor = 1e-3`` so that no region is dead before ADMM decides: a point with
  ``s(x) = 0`` skips its lookups and so sends no gradient to its saliency corners).
* The saliency values need their own, larger Adam learning rate (``make_optimizer``: 5e-2 vs
  1e-2) so they can follow the ADMM pull within one z/u period: Adam moves a value by about
  ``lr`` per step whatever ``ρ`` is.
* ``k`` per target tensor, ``floor((1 - sparsity) · numel)`` (sparsecore's :func:`keep_count`).
* The same class works on any tensor (``targets=...``), which is how sparsecore's conformance
  suite runs it; the NeRF-specific effect (skipped lookups) comes from
  :class:`~sparse_hollownerf.HashNeRF`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import torch
from torch import nn

from sparse_hollownerf.config import HollowNeRFConfig
from sparse_hollownerf.saliency import SaliencyGrid
from sparsecore import MethodConfig, PruningMethod, keep_count, topk_mask
from sparsecore.targets import Target
from sparsecore.taxonomy import Taxonomy

__all__ = ["HollowNeRF", "project_topk"]


def project_topk(values: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean projection onto ``{z : ‖z‖₀ ≤ k}``.

    Args:
        values: Any-shaped tensor.
        k: Entries kept (``0 ≤ k ≤ numel``).

    Returns:
        ``(z, support)``: ``z`` equals ``values`` on the ``k`` largest ``|values|`` (ties: lower
        flat index first) and 0 elsewhere; ``support`` is that bool mask (exactly ``k`` True).
    """
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"values must be a torch.Tensor, got {type(values).__name__}")
    if values.is_floating_point() and torch.isnan(values).any():
        raise ValueError("values contains NaN")
    support = topk_mask(values.detach().abs(), k)
    return values.detach() * support, support


class HollowNeRF(PruningMethod):
    """ADMM pruning of HollowNeRF saliency grids, then a hard prune (see the module docstring).

    Example:
        >>> method = HollowNeRF(sparsity=0.8, prune_step=300).setup(model, optimizer)
        >>> loss = mse + method.regularization()   # in the user's loop
    """

    taxonomy: ClassVar[Taxonomy | None] = Taxonomy(
        ("unstructured",),
        "during",
        "dense-to-sparse",
        "static",
        note="hash-grid entries pruned by a trainable saliency grid",
    )
    #: The ``sparse bench`` scenario this method is shown in (sparsecore.bench.scenarios).
    bench_scenario: ClassVar[str] = "nerf-scene"

    name = "hollownerf"
    config_class: ClassVar[type[MethodConfig]] = HollowNeRFConfig
    config: HollowNeRFConfig

    def __init__(self, config: HollowNeRFConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.z: dict[str, torch.Tensor] = {}
        self.u: dict[str, torch.Tensor] = {}
        self.rho = self.config.rho
        self.residuals: list[float] = []

    # ------------------------------------------------------------------ setup
    def setup(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> HollowNeRF:
        """Default targets: every :class:`SaliencyGrid`'s ``values`` (see the base class)."""
        if self.config.targets is None:
            if not isinstance(model, nn.Module):
                raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
            names = tuple(
                f"{n}.values" if n else "values"
                for n, m in model.named_modules()
                if isinstance(m, SaliencyGrid)
            )
            if not names:
                raise ValueError(
                    "targets: the model has no SaliencyGrid; add one (HashNeRF(saliency=...)) "
                    "or pass targets=..."
                )
            self.config = dataclasses.replace(self.config, targets=names)
        super().setup(model, optimizer)
        return self

    def validate(self, model: nn.Module, targets: list[Target]) -> None:  # noqa: D102
        params = dict(model.named_parameters())
        for t in targets:
            if params[t.name].numel() < 2:
                raise ValueError(f"target {t.name!r} has fewer than 2 entries")

    def k(self, name: str) -> int:
        """Entries of target ``name`` kept by the projection."""
        return keep_count(self.masks.param(name).numel(), self.config.density)

    def init_masks(self) -> None:  # noqa: D102
        for name, param in self.masks.params().items():
            self.z[name], _ = project_topk(param, self.k(name))
            self.u[name] = torch.zeros_like(param, requires_grad=False)

    # ------------------------------------------------------------------ ADMM
    def admm_active(self) -> bool:
        """Whether the augmented-Lagrangian term is on for the upcoming step."""
        return self.config.admm_start <= self.step < self.config.prune_step

    def regularization(self) -> torch.Tensor:
        """``Σ (ρ/2)‖s − z + u‖²`` while ADMM runs, else 0."""
        if not self.admm_active():
            return torch.zeros(())
        total = torch.zeros((), device=next(iter(self.masks.params().values())).device)
        for name, s in self.masks.params().items():
            total = total + 0.5 * self.rho * ((s - self.z[name] + self.u[name]) ** 2).sum()
        return total

    @torch.no_grad()
    def admm_update(self) -> float:
        """One z step and dual step; ``ρ ← ρ · rho_growth``.

        Returns:
            The primal residual ``‖s − z‖`` (over all targets) after the update.
        """
        squared = 0.0
        for name, s in self.masks.params().items():
            z, _ = project_topk(s + self.u[name], self.k(name))
            self.z[name] = z
            self.u[name] = self.u[name] + s.detach() - z
            squared += float(((s - z) ** 2).sum())
        self.rho *= self.config.rho_growth
        residual = math.sqrt(squared)
        self.residuals.append(residual)
        return residual

    @torch.no_grad()
    def hard_prune(self) -> None:
        """Fix the masks to ``supp(Π_k(s + u))``; pruned values become exactly zero."""
        for name, s in self.masks.params().items():
            _, support = project_topk(s + self.u[name], self.k(name))
            self.masks.update(name, support)

    def on_after_optimizer_step(self) -> None:  # noqa: D102
        cfg = self.config
        if cfg.clamp:
            low = 0.0 if self.pruned else cfg.floor
            with torch.no_grad():
                for p in self.masks.params().values():
                    p.clamp_(low, 1.0)
        if self.step == cfg.prune_step:
            self.hard_prune()
        elif cfg.admm_start < self.step < cfg.prune_step and (
            (self.step - cfg.admm_start) % cfg.admm_every == 0
        ):
            self.admm_update()

    @property
    def pruned(self) -> bool:
        """Whether the hard prune has happened."""
        return self.step >= self.config.prune_step

    # ------------------------------------------------------------------ resume
    def extra_state(self) -> dict[str, Any]:  # noqa: D102
        return {
            "z": {n: t.clone() for n, t in self.z.items()},
            "u": {n: t.clone() for n, t in self.u.items()},
            "rho": self.rho,
            "residuals": list(self.residuals),
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:  # noqa: D102
        self.z = {n: t.clone() for n, t in state["z"].items()}
        self.u = {n: t.clone() for n, t in state["u"].items()}
        self.rho = float(state["rho"])
        self.residuals = [float(r) for r in state["residuals"]]

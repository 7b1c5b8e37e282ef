"""HollowNeRF: an L1-budgeted sigmoid saliency grid, solved with ADMM, gating a hash-grid NeRF.

Paper: Xie, Gherardi, Pan & Huang (Baidu), "HollowNeRF: Pruning Hashgrid-Based NeRFs with
Trainable Collision Mitigation", ICCV 2023, arXiv 2308.10122. Official code: none found. The
paper's full text could not be retrieved here (searched arXiv id, title, CVF open access);
labels: [issue/summary] = the paper's description and two independent summaries as relayed in
issue 23; [reconstructed] = our choice where those leave it open. ADMM details follow Boyd et al.,
"Distributed Optimization and Statistical Learning via ADMM" (2011), scaled form.

Problem [issue/summary]: ``min L_render(θ, m)  s.t.  Σ_v m_v ≤ B`` where ``m = sigmoid(logits)``
is the vertex saliency in ``[0, 1]`` (`SaliencyGrid`) and ``B`` the L1 budget. Split with ``z = m``,
``z ∈ C = {z ∈ [0, 1]^n : Σ z ≤ B}``, scaled dual ``u`` [issue/summary: ADMM, Lagrangian, dual
ascent; the splitting and scaled form are reconstructed]:

1. θ/m step: the user's optimizer minimises ``L_render + (ρ/2)‖m − z + u‖²``
   (`HollowNeRF.regularization`) for ``admm_every`` steps;
2. z step: ``z = Π_C(m + u) = clip(m + u − ν, 0, 1)`` (`project_l1_budget`); ``ν ≥ 0`` is the
   Lagrange multiplier of the budget (0 when it is slack), found by bisection;
3. dual ascent: ``u ← u + m − z``. ``u`` stays ≥ 0 and ``Σu`` moves with the sign of the
   constraint violation: it grows by ``Σm − B > 0`` when the budget is violated and cannot grow
   when it is slack. Then ``ρ ← ρ · rho_growth`` and ``u ← u / rho_growth`` (``u = λ/ρ`` in the
   scaled form, Boyd et al. §3.4.1; without the rescale the pull overshoots and empties the grid).

Auxiliary state is created when its phase starts [issue]: ``z = Π_C(m)`` and ``u = 0`` are set at
the first step ``≥ admm_start`` (not in ``setup()``), from the saliency trained up to then.

At ``prune_step`` ADMM stops and the hard prune keeps the ``k = floor(B)`` vertices of largest
``z`` (ties: lower flat index) [reconstructed]; the others get saliency exactly 0 (the grid's
``alive`` buffer, in the model, and a hard sparsecore mask on the logits), so their samples have
exactly zero density and are skipped (`HashNeRF`). Since ``m ≤ 1``, ``Σ m ≤ k ≤ B`` holds from
then on: the L1 budget is met exactly at the end.

Choices [reconstructed]:

* ``B = (1 − sparsity) · numel`` per target, so ``sparsity`` is also the fraction of vertices
  pruned at the end (``keep_count``).
* ``ρ`` grows geometrically (default ×1.3 per z/u update) so ``m`` is pulled onto ``C`` before
  the hard prune.
* The saliency logits get their own, larger Adam learning rate (``make_optimizer``).
* On a target that is not a `SaliencyGrid`'s ``values`` (``targets=...``, e.g. sparsecore's
  conformance suite) the saliency is ``sigmoid(param)`` and the prune is the sparsecore mask.
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

__all__ = ["HollowNeRF", "project_l1_budget"]


def project_l1_budget(values: torch.Tensor, budget: float) -> tuple[torch.Tensor, float]:
    """Euclidean projection onto ``C = {z ∈ [0, 1]^n : Σ z ≤ budget}``.

    Args:
        values: Any-shaped float tensor.
        budget: ``B ≥ 0``.

    Returns:
        ``(z, nu)``: ``z = clip(values − nu, 0, 1)`` with the smallest ``nu ≥ 0`` that makes
        ``Σ z ≤ budget`` (``nu`` is the budget's Lagrange multiplier; bisection to 1e-9).

    Raises:
        ValueError: NaN values or a negative budget.
    """
    if not isinstance(values, torch.Tensor) or not values.is_floating_point():
        raise TypeError("values must be a floating-point torch.Tensor")
    if torch.isnan(values).any():
        raise ValueError("values contains NaN")
    if not budget >= 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    v = values.detach().to(torch.float64)
    if float(v.clamp(0, 1).sum()) <= budget:
        return v.clamp(0, 1).to(values.dtype), 0.0
    lo, hi = 0.0, float(v.max())
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if float((v - mid).clamp(0, 1).sum()) > budget:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-9:
            break
    return (v - hi).clamp(0, 1).to(values.dtype), hi


class HollowNeRF(PruningMethod):
    """L1-budget ADMM on HollowNeRF saliency grids, then a hard prune (see the module docstring).

    Example:
        >>> method = HollowNeRF(sparsity=0.8, admm_start=100, prune_step=300)
        >>> method.setup(model, optimizer)
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
        self.admm_started = False
        #: One record per z/u update: residual ``‖m − z‖``, violation ``Σm − B``, ``ν``, ``Σu``.
        self.history: list[dict[str, float]] = []

    # ------------------------------------------------------------------ setup
    def setup(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> HollowNeRF:
        """Default targets: every `SaliencyGrid`'s ``values`` (see the base class)."""
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
        """Vertices of target ``name`` kept by the hard prune (``floor(B)``)."""
        return keep_count(self.masks.param(name).numel(), self.config.density)

    def budget(self, name: str) -> float:
        """L1 budget ``B = (1 − sparsity) · numel`` on the saliency sum of target ``name``."""
        return self.config.density * self.masks.param(name).numel()

    def grid(self, name: str) -> SaliencyGrid | None:
        """The `SaliencyGrid` owning target ``name`` (``None`` for other tensors)."""
        if self.model is None or not name.endswith("values"):
            return None
        module = self.model.get_submodule(name[: -len("values")].rstrip("."))
        return module if isinstance(module, SaliencyGrid) else None

    def saliency(self, name: str) -> torch.Tensor:
        """Vertex saliency ``m`` of target ``name`` (differentiable), in ``[0, 1]``."""
        grid = self.grid(name)
        if grid is not None:
            return grid.vertex_saliency()
        return torch.sigmoid(self.masks.param(name))

    def init_masks(self) -> None:  # noqa: D102
        # ADMM state is deliberately NOT created here: see `start_admm`.
        self.z, self.u, self.admm_started = {}, {}, False

    # ------------------------------------------------------------------ ADMM
    def admm_active(self) -> bool:
        """Whether the augmented-Lagrangian term is on for the upcoming step."""
        return self.config.admm_start <= self.step < self.config.prune_step

    @torch.no_grad()
    def start_admm(self) -> None:
        """Create the ADMM state from the current saliency: ``z = Π_C(m)``, ``u = 0``."""
        for name in self.masks.params():
            m = self.saliency(name).detach()
            self.z[name], _ = project_l1_budget(m, self.budget(name))
            self.u[name] = torch.zeros_like(m)
        self.rho = self.config.rho
        self.admm_started = True

    def regularization(self) -> torch.Tensor:
        """``Σ (ρ/2)‖m − z + u‖²`` while ADMM runs, else 0."""
        if not self.admm_active():
            return torch.zeros(())
        if not self.admm_started:
            self.start_admm()
        total = torch.zeros((), device=next(iter(self.masks.params().values())).device)
        for name in self.masks.params():
            m = self.saliency(name)
            total = total + 0.5 * self.rho * ((m - self.z[name] + self.u[name]) ** 2).sum()
        return total

    @torch.no_grad()
    def admm_update(self) -> float:
        """One z step and dual-ascent step; ``ρ ← ρ · rho_growth``.

        Returns:
            The primal residual ``‖m − z‖`` (over all targets) after the update.
        """
        if not self.admm_started:
            self.start_admm()
        squared = violation = nu_total = 0.0
        for name in self.masks.params():
            m = self.saliency(name).detach()
            z, nu = project_l1_budget(m + self.u[name], self.budget(name))
            self.z[name] = z
            self.u[name] = self.u[name] + m - z
            squared += float(((m - z) ** 2).sum())
            violation += float(m.sum()) - self.budget(name)
            nu_total += nu
        # Scaled form: u = λ/ρ, so a new ρ rescales u (Boyd et al. 2011, §3.4.1).
        self.rho *= self.config.rho_growth
        for name in self.u:
            self.u[name] = self.u[name] / self.config.rho_growth
        residual = math.sqrt(squared)
        dual_sum = sum(float(u.sum()) for u in self.u.values())
        self.history.append(
            {"residual": residual, "violation": violation, "nu": nu_total, "dual_sum": dual_sum}
        )
        return residual

    @property
    def residuals(self) -> list[float]:
        """Primal residuals of every z/u update so far."""
        return [h["residual"] for h in self.history]

    @torch.no_grad()
    def hard_prune(self) -> None:
        """Keep the ``k`` vertices of largest ``z``; the rest get saliency exactly 0."""
        if not self.admm_started:
            self.start_admm()
        for name in self.masks.params():
            support = topk_mask(self.z[name], self.k(name))
            self.masks.update(name, support)
            grid = self.grid(name)
            if grid is not None:
                grid.prune(support)

    def on_after_optimizer_step(self) -> None:  # noqa: D102
        cfg = self.config
        if not self.admm_started and cfg.admm_start <= self.step < cfg.prune_step:
            self.start_admm()  # the phase starts now: build z/u from the current saliency
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
            "admm_started": self.admm_started,
            "history": [dict(h) for h in self.history],
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:  # noqa: D102
        self.z = {n: t.clone() for n, t in state["z"].items()}
        self.u = {n: t.clone() for n, t in state["u"].items()}
        self.rho = float(state["rho"])
        self.admm_started = bool(state["admm_started"])
        self.history = [{k: float(v) for k, v in h.items()} for h in state["history"]]

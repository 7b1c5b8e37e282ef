"""TRP: Trained Rank Pruning as a sparsecore method.

Paper: Yuhui Xu, Yuxi Li, Shuai Zhang, Wei Wen, Botao Wang, Yingyong Qi, Yiran Chen, Weiyao Lin,
Hongkai Xiong, "Trained Rank Pruning for Efficient Deep Neural Networks", IJCAI 2020,
arXiv 2004.14566 (earlier version arXiv 1812.02402). Official code:
https://github.com/yuhuixu1993/Trained-Rank-Pruning (``cifar-TRP.py``: ``low_rank_approx``,
``train``, ``get_look_up_table``; ``decompose.py``).

The algorithm, as in the official ``train`` loop: on every ``period``-th iteration, *before the
forward pass*, each eligible weight is reshaped (NC / VH / ND), its SVD taken, the rank ``r``
chosen by the energy criterion, the weight overwritten by its rank-``r`` approximation (the TRP
substitution) and ``U_r V_rᵀ`` remembered; after the backward pass of that same iteration
``λ·U_r V_rᵀ`` (the sub-gradient of the nuclear norm) is added to the weight's gradient, then the
optimizer steps. After training, `TRP.decompose` factors each layer into two.

Mapping onto sparsecore's hooks, and the other choices, with reasons:

* "Before the forward pass of iteration ``t``" is "after the optimizer step of iteration
  ``t - 1``": nothing touches the weights in between. So the substitution runs in
  `on_after_optimizer_step` when the number of completed steps is a multiple of
  ``period``, and once in `setup` for iteration 0 (the official ``batch_idx 0``).
* The sub-gradient is added in `on_before_optimizer_step`, where the dense gradient of the
  same iteration is readable, when the iteration index (``self.step`` before the increment) is a
  multiple of ``period``. It is added before the optimizer applies weight decay and momentum,
  exactly like the official ``grad.data.add_`` before ``optimizer.step()``.
* The official period counter is the batch index inside the epoch (it restarts every epoch);
  here it is the global step count (the loop does not know epochs). With ``period = 1`` (the
  default) the two agree.
* The official code substitutes through ``model.load_state_dict``; here the parameter is
  overwritten in place (``copy_``), so optimizer state (momentum) is kept, as it is there.
* A failing SVD (e.g. NaN weights) leaves the layer unchanged for that step with a zero
  sub-gradient, like the official ``try/except``.
* Masks: sparsecore adds a bool mask per target; TRP keeps them all-ones and ``sparsity`` is
  fixed to 0 (see `sparse_trp.config.TRPConfig`). Rank is reported by `ranks`.
* Default targets: the official eligibility rule (every non-1×1, ungrouped convolution except
  the first; Conv1d as well as Conv2d), plus Linear layers when ``include_linear``. After
  `setup`, ``config.targets`` holds the resolved weight names.
* Exact resume: the pending sub-gradients and the last ranks are part of `extra_state`.
* DDP: every rank holds the same weights after the synchronised step and runs the same SVD, so
  substitutions stay identical across ranks (the rank-``r`` approximation and ``U_r V_rᵀ`` do
  not depend on the sign ambiguity of singular vectors). The sub-gradient is added to the
  already averaged gradient, as the official single-GPU code adds it after ``backward``.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, ClassVar

import torch
from torch import nn

from sparse_trp.config import TRPConfig
from sparse_trp.decompose import check_layer, decompose, eligible_layers, plan_ranks
from sparse_trp.lowrank import EnergyThreshold, RankCriterion, ValueThreshold, svd_truncate
from sparsecore.method import MethodConfig, PruningMethod
from sparsecore.patterns import Pattern, Unstructured
from sparsecore.targets import Target
from sparsecore.taxonomy import Taxonomy

__all__ = ["TRP"]

_log = logging.getLogger(__name__)


class TRP(PruningMethod):
    """Trained Rank Pruning: periodic low-rank substitution plus a nuclear-norm sub-gradient.

    ```python
    trp = TRP(scheme="NC", energy=0.9, nuclear_weight=3e-4).setup(model, optimizer)
    for x, y in loader:                      # the loop is unchanged
        loss = loss_fn(model(x), y)
        optimizer.zero_grad(); loss.backward(); optimizer.step()
    small, plan = trp.decompose()            # plain nn.Module, fewer FLOPs
    ```

    Args:
        config: A `sparse_trp.config.TRPConfig`.
        **overrides: Config fields (``scheme``, ``energy``, ``nuclear_weight``, ``period``, ...).
    """

    taxonomy: ClassVar[Taxonomy | None] = Taxonomy(
        ("low-rank",), "during", "dense-to-sparse", "static"
    )
    #: The ``sparse bench`` scenario this method is shown in (sparsecore.bench.scenarios).
    bench_scenario: ClassVar[str] = "digits-resnet"

    name: ClassVar[str] = "trp"
    #: A non-finite layer is left unchanged (its SVD fails and is logged), not refused at setup.
    requires_finite_weights: ClassVar[bool] = False
    config_class: ClassVar[type[MethodConfig]] = TRPConfig
    mask_mode = "hard"
    supported_patterns: ClassVar[tuple[type[Pattern], ...]] = (Unstructured,)
    needs_calibration: ClassVar[bool] = False
    config: TRPConfig

    def __init__(self, config: TRPConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.layers: dict[str, str] = {}  # weight name -> module name
        self.subgradients: dict[str, torch.Tensor] = {}
        self.ranks: dict[str, list[int]] = {}

    # ------------------------------------------------------------------ lifecycle
    def setup(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> TRP:
        """Resolve the eligible layers, add (all-ones) masks, hook the optimizer, run step 0.

        Raises:
            TypeError: ``model`` is not an ``nn.Module``.
            ValueError: No eligible layer, or a target TRP cannot handle (raised before the model
                is touched).
        """
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
        original = self.config
        if self.config.targets is None:
            names = eligible_layers(inner, self.config.include_linear, self.config.skip_first_conv)
            if not names:
                raise ValueError(
                    "targets: the model has no layer TRP can act on (non-1x1 convolutions after "
                    "the first; Linear layers need include_linear=True)"
                )
            targets = tuple(f"{n}.weight" if n else "weight" for n in names)
            self.config = dataclasses.replace(self.config, targets=targets)
        try:
            super().setup(model, optimizer)
        except Exception:
            self.config = original
            raise
        self.layers = {t.name: t.module_name for t in self.masks.targets.values()}
        if self.config.substitute or self.config.nuclear_weight:
            self._trp_step()  # iteration 0 is a TRP step (official batch_idx 0)
        return self

    def validate(self, model: nn.Module, targets: list[Target]) -> None:
        """Every target must be the ``weight`` of an ungrouped Conv1d/Conv2d or a Linear."""
        for target in targets:
            if target.param_name != "weight":
                raise ValueError(f"targets: TRP acts on layer weights, got {target.name!r}")
            module = model.get_submodule(target.module_name)
            check_layer(target.module_name, module, self.config.scheme)

    # ------------------------------------------------------------------ the algorithm
    @torch.no_grad()
    def _trp_step(self) -> None:
        """SVD every target; substitute (if enabled) and store ``U_r V_rᵀ`` (if λ > 0)."""
        criterion = EnergyThreshold(self.config.energy)
        self.subgradients = {}
        for name, weight in self.masks.params().items():
            try:
                result = svd_truncate(weight, self.config.scheme, criterion)
            except RuntimeError as err:  # torch.linalg.LinAlgError is a RuntimeError
                _log.warning("TRP: SVD of %s failed (%s); layer left unchanged", name, err)
                if self.config.nuclear_weight:
                    self.subgradients[name] = torch.zeros_like(weight)
                continue
            if self.config.substitute:
                weight.copy_(result.lowrank)
            if self.config.nuclear_weight:
                self.subgradients[name] = result.subgradient
            self.ranks[name] = [int(r) for r in result.ranks.reshape(-1).tolist()]

    def is_trp_step(self, iteration: int) -> bool:
        """Whether iteration ``iteration`` (0-based) substitutes and adds the sub-gradient."""
        return iteration % self.config.period == 0

    @torch.no_grad()
    def on_before_optimizer_step(self) -> None:
        """Add ``λ·U_r V_rᵀ`` to the dense gradient on TRP iterations."""
        weight = self.config.nuclear_weight
        if not weight or not self.is_trp_step(self.step):
            return
        for name, param in self.masks.params().items():
            sub = self.subgradients.get(name)
            if sub is not None and param.grad is not None:
                param.grad.add_(sub, alpha=weight)

    def on_after_optimizer_step(self) -> None:
        """Before the next iteration's forward pass: a TRP step if it is a TRP iteration."""
        if self.is_trp_step(self.step):
            self._trp_step()

    # ------------------------------------------------------------------ after training
    def default_criterion(self) -> RankCriterion:
        """The official decomposition criterion: σ ≥ 0.05 for NC/VH, energy 0.85 for ND."""
        if self.config.scheme == "ND":
            return EnergyThreshold(0.85)
        return ValueThreshold(0.05)

    def plan(
        self,
        criterion: RankCriterion | None = None,
        only_if_smaller: bool = True,
        example: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        """Ranks for `decompose`: ``{"scheme": ..., "ranks": {layer: rank}}``.

        Args:
            criterion: Rank criterion; default `default_criterion`.
            only_if_smaller: Leave layers dense whose factorisation would not cost fewer MACs.
            example: A batch of inputs for exact spatial sizes in that comparison (see
                `sparse_trp.plan_ranks`).
        """
        if self.model is None:
            raise RuntimeError("TRP: call setup(model, optimizer) and train first")
        return plan_ranks(
            self.model,
            list(self.layers.values()),
            self.config.scheme,
            criterion or self.default_criterion(),
            only_if_smaller,
            example,
        )

    def decompose(
        self,
        criterion: RankCriterion | None = None,
        only_if_smaller: bool = True,
        example: torch.Tensor | None = None,
    ) -> tuple[nn.Module, dict[str, Any]]:
        """A decomposed copy of the trained model (mask buffers removed) and its plan.

        Works before or after `finalize`. The method stays attached to the original model;
        the copy contains only standard layers (no mask buffers). Save it with
        ``torch.save({"plan": plan, "state": small.state_dict()}, path)`` and rebuild it with
        `sparse_trp.build_decomposed`.
        """
        plan = self.plan(criterion, only_if_smaller, example)
        assert self.model is not None
        small = decompose(self.model, plan)
        for module_name in self.layers.values():
            if module_name not in plan["ranks"]:
                module = small.get_submodule(module_name)
                module._buffers.pop("weight_mask", None)
        return small, plan

    # ------------------------------------------------------------------ resume
    def extra_state(self) -> dict[str, Any]:
        """Pending sub-gradients and the last ranks."""
        return {
            "subgradients": {k: v.detach().clone() for k, v in self.subgradients.items()},
            "ranks": {k: list(v) for k, v in self.ranks.items()},
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Inverse of `extra_state`."""
        params = self.masks.params() if self._masks is not None else {}
        subs = {}
        for name, tensor in state.get("subgradients", {}).items():
            device = params[name].device if name in params else tensor.device
            subs[name] = tensor.to(device)
        self.subgradients = subs
        self.ranks = {k: [int(r) for r in v] for k, v in state.get("ranks", {}).items()}

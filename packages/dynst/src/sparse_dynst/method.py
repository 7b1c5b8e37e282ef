"""DynST: dynamic sparse training over the input sensors of a spatio-temporal forecaster.

Paper: Hao Wu, Haomin Wen, Guibin Zhang, Yutong Xia, Yuxuan Liang, Yu Zheng, Qingsong Wen,
Kun Wang. "DynST: Dynamic Sparse Training for Resource-Constrained Spatio-Temporal
Forecasting." KDD 2025 (arXiv 2403.02914). Official code: none found (GitHub repositories named
DynST are unrelated projects), so this is a reconstruction from the paper's abstract and public
summaries of its method section. Labels: [paper] = stated in the abstract / summaries;
[recon] = our choice where the text gives no formula. Sources read: the arXiv abstract and HTML
front matter (v2, 2025), and third-party summaries (sciencestack.ai TL;DR: "learns a
differentiable sensor-mask over historical regions and employs stream morph, iterative pruning,
and drop-regrow cycles", 30–60% sensor sparsity; themoonlight.io review: the stream morph
operator removes the temporal dimension's interference). The method section's equations were
not reachable, so every formula below is [recon].

What the method does here:

* [paper] Sparsity is over *input sensors / regions*, not weights: a learned sensor mask decides
  which sensors are collected at deployment; the forecaster still predicts every location.
* [paper] "Dynamic merge" + "dimensional mapping" (stream morph): time is merged into channels
  so one spatial mask is shared by every timestamp and channel; [recon] the dimensional mapping
  is a learned pointwise linear map over the merged axis (see `sparse_dynst.gate`).
* [paper] Iterative pruning during training removes the sensors contributing least to the
  forecast, then sparse training with drop/regrow cycles revisits the choice.
* [recon] Mask ownership: the wrapper's ``sensor_gate`` (one value per sensor) is the single
  target of the core `sparsecore.masks.MaskSet` in hard mode, so the bool buffer
  ``sensor_gate_mask`` is the sensor mask, and pruned gate entries, their gradients and
  optimizer state are zeroed by the core hooks. Exactly one gate per model.
* [recon] Pruning schedule: `sparsecore.schedules.Polynomial` (Zhu–Gupta, cubic by
  default) from ``initial_sparsity`` at ``prune_begin`` to ``sparsity`` at ``prune_end``, an
  update every ``update_every`` steps (plus one at ``prune_end`` so the target is always
  reached: the core's ``"begin"`` grid, `sparsecore.window.PruningWindow`, which
  ``Polynomial`` now follows). ``finalize()`` before ``prune_end`` / ``regrow_end`` warns.
  Active count after an update: ``keep_count(N, 1 - s_t)`` = ``floor((1 - s_t) N)``.
* [recon] Importance of an active sensor: the mean over the steps since the last update of the
  first-order Taylor score ``|s_i · ∂L/∂s_i|`` (the loss change when sensor ``i`` is switched
  off), read from the dense gradient before the core masks it. Averaging over the interval
  (rather than one batch) reduces minibatch noise; ``importance="gradient"`` / ``"magnitude"``
  are offered as alternatives.
* [recon] Drop/regrow (RigL-style, after ``prune_end`` and up to ``regrow_end``): every
  ``update_every`` steps, ``k = floor(α_t · nnz)`` active sensors with the lowest importance are
  dropped and the ``k`` inactive sensors (just-dropped ones included, as in the core's
  `sparsecore.DynamicSparseMethod`) with the highest mean ``|∂L/∂s|`` are regrown;
  ``α_t`` is `sparsecore.schedules.Cosine`-decayed from ``drop_fraction`` to 0.
  Selection uses `sparsecore.select.drop_lowest` / `sparsecore.select.grow_highest`
  (exact counts, ties to the lower index).
* [recon] A regrown sensor's gate restarts at 1 (the initial value): a zero gate would keep the
  sensor silent. Its optimizer state is already zero (the core zeroed it when it was dropped).
* [recon] `DynST.calibrate` is the static-importance baseline's one-shot selection: the
  sensors with the largest ``|∂L/∂s|`` summed over calibration batches at the current weights.
* Export: `DynST.deployed_sensors` lists the sensors to deploy (flat indices for graphs,
  ``(row, col)`` for grids); `DynST.finalize` bakes the mask into the gate.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import nn

from sparse_dynst.config import DynSTConfig
from sparse_dynst.gate import SensorGate
from sparsecore import MethodConfig, PruningMethod
from sparsecore.method import Batch, LossFn
from sparsecore.schedules import Cosine, Periodic
from sparsecore.select import drop_lowest, grow_highest, keep_count, topk_mask
from sparsecore.targets import Target
from sparsecore.taxonomy import Taxonomy
from sparsecore.window import PruningWindow, WindowNames

__all__ = ["DynST"]


class DynST(PruningMethod):
    """Sensor-level dynamic sparse training (iterative pruning, then drop/regrow cycles).

    Wrap the forecaster in `sparse_dynst.SensorGate`, then use it like any sparsecore
    method; the training loop is unchanged:

    ```python
    model = SensorGate(forecaster, "grid", (16, 16))
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    method = DynST(sparsity=0.7, prune_end=600, regrow_end=900, update_every=30)
    method.setup(model, opt)
    ...  # loss.backward(); opt.step()
    sensors = method.deployed_sensors()
    ```
    """

    taxonomy: ClassVar[Taxonomy | None] = Taxonomy(
        ("unstructured",),
        "during",
        "dense-to-sparse",
        "dynamic",
        sparsifies=("inputs",),
        note="input sensors gated, dropped and regrown",
    )
    #: The ``sparse bench`` scenario this method is shown in (sparsecore.bench.scenarios).
    bench_scenario: ClassVar[str] = "sensor-field"

    name: ClassVar[str] = "dynst"
    config_class: ClassVar[type[MethodConfig]] = DynSTConfig
    mask_mode = "hard"
    config: DynSTConfig

    def __init__(self, config: DynSTConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.gate_module: SensorGate | None = None
        self._importance_sum: torch.Tensor | None = None
        self._grad_sum: torch.Tensor | None = None
        self._count = 0
        #: Sensors (flat indices) in the order they were switched off by pruning or drops.
        self.removal_order: list[int] = []

    # ------------------------------------------------------------------ setup
    def validate(self, model: nn.Module, targets: list[Target]) -> None:
        """Exactly one target, and it must be the ``sensor_gate`` of a `SensorGate`."""
        if len(targets) != 1:
            names = [t.name for t in targets]
            raise ValueError(f"DynST needs exactly one sensor gate in targets, got {names}")
        target = targets[0]
        owner = model.get_submodule(target.module_name)
        if not isinstance(owner, SensorGate) or target.param_name != "sensor_gate":
            raise ValueError(
                f"DynST targets input sensors: target {target.name!r} is not the sensor_gate of "
                "a SensorGate (wrap the forecaster: SensorGate(model, layout, spatial_shape))"
            )

    @property
    def _name(self) -> str:
        return self.masks.names[0]

    @property
    def gate(self) -> nn.Parameter:
        """The sensor-gate parameter ``s``."""
        return self.masks.param(self._name)

    @property
    def mask(self) -> torch.Tensor:
        """The live bool sensor mask (spatial shape)."""
        return self.masks.mask(self._name)

    @property
    def num_sensors(self) -> int:
        """Number of sensors ``N`` (``H·W`` for grids)."""
        return self.gate.numel()

    def init_masks(self) -> None:  # noqa: D102
        target = self.masks.targets[self._name]
        module = self.masks.model.get_submodule(target.module_name)
        assert isinstance(module, SensorGate)
        self.gate_module = module
        self._reset_accumulators()
        if self.config.init == "random":
            scores = torch.rand(self.gate.shape, generator=self.generator).to(self.gate.device)
            self._set_mask(topk_mask(scores, self.keep_at(self.config.sparsity)))
        elif self.config.initial_sparsity > 0:
            scores = torch.rand(self.gate.shape, generator=self.generator).to(self.gate.device)
            self._set_mask(topk_mask(scores, self.keep_at(self.config.initial_sparsity)))

    def keep_at(self, sparsity: float) -> int:
        """Active sensors at ``sparsity``: ``floor((1 - sparsity) N)`` (at least one)."""
        return keep_count(self.num_sensors, 1.0 - sparsity)

    # ------------------------------------------------------------------ mask edits
    @torch.no_grad()
    def _set_mask(self, keep: torch.Tensor) -> None:
        old = self.mask.clone()
        self.masks.update(self._name, keep)
        grown = keep & ~old
        if grown.any():
            self.gate[grown] = 1.0
        removed = (old & ~keep).reshape(-1).nonzero().reshape(-1).tolist()
        self.removal_order.extend(int(i) for i in removed)

    def _reset_accumulators(self) -> None:
        self._importance_sum = torch.zeros_like(self.gate, dtype=torch.float64).detach()
        self._grad_sum = torch.zeros_like(self.gate, dtype=torch.float64).detach()
        self._count = 0

    def importance_scores(self) -> torch.Tensor:
        """Importance of every sensor for pruning/dropping (see ``importance`` in the config)."""
        if self.config.importance == "magnitude":
            return self.gate.detach().abs().to(torch.float64)
        assert self._importance_sum is not None and self._grad_sum is not None
        total = self._importance_sum if self.config.importance == "taylor" else self._grad_sum
        return total / max(self._count, 1)

    def regrowth_scores(self) -> torch.Tensor:
        """Mean ``|∂L/∂s|`` since the last update (used to regrow inactive sensors)."""
        assert self._grad_sum is not None
        return self._grad_sum / max(self._count, 1)

    def prune_to(self, sparsity: float) -> int:
        """Switch off the least important active sensors until ``keep_at(sparsity)`` remain.

        Returns:
            How many sensors were removed.
        """
        nnz = int(self.mask.sum())
        count = max(nnz - self.keep_at(sparsity), 0)
        if count:
            self._set_mask(drop_lowest(self.importance_scores(), self.mask, count))
        return count

    def drop_and_regrow(self, fraction: float) -> int:
        """One cycle: drop ``floor(fraction·nnz)`` least important, regrow as many by ``|grad|``.

        Returns:
            How many sensors were replaced.
        """
        nnz = int(self.mask.sum())
        count = min(math.floor(fraction * nnz), nnz)
        if count == 0:
            return 0
        dropped = drop_lowest(self.importance_scores(), self.mask, count)
        keep = grow_highest(self.regrowth_scores(), dropped, count)
        self._set_mask(keep)
        return count

    # ------------------------------------------------------------------ step hooks
    @torch.no_grad()
    def on_before_optimizer_step(self) -> None:  # noqa: D102
        grad = self.gate.grad
        assert self._importance_sum is not None and self._grad_sum is not None
        if grad is not None:
            g = grad.detach().to(torch.float64)
            self._grad_sum += g.abs()
            self._importance_sum += (g * self.gate.detach().to(torch.float64)).abs()
        self._count += 1

    def is_prune_step(self, step: int) -> bool:
        """Whether the iterative-pruning update runs after ``step``."""
        cfg = self.config
        if not cfg.dynamic or cfg.init != "dense":
            return False
        return cfg.schedule.is_update_step(step) or step == cfg.prune_end

    def is_regrow_step(self, step: int) -> bool:
        """Whether a drop/regrow cycle runs after ``step``."""
        cfg = self.config
        if not cfg.dynamic or cfg.drop_fraction == 0 or step <= cfg.prune_end:
            return False  # the update at prune_end itself is the last pruning step
        return Periodic(cfg.update_every, cfg.prune_end, cfg.regrow_end).is_update_step(step)

    def drop_fraction_at(self, step: int) -> float:
        """``α_t``: cosine decay from ``drop_fraction`` at ``prune_end`` to 0 at ``regrow_end``."""
        cfg = self.config
        total = cfg.regrow_end - cfg.prune_end
        if total <= 0:
            return 0.0
        return Cosine(cfg.drop_fraction, total)(step - cfg.prune_end)

    @torch.no_grad()
    def on_after_optimizer_step(self) -> None:  # noqa: D102
        step = self.step
        updated = False
        if self.is_prune_step(step) and step >= self.config.prune_begin:
            self.prune_to(self.config.schedule(step))
            updated = True
        elif self.is_regrow_step(step):
            self.drop_and_regrow(self.drop_fraction_at(step))
            updated = True
        if not self.config.learn_gate:
            self.gate.copy_(self.mask.to(self.gate.dtype))
        if updated:
            self._reset_accumulators()

    # ------------------------------------------------------------------ calibration / export
    def calibrate(self, batches: Iterable[Batch], loss_fn: LossFn | None = None) -> None:
        """Static importance: keep the sensors with the largest summed ``|∂L/∂s|`` on ``batches``.

        Every sensor is switched on first (switched-off ones restart at gate 1), so the scores
        are those of the full-sensor model; then the mask is set at the target ``sparsity`` once
        (the static-importance baseline; with ``dynamic=False`` it then stays fixed). Other
        model weights are not changed.

        Args:
            batches: ``(x, y)`` pairs.
            loss_fn: Loss of ``(model(x), y)``; default mean squared error.
        """
        loss_fn = loss_fn or nn.functional.mse_loss
        batches = list(batches)
        if not batches:
            raise ValueError("calibrate: batches is empty")
        model = self.masks.model
        gate = self.gate
        self._set_mask(torch.ones_like(self.mask))
        score = torch.zeros_like(gate, dtype=torch.float64)
        for x, y in batches:
            loss = loss_fn(model(x), y)
            (g,) = torch.autograd.grad(loss, [gate])
            score += g.detach().abs().to(torch.float64)
        self._set_mask(topk_mask(score, self.keep_at(self.config.sparsity)))

    def sensor_mask(self) -> torch.Tensor:
        """A copy of the bool sensor mask (spatial shape: ``(H, W)`` or ``(N,)``)."""
        return self.mask.detach().clone()

    def deployed_sensors(self) -> list[int] | list[tuple[int, int]]:
        """The sensors to deploy: flat indices (graph) or ``(row, col)`` pairs (grid), sorted."""
        mask = self.mask.detach().cpu()
        if mask.dim() == 1:
            return [int(i) for i in mask.nonzero().reshape(-1)]
        return [(int(r), int(c)) for r, c in mask.nonzero()]

    def schedule_gap(self) -> str | None:
        """Why the schedule has not run to its end (pruning up to ``prune_end``, drop/regrow
        up to ``regrow_end``), or ``None``; ``finalize()`` warns with it.
        """
        cfg = self.config
        if not cfg.dynamic:
            return None
        if cfg.init == "dense":
            names = WindowNames(begin="prune_begin", end="prune_end")
            window = PruningWindow(cfg.prune_begin, cfg.prune_end, cfg.update_every, names=names)
            gap = window.gap(self.step, "DynST")
            if gap is not None:
                return gap
        if cfg.drop_fraction > 0 and self.step < cfg.regrow_end:
            return (
                f"DynST: finalize() after {self.step} steps, before the drop/regrow phase ends "
                f"(regrow_end={cfg.regrow_end}): the mask was still being explored. Set "
                f"regrow_end to fit the training length"
            )
        return None

    def finalize(self) -> nn.Module:
        """Bake the mask into the gate (pruned sensors' gate = 0) and remove hooks and buffers."""
        module = self.gate_module
        model = super().finalize()
        if module is not None:
            module._finalized = True
        return model

    # ------------------------------------------------------------------ resume
    def extra_state(self) -> dict[str, Any]:  # noqa: D102
        assert self._importance_sum is not None and self._grad_sum is not None
        return {
            "importance_sum": self._importance_sum.clone(),
            "grad_sum": self._grad_sum.clone(),
            "count": self._count,
            "removal_order": list(self.removal_order),
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:  # noqa: D102
        self._importance_sum = state["importance_sum"].clone().to(self.gate.device)
        self._grad_sum = state["grad_sum"].clone().to(self.gate.device)
        self._count = int(state["count"])
        self.removal_order = [int(i) for i in state["removal_order"]]

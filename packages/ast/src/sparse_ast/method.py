"""AST: Adaptive Sparse Trainer for N:M (2:4) semi-structured language models.

Paper: "Pruning Large Language Models with Semi-Structural Adaptive Sparse Training", Weiyu Huang,
Yuezhou Hu, Guohao Jian, Jun Zhu, Jianfei Chen, AAAI 2025, arXiv 2407.20584.
Official code: https://github.com/thu-ml/Adaptive-Sparse-Trainer (GPT-2/OPT: ``main.py``,
``sparse_modeling.py``, ``adamw.py``, ``utils.py``; LLaMA: ``LLaMA-2-7B/train.py``,
``LLaMA-2-7B/llmshearing/sparse/``). Read at commit 723d742 for this implementation.

The algorithm, and every choice made here:

1. **Masks** (``layers.py``): every target weight gets an N:M mask along the input dimension,
   keeping the top ``n`` of each group of ``m`` consecutive inputs of a row by ``|W|`` or Wanda
   ``|W| * ||X_j||_2``. Ties go to the lower index (sparsecore's rule; the official
   ``torch.topk(largest=False)`` tie order is unspecified).
2. **STE forward/backward**: sparsecore's ``ste`` mask mode: the forward uses ``W ⊙ m`` and the
   dense gradient of the effective weight reaches ``W`` (official ``STE.backward`` returns
   ``grad_output`` unchanged), so pruned weights keep learning and can come back.
3. **Mask recomputation**: from the current dense weights every ``k = mask_update_every`` steps.
   The official GPT-2 loop recomputes after the optimizer step of iterations ``0, k, 2k, ...``
   (0-based), i.e. after completed steps ``1, k+1, 2k+1, ...``; we do exactly that
   (``(self.step - 1) % k == 0`` in ``on_after_optimizer_step``). Wanda's activation norms are
   collected once on the dense model before training and kept fixed, as in the official code.
4. **Annealed SR-STE decay** ``λ_t = λ * t / T_inc`` (``t < T_inc``), else ``λ``, where ``t`` is
   the 0-based index of the step being taken (official ``get_decay(iter_num)``). Two official
   placements, both supported and chosen by the optimizer you pass:

   * with `sparse_ast.ASTAdamW` (GPT-2 code, ``adamw.py``) the decay is added inside
     the update after the first moment (see ``optim.py``; we fix the official int-mask bug
     documented there);
   * with any other optimizer (LLaMA code, ``SRSTE_Callback``) ``λ_t * (¬m ⊙ W)`` is added to
     the gradient in ``on_before_optimizer_step``, i.e. before momentum. A parameter without a
     gradient gets the decay as its gradient.
5. **Distillation** (``distill.py``) from a frozen copy of the dense model taken at ``setup``
   (or the teacher given to `AdaptiveSparseTrainer.with_teacher`): ``regularization()``
   returns ``alpha_kl * T² KL + alpha_squarehead * SquareHead`` for the last training forward.
   Multiply your task loss by ``alpha_task`` yourself or use `AdaptiveSparseTrainer.loss`.
   The teacher's weights are part of `extra_state` so that a resume is exact.
6. **SLoRB** (``slorb.py``): ``S (P x)`` added by a forward hook; ``P`` and ``S`` are new
   parameters, added to the optimizer as one extra parameter group that copies the
   hyper-parameters of the first group (so create LR schedulers after ``setup``).
7. **Export** (``export.py``): ``finalize()`` bakes ``W ⊙ m`` (SLoRB, when on, stays as a small
   dense side path); `sparse_ast.to_semi_structured` converts 2:4 layers to torch's
   semi-structured sparse tensors on CUDA.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import nn

from sparse_ast.config import ASTConfig
from sparse_ast.distill import Distiller
from sparse_ast.layers import (
    default_lm_targets,
    is_conv1d,
    linear_view,
    mask_scores,
    run_batches,
)
from sparse_ast.optim import ASTAdamW
from sparse_ast.slorb import add_slorb, slorb_forward_hook
from sparsecore import NM, MethodConfig, Pattern, PruningMethod, Target
from sparsecore.calibration import StatisticsHooks
from sparsecore.method import Batch, LossFn
from sparsecore.select import select
from sparsecore.taxonomy import Taxonomy

__all__ = ["AdaptiveSparseTrainer"]


class AdaptiveSparseTrainer(PruningMethod):
    """AST on a sparsecore mask set (``ste`` mode). See the module docstring for the algorithm.

    Args:
        config: An `sparse_ast.ASTConfig`.
        **overrides: Config fields, e.g. ``srste_decay=6e-5, mask_update_every=10``.
    """

    taxonomy: ClassVar[Taxonomy | None] = Taxonomy(
        ("n:m",),
        "during",
        "dense-to-sparse",
        "dynamic",
        note="starts from a dense (pretrained) model; N:M masks recomputed from the dense weights",
    )
    #: The ``sparse bench`` scenario this method is shown in (sparsecore.bench.scenarios).
    bench_scenario: ClassVar[str] = "lm-ast"

    name = "ast"
    config_class: ClassVar[type[MethodConfig]] = ASTConfig
    mask_mode = "ste"
    supported_patterns: ClassVar[tuple[type[Pattern], ...]] = (NM,)
    needs_calibration: ClassVar[bool] = False
    config: ASTConfig

    @classmethod
    def bench_config(cls, total_steps: int, sparsity: float | None) -> dict[str, Any]:
        """Config overrides for one ``sparse bench`` run, fitted to the run's length.

        * SLoRB groups of ``k = 4`` inputs: the official k = 16 does not divide the bench models'
          input widths (MNIST-1D has 40 features); 2:4 already requires every pruned width to be
          a multiple of 4, so k = 4 fits every model AST can prune.
        * The decay ramp ``increase_steps`` is a quarter of the run (official: 10k of 40k
          iterations), not the fixed 10k default, which a short run would never finish.
        * Loss weights: the bench loop computes ``task_loss + regularization()`` (task weight
          1), so ``alpha_kl`` becomes ``alpha_kl / alpha_task`` (0.67 / 0.33) and
          ``alpha_squarehead`` likewise: the official *ratio* of the terms is kept; the whole
          loss is ``1 / alpha_task`` times the official one (the same under Adam; under SGD
          an LR scaled by that factor).
        """
        defaults = ASTConfig()
        weight = defaults.alpha_task
        return {
            "slorb_k": 4,
            "increase_steps": max(1, total_steps // 4),
            "alpha_kl": defaults.alpha_kl / weight,
            "alpha_squarehead": defaults.alpha_squarehead / weight,
        }

    def __init__(self, config: ASTConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.teacher: nn.Module | None = None
        #: ``||X_j||_2`` per target (after `calibrate`).
        self.input_norms: dict[str, torch.Tensor] | None = None
        #: ``(step, flipped entries)`` at every mask recomputation.
        self.flip_history: list[tuple[int, int]] = []
        #: λ_t used by the last optimizer step.
        self.current_decay = 0.0
        self._layers: dict[str, nn.Module] = {}
        self._conv1d: dict[str, bool] = {}
        self._distiller: Distiller | None = None
        self._slorb_params: list[nn.Parameter] = []
        self._slorb_handles: dict[str, torch.utils.hooks.RemovableHandle] = {}

    # ------------------------------------------------------------------ set-up
    def with_teacher(self, teacher: nn.Module) -> AdaptiveSparseTrainer:
        """Use ``teacher`` (frozen) instead of a copy of the dense model. Call before setup."""
        if not isinstance(teacher, nn.Module):
            raise TypeError(f"teacher must be a torch.nn.Module, got {type(teacher).__name__}")
        self.teacher = teacher
        return self

    def setup(
        self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
    ) -> AdaptiveSparseTrainer:
        """Add masks (and SLoRB, and the teacher) to ``model``; hook into ``optimizer``.

        ``targets=None`` resolves here to `sparse_ast.layers.default_lm_targets`, and
        ``self.config.targets`` then lists the chosen names.
        """
        if self.config.targets is None and isinstance(model, nn.Module):
            inner = (
                model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
            )
            names = tuple(default_lm_targets(inner))
            self.config = dataclasses.replace(self.config, targets=names)
        super().setup(model, optimizer)
        return self

    def validate(self, model: nn.Module, targets: list[Target]) -> None:  # noqa: D102
        cfg = self.config
        m = cfg.pattern.m  # type: ignore[union-attr]
        for t in targets:
            module = model.get_submodule(t.module_name)
            conv = is_conv1d(module)
            if not (isinstance(module, nn.Linear) or conv) or t.param_name != "weight":
                raise ValueError(
                    f"targets: AST prunes Linear / Conv1D weights; {t.name!r} is a "
                    f"{type(module).__name__}.{t.param_name}"
                )
            weight = getattr(module, t.param_name)
            in_features = weight.shape[0] if conv else weight.shape[1]
            if in_features % m:
                raise ValueError(
                    f"pattern: input dim {in_features} of {t.name!r} not divisible by {m}"
                )
            if cfg.slorb and in_features % cfg.slorb_k:
                raise ValueError(
                    f"slorb_k={cfg.slorb_k} does not divide the input dim {in_features} "
                    f"of {t.name!r}"
                )
        if cfg.distill and self.teacher is None:
            self.teacher = copy.deepcopy(model)

    def init_masks(self) -> None:  # noqa: D102
        assert self.model is not None
        for name, t in self.masks.targets.items():
            module = self.model.get_submodule(t.module_name)
            self._layers[name] = module
            self._conv1d[name] = is_conv1d(module)
        self.masks.update_all(self.compute_masks())
        if self.config.slorb:
            self._init_slorb()
        if self.config.distill and self.teacher is not None:
            cfg = self.config
            self._distiller = Distiller(
                self.model, self.teacher, cfg.temperature, cfg.alpha_kl, cfg.alpha_squarehead
            )
        if self.masks.optimizer is not None:
            self._register_optimizer(self.masks.optimizer)

    def attach(self, optimizer: torch.optim.Optimizer) -> None:  # noqa: D102
        super().attach(optimizer)
        self._register_optimizer(optimizer)

    def _register_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        new = [p for p in self._slorb_params if id(p) not in held and p.requires_grad]
        if new:
            options = {k: v for k, v in optimizer.param_groups[0].items() if k != "params"}
            optimizer.add_param_group({**options, "params": new})
        if isinstance(optimizer, ASTAdamW):
            optimizer.set_masks({self.masks.param(n): self.masks.mask(n) for n in self.masks.names})

    # ------------------------------------------------------------------ masks
    def target_pattern(self, name: str) -> NM:
        """The N:M pattern of ``name`` in its stored layout (dim 0 for ``Conv1D``).

        sparsecore's default ``pattern_for`` transposes the config's input-dimension pattern for
        Hugging Face ``Conv1D`` weights, so this is simply the target's pattern.
        """
        return self.masks.targets[name].pattern  # type: ignore[return-value]

    def scores(self) -> dict[str, torch.Tensor]:
        """Current mask scores per target (``|W|`` or Wanda) in the stored layout."""
        wanda = self.config.mask_metric == "wanda" and self.input_norms is not None
        return {
            name: mask_scores(param, self._conv1d[name], self.input_norms[name] if wanda else None)
            for name, param in self.masks.params().items()
        }

    def compute_masks(self) -> dict[str, torch.Tensor]:
        """N:M keep-masks from the current dense weights (not applied)."""
        return {
            name: select(s, 1.0, self.target_pattern(name), name=name)
            for name, s in self.scores().items()
        }

    def recompute_masks(self) -> int:
        """Recompute every mask from the dense weights; returns the number of flipped entries."""
        keeps = self.compute_masks()
        flips = sum(int((keeps[n] != self.masks.mask(n)).sum()) for n in keeps)
        self.masks.update_all(keeps)
        return flips

    @property
    def flip_rate(self) -> float:
        """Fraction of target entries flipped at the last recomputation (0 before any)."""
        if not self.flip_history:
            return 0.0
        total = sum(m.numel() for m in self.masks.masks().values())
        return self.flip_history[-1][1] / total

    # ------------------------------------------------------------------ SLoRB
    def _init_slorb(self) -> None:
        cfg = self.config
        for name, param in self.masks.params().items():
            conv = self._conv1d[name]
            new = add_slorb(
                self._layers[name],
                linear_view(param.detach(), conv),
                linear_view(self.masks.mask(name), conv),
                cfg.slorb_k,
                cfg.slorb_init,
                cfg.slorb_trainable_projection,
                self.generator,
            )
            self._slorb_params.extend(new)
            if name not in self._slorb_handles:
                handle = self._layers[name].register_forward_hook(slorb_forward_hook)
                self._slorb_handles[name] = handle

    def slorb_parameters(self) -> list[nn.Parameter]:
        """The SLoRB parameters ``P`` and ``S`` of every target (empty without SLoRB)."""
        return list(self._slorb_params)

    # ------------------------------------------------------------------ step hooks
    def on_before_optimizer_step(self) -> None:  # noqa: D102
        if self.config.mask_metric == "wanda" and self.input_norms is None:
            raise RuntimeError("mask_metric='wanda' needs calibrate(batches) before training")
        decay = self.config.decay_at(self.step)
        self.current_decay = decay
        optimizer = self.masks.optimizer
        if isinstance(optimizer, ASTAdamW):
            optimizer.srste_decay = decay
            return
        if decay == 0.0:
            return
        with torch.no_grad():
            for name, param in self.masks.params().items():
                term = param.detach() * ~self.masks.mask(name) * decay
                if param.grad is None:
                    param.grad = term
                else:
                    param.grad.add_(term)

    def on_after_optimizer_step(self) -> None:  # noqa: D102
        every = self.config.mask_update_every
        if every is not None and (self.step - 1) % every == 0:
            self.flip_history.append((self.step, self.recompute_masks()))

    def regularization(self) -> torch.Tensor:
        """``alpha_kl * T² KL + alpha_squarehead * SquareHead`` for the last training forward."""
        if self._distiller is None:
            return torch.zeros(())
        return self._distiller.loss()

    def loss(self, task_loss: torch.Tensor) -> torch.Tensor:
        """The official total: ``alpha_task * task_loss + regularization()``."""
        return self.config.alpha_task * task_loss + self.regularization()

    # ------------------------------------------------------------------ calibration
    def calibrate(self, batches: Iterable[Batch], loss_fn: LossFn | None = None) -> None:
        """Collect ``||X_j||_2`` on the *dense* model (masks off, SLoRB off, eval mode).

        With ``mask_metric="wanda"`` the masks (and SLoRB's initialisation) are then recomputed.
        Batches may be input tensors, ``(x, y)`` pairs or dicts of model kwargs.
        """
        model = self.model
        if model is None:
            raise RuntimeError("call setup(model, optimizer) before calibrate")
        saved = {n: m.clone() for n, m in self.masks.masks().items()}
        handles, self._slorb_handles = self._slorb_handles, {}
        for handle in handles.values():
            handle.remove()
        if self._distiller is not None:
            self._distiller.enabled = False
        was_training = model.training
        model.eval()
        try:
            for mask in self.masks.masks().values():
                mask.fill_(True)
            with StatisticsHooks(self._layers) as stats:
                seen = run_batches(model, batches)
        finally:
            for name, mask in self.masks.masks().items():
                mask.copy_(saved[name])
            model.train(was_training)
            if self._distiller is not None:
                self._distiller.enabled = True
            for name in handles:
                self._slorb_handles[name] = self._layers[name].register_forward_hook(
                    slorb_forward_hook
                )
        if seen == 0:
            raise ValueError("batches is empty: calibration needs at least one batch")
        self.input_norms = {
            n: s.input_norms.float() for n, s in stats.stats.items() if s.tokens > 0
        }
        if self.config.mask_metric == "wanda":
            self.masks.update_all(self.compute_masks())
            if self.config.slorb:
                self._init_slorb()

    # ------------------------------------------------------------------ resume / finalize
    def extra_state(self) -> dict[str, Any]:  # noqa: D102
        state: dict[str, Any] = {
            "flip_history": [list(item) for item in self.flip_history],
            "input_norms": self.input_norms,
        }
        if self.teacher is not None and self.config.distill:
            state["teacher"] = self.teacher.state_dict()
        return state

    def load_extra_state(self, state: dict[str, Any]) -> None:  # noqa: D102
        self.flip_history = [(int(s), int(f)) for s, f in state["flip_history"]]
        self.input_norms = state["input_norms"]
        if "teacher" in state and self.teacher is not None:
            self.teacher.load_state_dict(state["teacher"])

    def finalize(self) -> nn.Module:
        """Remove the teacher and hooks, bake ``W ⊙ m``; SLoRB (if on) stays on its layers."""
        if self._distiller is not None:
            self._distiller.remove()
            self._distiller = None
        self.teacher = None
        return super().finalize()

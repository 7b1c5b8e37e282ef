"""Light-PEFT as a sparsecore method: masked early pruning of the foundation model and the PEFT.

Paper: Naibin Gu, Peng Fu, Xiyu Liu, Bowen Shen, Zheng Lin & Weiping Wang, "Light-PEFT:
Lightening Parameter-Efficient Fine-Tuning via Early Pruning", Findings of ACL 2024,
arXiv 2406.03792. Official code: github.com/gccnlp/Light-PEFT (``NLU/estimate.py``,
``NLU/trainer_base.py``, ``NLU/nlu_utils.py``, ``peft/src/peft/tuners/lora.py``,
``models/hf_roberta/modeling_roberta.py``, ``scripts/*.sh``).

Use (plain loop; the Trainer path is `sparse_lightpeft.trainer`)::

    model = add_lora(bert, r=8, alpha=16, dropout=0.05, modules_to_save=["classifier"])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-4)
    method = LightPEFT(estimate_steps=800).setup(model, opt)   # masks get their own group
    for batch in loader:                                        # stage 1, then in-place stage 2
        loss = model(**batch).loss + method.regularization()
        opt.zero_grad(); loss.backward(); opt.step()
    small = method.lighten()    # plain smaller HF model + smaller peft adapter (physical)

The two stages, inside one optimizer-step lifecycle:

1. **Early estimation** (steps ``< estimate_steps``): one trainable gate per head (multiplying
   the head's context vector, where the official ``early_attn_mask`` multiplies the attention
   probabilities) and per FFN neuron (multiplying the intermediate activation, the official
   ``early_ffn_mask``), through the core's `sparsecore.structures.GroupMasker`. The loss gets
   ``λ (Σ|m_h| + Σ|m_f|)`` (`regularization`); the gates are a parameter group of their own
   with ``lr × mask_lr_coef``. Over the second half of the steps the LoRA rank importance and
   the module importance ``p2`` are averaged (`sparse_lightpeft.importance`).
2. **Pruning** (after step ``estimate_steps``): heads and neurons with the lowest final gate
   values go (`sparse_lightpeft.selection`); the projections' rows / columns are masked (hard
   masks, exactly zero), the gates become fixed 0/1, the LoRA rows / columns that feed removed
   heads or neurons are cut, the lowest-``p2`` LoRA modules are dropped and the globally
   least important ranks removed (zeroed and kept at zero after every step). Training then
   continues as the fine-tuning stage, or `lighten` builds the physically smaller model and
   adapter to fine-tune (what the paper does, and what makes training faster).

Choices:

* [choice] Mask targets are the projection weights a removal deletes (query/key/value and FFN
  input rows, attention-output and FFN-output columns), so the reported sparsity is the
  fraction of those weights removed; with equal head and FFN ratios it equals the ratio.
* [choice] After pruning the kept gates are set to 1, as the official ``set_mask(init_mask=False)``
  does before fine-tuning (the mask values are not folded into the weights).
* [choice] BERT / RoBERTa encoders only (the official code's models); Llama / GPT-2 layouts are
  refused with a ``ValueError``.
* [choice] The gates are float32 parameters in a ``lightpeft_gates`` submodule of the model (so
  they are in its ``state_dict`` and resume exactly); `finalize` removes it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import nn

from sparse_lightpeft.config import LightPEFTConfig
from sparse_lightpeft.importance import ImportanceRecorder, lora_layers
from sparse_lightpeft.plan import PrunePlan, lora_feature_keeps, projection_targets
from sparse_lightpeft.selection import select_modules, select_ranks, select_units
from sparsecore import MethodConfig, PruningMethod, peft_groups
from sparsecore.patterns import Channel, Pattern
from sparsecore.structures import GroupMasker, describe
from sparsecore.taxonomy import Taxonomy

__all__ = ["GATES", "LightPEFT"]

#: Name of the submodule holding the trainable gates.
GATES = "lightpeft_gates"


class _Gates(nn.Module):
    def __init__(self, heads: list[int], ffn: list[int], device: torch.device) -> None:
        super().__init__()
        self.heads = nn.ParameterList([nn.Parameter(torch.ones(h, device=device)) for h in heads])
        self.ffn = nn.ParameterList([nn.Parameter(torch.ones(f, device=device)) for f in ffn])


class LightPEFT(PruningMethod):
    """Light-PEFT (see the module docstring).

    Args:
        config: A `sparse_lightpeft.LightPEFTConfig`.
        **overrides: Config fields (``sparsity``, ``estimate_steps``, ``module_ratio``, ...).
    """

    taxonomy: ClassVar[Taxonomy | None] = Taxonomy(
        ("head", "channel", "low-rank"),
        "during",
        "dense-to-sparse",
        "static",
        note="heads / FFN neurons and LoRA modules / ranks removed once after early estimation",
    )
    #: Shown by `sparse bench` in its own scenario (its reproduction at --quick scale).
    bench_scenario: ClassVar[str] = "peft-encoder"

    name: ClassVar[str] = "lightpeft"
    config_class: ClassVar[type[MethodConfig]] = LightPEFTConfig
    supported_patterns: ClassVar[tuple[type[Pattern], ...]] = (Channel,)
    config: LightPEFTConfig

    def __init__(self, config: LightPEFTConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self._axes: dict[str, int] = {}
        self.gates: _Gates | None = None
        self.recorder: ImportanceRecorder | None = None
        self.masker: GroupMasker | None = None
        self.plan: PrunePlan | None = None
        self._lora_cache: tuple[PrunePlan, dict[str, nn.Module], dict[str, Any]] | None = None

    # ------------------------------------------------------------------ setup
    def setup(
        self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
    ) -> PruningMethod:
        """Validate, add the hard masks, gates and importance hooks, then join ``optimizer``.

        The optimizer must hold every *trainable* target (the frozen projections of a peft
        model are masked but not optimised); the gates are moved into a group of their own.

        Raises:
            RuntimeError: Already set up.
            TypeError: ``model`` is not an ``nn.Module`` / ``optimizer`` not an optimizer.
            ValueError: Not a BERT/RoBERTa model, unknown ``targets``, an optimizer over other
                parameters, meta or non-finite weights (all before the model is touched).
        """
        model = peft_groups.unwrap_for_setup(model, GATES)
        layout = describe(model)
        if layout.family != "bert":
            raise ValueError(
                f"model: Light-PEFT supports BERT/RoBERTa encoders, got the {layout.family!r} "
                "family"
            )
        axes = projection_targets(model, layout)
        peft_groups.check_target_names(self.config.targets, axes)
        peft_groups.check_trainable_inputs(model, optimizer, axes)
        self._axes = axes
        self.config = dataclasses.replace(self.config, targets=tuple(axes))
        super().setup(model, None)
        if optimizer is not None:
            self.attach(optimizer)
        return self

    def pattern_for(self, model: nn.Module, name: str) -> Pattern:  # noqa: D102
        return Channel(self._axes[name])

    def init_masks(self) -> None:
        """Create the gates, their hooks and the importance recorder (rolled back on error)."""
        model = self.model
        assert model is not None
        layout = describe(model)
        device = layout.embeddings[0].weight.device
        self.gates = _Gates(
            [lay.heads for lay in layout.layers],
            [lay.intermediate for lay in layout.layers],
            device,
        )
        model.add_module(GATES, self.gates)
        self.masker = GroupMasker(
            model, {"heads": list(self.gates.heads), "ffn": list(self.gates.ffn)}
        )
        self.recorder = ImportanceRecorder(model, lora_layers(model))
        self._sync()

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Hook into ``optimizer`` after `join_optimizer` (see there)."""
        self.join_optimizer(optimizer)
        super().attach(optimizer)

    def join_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Add the method's parameter groups to ``optimizer`` (idempotent).

        The gates move into a group of their own (``lr × mask_lr_coef``, the other options of
        the first group). Frozen targets (a peft model's foundation weights) join a group with
        ``lr=0`` and no gradient, so that the core's mask set, which masks every target after
        each step, can hook in; the optimizer never changes them. Call it (or `setup` with the
        optimizer) before building an LR scheduler, which counts the groups.

        Raises:
            ValueError: A trainable target is missing from ``optimizer``.
        """
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {optimizer!r}")
        peft_groups.add_frozen_targets(optimizer, self.masks.params())
        if self.gates is None:
            return
        base = optimizer.param_groups[0]
        lr = float(base.get("lr", optimizer.defaults.get("lr", 1e-3))) * self.config.mask_lr_coef
        peft_groups.add_own_group(optimizer, self.gates.parameters(), "lightpeft_gates", lr)

    # ------------------------------------------------------------------ schedule
    @property
    def pruned(self) -> bool:
        """Whether stage 2 has started (derived from the step, so resume is exact)."""
        return self.step >= self.config.estimate_steps

    def _sync(self) -> None:
        t = self.config.estimate_steps
        if self.recorder is not None:
            self.recorder.active = t // 2 <= self.step < t
        if self.gates is not None:
            for p in self.gates.parameters():
                p.requires_grad_(not self.pruned)

    def regularization(self) -> torch.Tensor:
        """``λ (Σ|m_h| + Σ|m_f|)`` during estimation; 0 afterwards."""
        if self.pruned or self.gates is None or self.config.l1 == 0:
            return torch.zeros(())
        total = sum(p.abs().sum() for p in self.gates.parameters())
        return self.config.l1 * total

    def on_before_optimizer_step(self) -> None:  # noqa: D102
        if self.recorder is not None:
            self.recorder.record_ranks()

    def on_after_optimizer_step(self) -> None:  # noqa: D102
        if self.step == self.config.estimate_steps:
            self.prune()
        self._sync()
        if self.plan is not None:
            self._zero_lora()

    # ------------------------------------------------------------------ stage 2
    @torch.no_grad()
    def prune(self) -> PrunePlan:
        """Select and mask heads, neurons, LoRA modules and ranks (see the module docstring)."""
        assert self.gates is not None and self.recorder is not None and self.model is not None
        cfg = self.config
        heads = select_units([p.detach() for p in self.gates.heads], cfg.attn_ratio, cfg.attn_scope)
        ffn = select_units([p.detach() for p in self.gates.ffn], cfg.ffn_fraction, cfg.ffn_scope)
        p2 = self.recorder.p2_scores()
        ranks = self.recorder.rank_scores()
        keep_modules = select_modules(p2, cfg.module_ratio) if p2 else {}
        kept = {n: s for n, s in ranks.items() if keep_modules.get(n, True)}
        rank_keep = select_ranks(kept, cfg.rank_ratio, cfg.rank_scope) if kept else {}
        for name in ranks:
            if name not in rank_keep:
                rank_keep[name] = torch.zeros(ranks[name].numel(), dtype=torch.bool)
        self.plan = PrunePlan(
            heads, ffn, rank_keep, dict(p2), {n: s.clone() for n, s in ranks.items()}
        )
        self._apply_plan()
        return self.plan

    @torch.no_grad()
    def _apply_plan(self) -> None:
        assert self.plan is not None and self.gates is not None and self.model is not None
        layout = describe(self.model)
        for gate, keep in zip(self.gates.heads, self.plan.heads, strict=True):
            gate.copy_(keep.to(gate.dtype))
        for gate, keep in zip(self.gates.ffn, self.plan.ffn, strict=True):
            gate.copy_(keep.to(gate.dtype))
        for name, keep in self.plan.weight_masks(layout, self._axes, self.model).items():
            self.masks.update(name, keep.to(self.masks.mask(name).device))
        self._zero_lora()

    @torch.no_grad()
    def _zero_lora(self) -> None:
        assert self.plan is not None and self.model is not None
        if self._lora_cache is None or self._lora_cache[0] is not self.plan:
            features = lora_feature_keeps(self.model, self.plan)
            self._lora_cache = (self.plan, lora_layers(self.model), features)
        _, layers, features = self._lora_cache
        for name, module in layers.items():
            adapter = module.active_adapters[0]
            a, b = module.lora_A[adapter].weight, module.lora_B[adapter].weight
            rank = self.plan.ranks[name].to(a.device)
            a[~rank] = 0
            b[:, ~rank] = 0
            rows, cols = features.get(name, (None, None))
            peft_groups.zero_lora_slices(module, rows, cols, adapter)

    def lighten(self, example_inputs: dict[str, torch.Tensor] | None = None) -> Any:
        """The physically smaller model and adapter (`sparse_lightpeft.lighten.lighten`).

        Prunes first if stage 2 has not started. The method stays set up.
        """
        from sparse_lightpeft.lighten import lighten

        if self.plan is None:
            self.prune()
        assert self.model is not None and self.plan is not None
        return lighten(self.model, self.plan, example_inputs, exclude=(GATES,))

    # ------------------------------------------------------------------ resume / end
    def schedule_gap(self) -> str | None:  # noqa: D102
        if not self.pruned:
            return (
                f"LightPEFT: estimate_steps={self.config.estimate_steps} not reached after "
                f"{self.step} steps (pruned at finalize)"
            )
        return None

    def extra_state(self) -> dict[str, Any]:  # noqa: D102
        state: dict[str, Any] = {"recorder": self.recorder.state() if self.recorder else None}
        state["plan"] = self.plan.state() if self.plan is not None else None
        return state

    def load_extra_state(self, state: dict[str, Any]) -> None:  # noqa: D102
        if self.recorder is not None and state.get("recorder") is not None:
            self.recorder.load(state["recorder"])
        self.plan = PrunePlan.from_state(state["plan"]) if state.get("plan") else None
        self._sync()

    def _teardown(self) -> None:
        peft_groups.remove_parts(self.model, GATES, self.masker, self.recorder)
        self.masker = self.recorder = self.gates = None
        self._lora_cache = None

    def _settle(self) -> None:
        if self.plan is None:
            self.prune()
        self._zero_lora()
        self._teardown()

    def finalize(self) -> nn.Module:
        """Prune if stage 2 has not started, bake the masks, remove gates, hooks and buffers."""
        return peft_groups.finalize_fixed(self, self._settle)

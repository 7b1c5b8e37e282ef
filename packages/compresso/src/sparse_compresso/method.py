"""Compresso as a sparsecore method: L0 gates on heads / FFN channels / hidden dims, with LoRA.

Paper: Song Guo, Jiahang Xu, Li Lyna Zhang & Mao Yang, "Compresso: Structured Pruning with
Collaborative Prompting Learns Compact Large Language Models", arXiv 2310.05015. Official code:
github.com/microsoft/Moonlit ``Compresso/`` (``models/l0_module.py``,
``trainer/compresso_trainer.py``, ``tasks/alpaca.py``, ``scripts/train.sh``, ``finetune.sh``).

Use (a plain loop; every training text wrapped in the collaborative prompt,
`sparse_compresso.prompt`)::

    model = add_lora(llama, r=8, alpha=8, target_modules=["q_proj", "v_proj"])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-5)
    method = Compresso(sparsity=0.3, prune_steps=1000).setup(model, opt)
    for batch in loader:                  # L0 phase, then (fixed gates) the fine-tuning phase
        loss = model(**batch).loss + method.regularization()
        opt.zero_grad(); loss.backward(); opt.step()
    small = method.compress()             # merged LoRA, heads / channels / dims removed

What happens, as in the official trainer:

1. **L0 phase** (steps ``< prune_steps``): before every training forward the gates are sampled
   (`sparse_compresso.hard_concrete.sample_gate`) and applied where CoFi / Compresso put
   ``head_z``, ``intermediate_z`` and ``hidden_z`` (`sparsecore.structures.GroupMasker`).
   `regularization` is the Lagrangian ``λ₁ (ŝ - t) + λ₂ (ŝ - t)²`` with the warmed-up target
   ``t``. At the user's ``optimizer.step()`` the method steps its own two optimizers first:
   AdamW on ``log α`` at ``reg_lr`` and AdamW on ``λ₁, λ₂`` *maximising* at ``reg_lr`` (the
   official ``lr = -reg_learning_rate`` with no weight decay is the same update); then ``log α``
   is clamped. Only LoRA (the user's optimizer) and the gates train; the base stays frozen.
2. **Fixed gates** (from step ``prune_steps``): the deterministic gates
   (`sparse_compresso.hard_concrete.deterministic_gate`, soft kept values) act in every forward,
   the pruned rows / columns of the projections are hard-masked (exact zeros, the conformance
   contract), and training continues as the official fine-tuning run (``finetune.sh``: the
   saved ``zs`` filled into every input, LoRA only). Evaluation always uses the deterministic
   gates.
3. `compress`: merge LoRA (`sparsecore.adapters.merge_lora`) and remove the gated-off
   structures physically (`sparsecore.structures.shrink`, which folds the kept soft gate values
   into the weights and checks the result against the masked model) → a plain, smaller Hugging
   Face model (``save_pretrained``; reload with `sparsecore.structures.load_pretrained`).

Choices:

* [choice] The two phases are one method run (the official code runs two trainings, the second
  loading ``zs.pt``); ``prune_steps`` is the boundary.
* [choice] The gate noise comes from the method's generator (``config.seed`` salted, never the
  weight seed), so resume is exact; its state is in `state_dict`.
* [choice] `finalize` bakes the hard masks, removes the gate parameters and the sampling hook,
  and leaves a `GroupMasker` with the fixed deterministic gates attached (``method.masker``),
  so the returned model computes what it computed in evaluation; `compress` is the way to a
  plain smaller model. (ATP and Light-PEFT remove every hook at `finalize` because their fixed
  gates are 0/1; Compresso's kept gates are soft and its hidden gates change the norms'
  statistics, which no same-shape plain model reproduces: see `Compresso.finalize`.)
* [choice] Llama-family decoders only (the official ``modeling_llama.py``); GQA gates cover a
  key/value group.
* [choice] The optimizer may hold only trainable parameters (LoRA); the frozen projection
  weights join it in a group with ``lr = 0`` so that the core's hard masks can hook in. An
  optimizer that already holds the gate parameters is refused (they would be stepped twice).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from sparse_compresso.config import CompressoConfig
from sparse_compresso.l0 import L0Gates, target_sparsity
from sparse_compresso.weights import projection_weights, weight_keeps
from sparsecore import MethodConfig, PruningMethod, peft_groups
from sparsecore.patterns import Pattern, Unstructured
from sparsecore.structures import GroupMasker, describe
from sparsecore.taxonomy import Taxonomy

__all__ = ["GATES", "Compresso"]

#: Name of the submodule holding ``log α`` and ``λ₁, λ₂``.
GATES = "compresso_l0"


class Compresso(PruningMethod):
    """Compresso (see the module docstring).

    Args:
        config: A `sparse_compresso.CompressoConfig`.
        **overrides: Config fields (``sparsity``, ``prune_steps``, ``reg_lr``, ...).
    """

    taxonomy: ClassVar[Taxonomy | None] = Taxonomy(
        ("head", "channel"),
        "during",
        "dense-to-sparse",
        "static",
        note="hard-concrete L0 gates on heads, FFN channels and hidden dims, trained with LoRA "
        "under a Lagrangian size constraint; fixed after the L0 phase",
    )
    #: Shown by `sparse bench` in its own scenario (its reproduction at --quick scale).
    bench_scenario: ClassVar[str] = "lm-compresso"

    name: ClassVar[str] = "compresso"
    config_class: ClassVar[type[MethodConfig]] = CompressoConfig
    supported_patterns: ClassVar[tuple[type[Pattern], ...]] = (Unstructured,)
    config: CompressoConfig

    def __init__(self, config: CompressoConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self._weights: dict[str, tuple[int, str]] = {}
        self.gates: L0Gates | None = None
        self.masker: GroupMasker | None = None
        self._hook: Any = None
        self._gate_opt: torch.optim.Optimizer | None = None
        self._lambda_opt: torch.optim.Optimizer | None = None
        self.last_expected_sparsity: float | None = None
        self.final_gates: dict[str, Any] | None = None
        self._final_l0: L0Gates | None = None

    # ------------------------------------------------------------------ setup
    def setup(
        self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
    ) -> PruningMethod:
        """Validate, add the gates, their hooks and the hard masks, then join ``optimizer``.

        Raises:
            RuntimeError: Already set up.
            TypeError: ``model`` is not an ``nn.Module`` / ``optimizer`` not an optimizer.
            ValueError: Not a Llama-family model, layers of unequal widths, unknown ``targets``,
                an optimizer over other parameters or holding the gates, meta or non-finite
                weights (all before the model is touched).
        """
        if self._masks is not None:
            raise RuntimeError("Compresso is already set up on a model")
        model = peft_groups.unwrap_for_setup(model, GATES)
        layout = describe(model)
        weights = projection_weights(model, layout)
        peft_groups.check_target_names(self.config.targets, weights)
        L0Gates.check_layout(layout)
        peft_groups.check_trainable_inputs(model, optimizer, weights)
        self._weights = weights
        self.config = dataclasses.replace(self.config, targets=tuple(weights))
        super().setup(model, None)
        if optimizer is not None:
            self.attach(optimizer)
        return self

    def init_masks(self) -> None:
        """Create the gates, their optimizers and hooks (rolled back on error)."""
        model = self.model
        assert model is not None
        cfg = self.config
        layout = describe(model)
        device = layout.embeddings[0].weight.device
        gates = L0Gates(
            layout, cfg.prune, cfg.droprate_init, self.generator, cfg.temperature,
            cfg.magical_number,
        ).to(device)  # fmt: skip
        model.add_module(GATES, gates)
        self.gates = gates
        self._gate_opt = torch.optim.AdamW(gates.gate_parameters(), lr=cfg.reg_lr, weight_decay=0.0)
        self._lambda_opt = torch.optim.AdamW(
            gates.multipliers(), lr=cfg.reg_lr, weight_decay=0.0, maximize=True
        )
        self.masker = GroupMasker(model, gates.deterministic())
        self._hook = model.register_forward_pre_hook(self._before_forward)
        self._sync()

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Hook into ``optimizer`` (frozen projections join it with ``lr = 0``).

        Raises:
            TypeError: Not an optimizer.
            ValueError: It holds the gate parameters, or misses trainable targets.
        """
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {optimizer!r}")
        owned = {id(p) for group in optimizer.param_groups for p in group["params"]}
        if self.gates is not None and any(id(p) in owned for p in self.gates.parameters()):
            raise ValueError(
                f"optimizer holds the {GATES} gate parameters; build it over the LoRA parameters "
                "(Compresso steps the gates and multipliers with its own optimizers)"
            )
        peft_groups.add_frozen_targets(optimizer, self.masks.params())
        super().attach(optimizer)

    # ------------------------------------------------------------------ phases
    @property
    def fixed(self) -> bool:
        """Whether the gates are fixed (from step ``prune_steps``; derived, so resume is exact)."""
        return self.step >= self.config.prune_steps

    def _sync(self) -> None:
        if self.gates is not None:
            for p in self.gates.parameters():
                p.requires_grad_(not self.fixed)

    def _before_forward(self, module: nn.Module, _args: tuple) -> None:
        assert self.gates is not None and self.masker is not None
        if module.training and not self.fixed:
            self.masker.update(self.gates.sample(self.generator))
        else:
            self.masker.update(self.gates.deterministic())

    def target(self) -> float:
        """The Lagrangian's target sparsity at the current step."""
        cfg = self.config
        return target_sparsity(self.step, cfg.sparsity, cfg.warmup, cfg.scheduler)

    def regularization(self) -> torch.Tensor:
        """``λ₁ (ŝ - t) + λ₂ (ŝ - t)²`` in the L0 phase; 0 once the gates are fixed."""
        if self.fixed or self.gates is None:
            return torch.zeros(())
        loss, expected = self.gates.lagrangian(self.target())
        self.last_expected_sparsity = float(expected.detach())
        return loss

    def expected_sparsity(self) -> float:
        """The current ``ŝ`` (expected fraction of prunable weights removed)."""
        assert self.gates is not None
        with torch.no_grad():
            return float(self.gates.expected_sparsity())

    def group_masks(self) -> dict[str, Any]:
        """The deterministic gates (group masks; 0 = removed), detached copies."""
        if self.gates is None:
            if self.final_gates is None:
                raise RuntimeError("Compresso: call setup(model, optimizer) first")
            return copy.deepcopy(self.final_gates)
        return self.gates.deterministic()

    def pruned_sparsity(self) -> float:
        """Fraction of the prunable weights the deterministic gates remove."""
        gates = self.gates if self.gates is not None else self._final_l0
        if gates is None:
            raise RuntimeError("Compresso: call setup(model, optimizer) first")
        return 1.0 - gates.remaining_size(self.group_masks()) / gates.prunable_size

    def on_before_optimizer_step(self) -> None:  # noqa: D102
        if self.fixed or self.gates is None:
            return
        assert self._gate_opt is not None and self._lambda_opt is not None
        self._gate_opt.step()
        self._lambda_opt.step()
        self.gates.constrain()
        self._gate_opt.zero_grad(set_to_none=True)
        self._lambda_opt.zero_grad(set_to_none=True)

    def on_after_optimizer_step(self) -> None:  # noqa: D102
        if self.step == self.config.prune_steps:
            self.fix()
        self._sync()

    @torch.no_grad()
    def fix(self) -> None:
        """Fix the deterministic gates: hard-mask the pruned rows / columns of the projections."""
        assert self.model is not None and self.gates is not None
        layout = describe(self.model)
        params = self.masks.params()
        keeps = weight_keeps(layout, self._weights, params, self.gates.deterministic())
        for name, keep in keeps.items():
            self.masks.update(name, keep)

    # ------------------------------------------------------------------ results
    @torch.no_grad()
    def compress(
        self, example_inputs: Mapping[str, Any] | None = None, *, atol: float = 1e-5
    ) -> nn.Module:
        """A plain, smaller Hugging Face model: LoRA merged, gated-off structures removed.

        The method's model is not modified (a copy is merged and shrunk).

        Args:
            example_inputs: Inputs for `sparsecore.structures.shrink`'s exactness check.
            atol: Tolerance of that check (raise it for models with large logits).
        """
        from sparsecore.adapters import merge_lora
        from sparsecore.structures import shrink

        assert self.model is not None and self.masker is not None
        gates = self.group_masks()
        clone = self._plain_copy()
        if hasattr(clone, "peft_config"):
            clone = merge_lora(clone)
        return shrink(clone, gates, example_inputs, atol=atol)

    def _plain_copy(self) -> nn.Module:
        assert self.model is not None and self.masker is not None
        attached = self.masker.attached
        self.masker.remove()
        hook = self._hook
        if hook is not None:
            hook.remove()
        try:
            clone = copy.deepcopy(self.model)
        finally:
            if attached:
                self.masker._attach()
            if hook is not None:
                self._hook = self.model.register_forward_pre_hook(self._before_forward)
        if hasattr(clone, GATES):
            delattr(clone, GATES)
        if self._masks is not None:
            for name, target in self.masks.targets.items():
                module = clone.get_submodule(name.rpartition(".")[0])
                mask = getattr(module, target.buffer_name)
                getattr(module, target.param_name).masked_fill_(~mask, 0)
                delattr(module, target.buffer_name)
        return clone

    # ------------------------------------------------------------------ resume / end
    def schedule_gap(self) -> str | None:  # noqa: D102
        if not self.fixed:
            return (
                f"Compresso: prune_steps={self.config.prune_steps} not reached after "
                f"{self.step} steps (gates fixed at finalize)"
            )
        return None

    def extra_state(self) -> dict[str, Any]:  # noqa: D102
        if self._gate_opt is None or self._lambda_opt is None:
            return {}
        return {
            "gate_opt": self._gate_opt.state_dict(),
            "lambda_opt": self._lambda_opt.state_dict(),
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:  # noqa: D102
        if self._gate_opt is not None and "gate_opt" in state:
            self._gate_opt.load_state_dict(state["gate_opt"])
        if self._lambda_opt is not None and "lambda_opt" in state:
            self._lambda_opt.load_state_dict(state["lambda_opt"])
        self._sync()

    def finalize(self) -> nn.Module:
        """Fix the gates if needed, bake the masks, remove the gates and the sampling hook.

        The `GroupMasker` with the fixed deterministic gates stays attached (``method.masker``),
        so the model computes what it computed in evaluation; use `compress` for a plain model.
        Unlike ATP and Light-PEFT (0/1 decisions, so their hard-masked weights alone compute the
        gated function and their `finalize` removes every hook), no same-shape plain model
        computes Compresso's gated function: the kept gate values are soft (``σ(log α / β ·
        0.8)``, scaling head outputs, FFN channels and hidden dimensions), and a hidden-dimension
        gate makes every norm take its statistics over the kept dimensions only
        (`sparsecore.structures.masking.masked_norm`), which a full-width norm (dividing by the
        full width, with its ``eps``) cannot match by any weight edit. Only removing the
        dimensions does, which is `compress` (`sparsecore.structures.shrink` folds the soft
        values in). The hooks are not saved: ``save_pretrained`` on the returned model stores a
        model without the gates; save ``compress()`` instead. ``method.masker.remove()`` drops
        the hooks (the model then computes its ungated function).
        """
        return peft_groups.finalize_fixed(self, self._settle)

    def _settle(self) -> None:
        if not self.fixed:
            self.fix()
        assert self.gates is not None and self.masker is not None and self.model is not None
        self.final_gates = self.gates.deterministic()
        self.masker.update(self.final_gates)
        self._final_l0 = self.gates
        peft_groups.remove_parts(self.model, GATES, self._hook)
        self._hook = self.gates = None
        self._gate_opt = self._lambda_opt = None

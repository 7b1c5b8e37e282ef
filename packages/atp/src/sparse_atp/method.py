"""ATP as a sparsecore method: one-stage structural pruning while LoRA fine-tunes.

Paper: Lei Lu, Zhepeng Wang, Runxue Bao, Mengbing Wang, Fangyi Li, Yawen Wu, Weiwen Jiang, Jie
Xu, Yanzhi Wang & Shangqian Gao, "All-in-One Tuning and Structural Pruning for Domain-Specific
LLMs", arXiv 2412.14426. Official code (published after the paper, "version2.0", not complete):
github.com/GGGGxxxxxxxxr/One-click-Tuning-and-Pruning-for-Customized-LLMs (``hypernet_llm.py``,
``train_llm_disp.py``, ``alignment_function_llm.py``, ``main_llm_atp_disp.py``); read for the
details below, nothing copied.

Use (a plain loop; ``model`` a peft LoRA model from `sparsecore.adapters.add_lora`)::

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    method = ATP(sparsity=0.4, search_steps=200).setup(model, opt)  # the generator joins opt
    for ids in loader:
        loss = model(input_ids=ids, labels=ids).loss + method.regularization()
        opt.zero_grad(); loss.backward(); opt.step()
    small = method.compress()   # merge LoRA, remove the pruned groups: a plain smaller model

What happens:

1. **Decisions.** Before every training forward the generator (`sparse_atp.generator`) samples
   hard 0/1 decisions over every key/value head group and FFN channel (Gumbel-sigmoid, hard
   threshold, straight-through estimator). `sparsecore.structures.GroupMasker` multiplies each
   head's context vector and each channel's activation by its decision; on a peft model the
   hooks sit on the LoRA wrappers, so the mask acts on the whole ``W0 x + B A x`` path (the
   paper's *LoRA-aware forward*).
2. **Losses.** `regularization` adds ``λ_p · log(max(r, p)/min(r, p))`` (the parameter-budget
   penalty, `sparse_atp.budget`; gradients reach the generator only) and
   ``λ_s Σ_g (1 - d_g) ‖(W0 + BA)_g‖₂`` (the group lasso, `sparse_atp.lasso`; gradients reach
   the LoRA factors only) to the task loss.
3. **Alternation.** With ``alternate=True`` the optimizer step updates the generator on even
   steps and the LoRA factors on odd steps (the other side's gradients are dropped), so each
   update sees its own batch, as the paper alternates them through fine-tuning.
4. **Fixing.** After ``search_steps`` the decisions are fixed
   (`sparse_atp.budget.project_to_budget`); the base weights of the pruned groups are masked
   (exact zeros), the LoRA factors feeding or reading them are zeroed and kept at zero, and
   LoRA fine-tuning goes on under the fixed structure. `compress` merges and removes the
   groups physically.

Choices, labelled (and see the submodules):

* [choice] Alternation by optimizer step on consecutive batches of the one loader; the official
  code takes a generator step on a held-out batch and a LoRA step on a training batch in every
  iteration (two forwards an iteration).
* [choice] The generator step uses the hard STE decisions in the forward (the issue's "forward
  uses hard 0/1 decisions"); the official v2 feeds the soft values in the generator step and
  the hard ones in the LoRA step.
* [official] The generator stops after ``search_steps`` and LoRA fine-tuning continues with the
  last decisions (``--control-epochs`` < ``--epochs``).
* [choice] The generator's parameters are a parameter group of the user's optimizer with
  ``lr = generator_lr`` and no weight decay, and a submodule ``atp_generator`` of the model (so
  that its state resumes exactly); `finalize` removes it.
* [choice] Key/value head groups and FFN channels are the structures (the paper's heads and
  channels; the official v2 "DISP" space also prunes hidden dimensions per projection).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import nn

from sparse_atp.budget import GroupCosts, budget_penalty, project_to_budget, remaining_fraction
from sparse_atp.config import ATPConfig
from sparse_atp.generator import DecisionGenerator
from sparse_atp.lasso import group_lasso
from sparsecore import MethodConfig, PruningMethod, peft_groups
from sparsecore.method import method_seed
from sparsecore.patterns import Channel, Pattern
from sparsecore.structures import GroupMasker, describe, shrink
from sparsecore.taxonomy import Taxonomy

__all__ = ["ATP", "GENERATOR"]

#: Name of the model submodule holding the decision generator.
GENERATOR = "atp_generator"
_FAMILIES = ("llama", "qwen2", "mistral")


class ATP(PruningMethod):
    """All-in-One Tuning and Structural Pruning (see the module docstring).

    Args:
        config: A `sparse_atp.ATPConfig`.
        **overrides: Config fields (``sparsity``, ``search_steps``, ``lasso_weight``, ...).
    """

    taxonomy: ClassVar[Taxonomy | None] = Taxonomy(
        ("head", "channel"),
        "during",
        "dense-to-sparse",
        "dynamic",
        note="a trained generator re-decides heads / FFN channels while LoRA tunes, then fixes",
    )
    #: Shown by `sparse bench` in its own scenario (its reproduction at --quick scale).
    bench_scenario: ClassVar[str] = "domain-lm"

    name: ClassVar[str] = "atp"
    config_class: ClassVar[type[MethodConfig]] = ATPConfig
    supported_patterns: ClassVar[tuple[type[Pattern], ...]] = (Channel,)
    config: ATPConfig

    def __init__(self, config: ATPConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.costs: GroupCosts | None = None
        self.generator_net: DecisionGenerator | None = None
        self.masker: GroupMasker | None = None
        self.decisions: dict[str, torch.Tensor] | None = None
        self.fixed: tuple[torch.Tensor, torch.Tensor] | None = None
        self.history: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._layout: Any = None
        self._hook: Any = None
        self._optimizers: list[torch.optim.Optimizer] = []

    # ------------------------------------------------------------------ setup
    def setup(
        self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
    ) -> PruningMethod:
        """Validate, then add the masks, the generator and its hooks, and join ``optimizer``.

        Raises:
            RuntimeError: Already set up.
            TypeError: ``model`` is not an ``nn.Module`` / ``optimizer`` not an optimizer.
            ValueError: Not a Llama-family model, unknown ``targets``, an optimizer over other
                parameters, meta or non-finite weights (all before the model is touched).
        """
        model = peft_groups.unwrap_for_setup(model, GENERATOR)
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {optimizer!r}")
        layout = describe(model)
        if layout.family not in _FAMILIES:
            raise ValueError(f"model: ATP supports {_FAMILIES} decoders, got {layout.family!r}")
        costs = GroupCosts(model)
        peft_groups.check_target_names(self.config.targets, costs.axes)
        peft_groups.check_trainable_inputs(model, optimizer, costs.axes)
        self.costs, self._layout = costs, layout
        self.config = dataclasses.replace(self.config, targets=tuple(costs.axes))
        super().setup(model, None)
        if optimizer is not None:
            self.attach(optimizer)
        return self

    def pattern_for(self, model: nn.Module, name: str) -> Pattern:  # noqa: D102
        assert self.costs is not None
        return Channel(self.costs.axes[name])

    def init_masks(self) -> None:
        """Create the generator, the group-mask hooks and the decision hook."""
        model = self.model
        assert model is not None and self._layout is not None
        layout = self._layout
        device = layout.embeddings[0].weight.device
        heads = [lay.kv_heads for lay in layout.layers]
        channels = [lay.intermediate for lay in layout.layers]
        cfg = self.config
        self.masker = GroupMasker(
            model,
            {
                "heads": [torch.ones(h, device=device) for h in heads],
                "ffn": [torch.ones(c, device=device) for c in channels],
            },
        )
        self.generator_net = DecisionGenerator(
            heads,
            channels,
            cfg.embed_dim,
            cfg.hidden_dim,
            cfg.temperature,
            cfg.base,
            seed=method_seed(cfg.seed, "ATP-generator-init"),
        ).to(device)
        model.add_module(GENERATOR, self.generator_net)
        self._hook = model.register_forward_pre_hook(self._before_forward)
        self.history = []

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Add the generator's parameter group to ``optimizer`` and hook into it."""
        self.join_optimizer(optimizer)
        super().attach(optimizer)

    def join_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Add the generator group (``lr = generator_lr``, no weight decay) and a zero-lr group
        for the frozen targets, so the core's mask set can hook in (idempotent).
        """
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {optimizer!r}")
        peft_groups.add_frozen_targets(optimizer, self.masks.params())
        if self.generator_net is not None:
            peft_groups.add_own_group(
                optimizer,
                self.generator_net.parameters(),
                "atp_generator",
                self.config.generator_lr,
                weight_decay=0.0,
            )
        if optimizer not in self._optimizers:
            self._optimizers.append(optimizer)

    # ------------------------------------------------------------------ decisions
    @property
    def searching(self) -> bool:
        """Whether the generator is still being trained (derived from the step)."""
        return self.fixed is None and self.step < self.config.search_steps

    def _before_forward(self, module: nn.Module, args: tuple) -> None:
        if self.fixed is not None or self.generator_net is None:
            return
        if module.training:
            self.decisions = self.generator_net(self.generator, noise=True)
            self._apply(self.decisions["heads"], self.decisions["ffn"])
        else:
            with torch.no_grad():
                out = self.generator_net(noise=False)
            self._apply(out["heads"], out["ffn"])

    def _apply(self, heads: torch.Tensor, ffn: torch.Tensor) -> None:
        assert self.masker is not None
        self.masker.update({"heads": list(heads.unbind(0)), "ffn": list(ffn.unbind(0))})

    @torch.no_grad()
    def current_decisions(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The noise-free (or fixed) decisions as bool tensors ``(L, H)`` and ``(L, C)``."""
        if self.fixed is not None:
            return self.fixed
        assert self.generator_net is not None
        out = self.generator_net(noise=False)
        return out["heads"].bool(), out["ffn"].bool()

    def remaining(self) -> float:
        """Fraction of the prunable parameters the current decisions keep."""
        assert self.costs is not None
        heads, ffn = self.current_decisions()
        return float(remaining_fraction(heads.double(), ffn.double(), self.costs))

    def regularization(self) -> torch.Tensor:
        """``λ_p · R(r(d), p)`` (while searching) ``+ λ_s · group lasso`` of the pruned groups."""
        cfg = self.config
        total = torch.zeros(())
        if self.model is None or self.costs is None:
            return total
        if self.fixed is not None:
            heads, ffn = (t.float() for t in self.fixed)
        elif self.decisions is not None:
            heads, ffn = self.decisions["heads"], self.decisions["ffn"]
            if cfg.budget_weight > 0:
                r = remaining_fraction(heads, ffn, self.costs)
                total = total + cfg.budget_weight * budget_penalty(r, 1.0 - cfg.sparsity)
        else:
            return total
        if cfg.lasso_weight > 0 and self.fixed is None:
            lasso = group_lasso(self.model, heads, ffn, cfg.lasso_target, self._layout)
            total = total + cfg.lasso_weight * lasso.to(total.device)
        return total

    # ------------------------------------------------------------------ step hooks
    def on_before_optimizer_step(self) -> None:
        """Alternate: drop the LoRA gradients on generator steps and vice versa."""
        if not self.searching or not self.config.alternate or self.generator_net is None:
            return
        gen_ids = {id(p) for p in self.generator_net.parameters()}
        generator_turn = self.step % 2 == 0
        for optimizer in self._optimizers:
            for group in optimizer.param_groups:
                for p in group["params"]:
                    if (id(p) in gen_ids) != generator_turn:
                        p.grad = None

    def on_after_optimizer_step(self) -> None:  # noqa: D102
        if self.fixed is None:
            heads, ffn = self.current_decisions()
            self.history.append((heads.clone(), ffn.clone()))
            if self.step >= self.config.search_steps:
                self.fix()
        else:
            self._zero_lora()

    # ------------------------------------------------------------------ fixing
    @torch.no_grad()
    def fix(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Fix the decisions to the budget, mask the pruned base weights, zero their LoRA parts.

        Returns:
            The fixed ``(heads, ffn)`` bool decisions.
        """
        assert self.generator_net is not None and self.costs is not None
        if self.fixed is not None:
            return self.fixed
        head_logits, ffn_logits = self.generator_net.logits()
        heads, ffn = project_to_budget(
            head_logits.detach().cpu(), ffn_logits.detach().cpu(), self.costs, self.config.density
        )
        self._set_fixed(heads, ffn)
        return heads, ffn

    def _set_fixed(self, heads: torch.Tensor, ffn: torch.Tensor) -> None:
        assert self.costs is not None and self.generator_net is not None
        self.fixed = (heads.bool(), ffn.bool())
        device = self._layout.embeddings[0].weight.device
        self._apply(heads.float().to(device), ffn.float().to(device))
        params = self.masks.params()
        for name, keep in self.costs.weight_masks(heads, ffn, params).items():
            self.masks.update(name, keep.to(self.masks.mask(name).device))
        for p in self.generator_net.parameters():
            p.requires_grad_(False)
            p.grad = None
        self.decisions = None
        self._zero_lora()

    @torch.no_grad()
    def _zero_lora(self) -> None:
        """Zero the LoRA rows / columns that write or read pruned groups (exact removal)."""
        if self.fixed is None:
            return
        keep = self.masks.masks()
        names_of = {id(p): n for n, p in self.model.named_parameters(remove_duplicate=False)}
        for lay in self._layout.layers:
            for module, role in (
                *((m, "out") for m in (*lay.qkv, *lay.ffn_in)),
                *((m, "in") for m in (lay.attn_out, lay.ffn_out)),
            ):
                names = list(getattr(module, "active_adapters", []) or [])
                if not names or not hasattr(module, "lora_A") or names[0] not in module.lora_A:
                    continue
                mask = keep[names_of[id(module.base_layer.weight)]]
                if role == "out":
                    peft_groups.zero_lora_slices(module, rows=mask.any(1), adapter=names[0])
                else:
                    peft_groups.zero_lora_slices(module, cols=mask.any(0), adapter=names[0])

    def group_masks(self) -> dict[str, list[torch.Tensor]]:
        """The fixed decisions as `sparsecore.structures` group masks (bool, per layer)."""
        if self.fixed is None:
            raise RuntimeError("ATP.group_masks: the decisions are not fixed yet (call fix())")
        heads, ffn = self.fixed
        return {"heads": list(heads.unbind(0)), "ffn": list(ffn.unbind(0))}

    def compress(
        self, example_inputs: dict[str, torch.Tensor] | None = None, atol: float = 1e-5
    ) -> nn.Module:
        """Fix (if needed), finalize, merge the LoRA adapters and remove the pruned groups.

        Args:
            example_inputs: Keyword inputs for `sparsecore.structures.shrink`'s check.
            atol: Tolerance of that check (trained models with large logits may need ``1e-4``).

        Returns:
            A plain, physically smaller Hugging Face model; the method is no longer set up.
        """
        from sparsecore.adapters import merge_lora

        if self.fixed is None:
            self.fix()
        masks = self.group_masks()
        model = self.finalize()
        if hasattr(model, "peft_config"):
            model = merge_lora(model)
        return shrink(model, masks, example_inputs, atol=atol)

    # ------------------------------------------------------------------ resume / end
    def schedule_gap(self) -> str | None:  # noqa: D102
        if self.fixed is None:
            return (
                f"ATP: search_steps={self.config.search_steps} not reached after {self.step} "
                "steps (decisions fixed at finalize)"
            )
        return None

    def extra_state(self) -> dict[str, Any]:  # noqa: D102
        fixed = None if self.fixed is None else [t.clone() for t in self.fixed]
        return {"fixed": fixed}

    def load_extra_state(self, state: dict[str, Any]) -> None:  # noqa: D102
        if state.get("fixed") is not None and self.generator_net is not None:
            self.fixed = None
            self._set_fixed(*state["fixed"])

    def _teardown(self) -> None:
        peft_groups.remove_parts(self.model, GENERATOR, self._hook, self.masker)
        self._hook = self.masker = self.generator_net = None
        self.decisions = None

    def _settle(self) -> None:
        if self.fixed is None:
            self.fix()
        self._zero_lora()
        self._teardown()

    def finalize(self) -> nn.Module:
        """Fix the decisions if needed, bake the masks, remove the generator and every hook."""
        return peft_groups.finalize_fixed(self, self._settle)

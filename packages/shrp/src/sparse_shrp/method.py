"""SHRP as a sparsecore method: balancing, specialisation, usage-driven head pruning.

Paper: "SHRP: Specialized Head Routing and Pruning for Efficient Encoder Compression", Zeli Su,
Ziyin Zhang, Wenzheng Zhang, Zhou Liu, Guixian Xu & Wentao Zhang, arXiv 2512.20635 (Dec 2025);
earlier version "Expert Attention: MoE-Based Head Decoupling and Pruning for Pretrained
Encoders" (ACL ARR 2025 May, openreview NaAgodxpxo). Official code: none found (searched; the
project's digest marks the mechanism as reconstructed). Only the abstracts were reachable here;
every detail below that they do not state is marked [reconstructed].

Use::

    model = to_expert_attention(bert)                 # heads become routed experts
    opt = torch.optim.AdamW(model.parameters(), 2e-5)
    shrp = SHRP(sparsity=0.5, balance_steps=100, prune_step=300).setup(model, opt)
    for batch in loader:
        loss = task_loss(model(**batch)) + shrp.regularization()
        opt.zero_grad(); loss.backward(); opt.step()
    shrp.deploy(model)                                # routed, deterministic, smaller

Choices:

* Masks [reconstructed, fits sparsecore]: one Head-patterned bool mask per router weight
  (``(heads, hidden)``, one row per head). A masked row is a removed head: its router logit is
  ``-inf`` (the layer's ``head_alive`` buffer mirrors the mask), so it is never chosen and its
  Q/K/V slices get no gradient. The reported sparsity over the targets is exactly the fraction of
  heads removed.
* Stage 1 [paper names it; form reconstructed]: Switch-Transformer balancing loss
  ``α · Σ_layers H · Σ_h f_h P_h`` (α = ``aux_coef`` = 0.01, the Switch default), summed over
  layers as in Switch.
* Stage 2 [paper names it]: the balancing term is switched off so routing concentrates (the
  "specialisation"); Top-1 usage is counted on the training forwards of this window.
* Pruning [paper: "Top-1 usage-driven ... deterministic pruning at deployment"]: at
  ``prune_step`` the heads with the lowest usage go (budget mode, an exact head count, used for
  comparisons at equal heads removed) or those at or below ``usage_threshold`` (threshold mode,
  the paper's "heads the router does not use"). A layer may lose all heads (its attention block
  then only adds the expander bias, "whole attention blocks removed").
* Deployment [paper: "deterministic pruning at deployment"]: `SHRP.deploy` keeps the routed
  model, removes the pruned heads physically and routes by arg-max (exactly the trained
  function); ``plain=True`` gives a stock-forward BERT instead (`sparse_shrp.deploy`).
* Gate gradient: the chosen head's output is scaled by ``p / p.detach()`` (value 1, gradient
  ``∇log p``; see `sparse_shrp.expert_attention`).
* FFN channels and whole layers (the paper's 48%-parameters and 11/12-layers regimes):
  `sparse_shrp.structure.shrink_encoder`, the core's `sparsecore.structures.shrink`, applied to
  the stock encoder before the conversion [reconstructed].
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import nn

from sparse_shrp.config import SHRPConfig
from sparse_shrp.expert_attention import ExpertAttention, expert_layers
from sparse_shrp.usage import select_heads
from sparsecore import MethodConfig, PruningMethod
from sparsecore.patterns import Head
from sparsecore.targets import Target
from sparsecore.taxonomy import Taxonomy

__all__ = ["SHRP"]


class SHRP(PruningMethod):
    """Specialized Head Routing and Pruning (see the module docstring).

    Args:
        config: A `sparse_shrp.SHRPConfig`.
        **overrides: Config fields (``sparsity``, ``balance_steps``, ``prune_step``, ...).
    """

    taxonomy: ClassVar[Taxonomy | None] = Taxonomy(("head",), "during", "dense-to-sparse", "static")
    #: The ``sparse bench`` scenario this method is shown in (sparsecore.bench.scenarios).
    bench_scenario: ClassVar[str] = "encoder"

    name: ClassVar[str] = "shrp"
    config_class: ClassVar[type[MethodConfig]] = SHRPConfig
    mask_mode = "hard"
    supported_patterns = (Head,)
    needs_calibration: ClassVar[bool] = False
    config: SHRPConfig

    def __init__(self, config: SHRPConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.layers: dict[str, ExpertAttention] = {}
        self.usage_at_prune: dict[str, torch.Tensor] | None = None

    # ------------------------------------------------------------------ setup
    def setup(
        self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
    ) -> PruningMethod:
        """Validate, resolve the head pattern and targets from the model, add the masks.

        Raises:
            TypeError: ``model`` is not an ``nn.Module``.
            ValueError: ``model`` has no Expert Attention layer, its layers differ in head count,
                or the pattern's head count does not match the model's.
        """
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        layers = expert_layers(model)
        if not layers:
            raise ValueError(
                "model: no ExpertAttention layer; call sparse_shrp.to_expert_attention(model) "
                "before SHRP(...).setup(model, optimizer)"
            )
        heads = {m.num_heads for m in layers.values()}
        if len(heads) != 1:
            raise ValueError(f"model: Expert Attention layers have different head counts {heads}")
        (num_heads,) = heads
        pattern = self.config.pattern
        if pattern.num_heads not in (1, num_heads):
            raise ValueError(f"pattern: {pattern} does not match the model's {num_heads} heads")
        changes: dict[str, Any] = {"pattern": Head(num_heads)}
        if self.config.targets is None:
            changes["targets"] = tuple(
                f"{n}.router.weight" if n else "router.weight" for n in layers
            )
        self.config = dataclasses.replace(self.config, **changes)
        super().setup(model, optimizer)
        return self

    def validate(self, model: nn.Module, targets: list[Target]) -> None:  # noqa: D102
        for target in targets:
            module = model.get_submodule(target.module_name) if target.module_name else model
            owner_name = target.module_name.rpartition(".")[0]
            owner = model.get_submodule(owner_name) if owner_name else model
            if (
                target.param_name != "weight"
                or not isinstance(owner, ExpertAttention)
                or (module is not owner.router)
            ):
                raise ValueError(
                    f"targets: {target.name!r} is not the router weight of an ExpertAttention "
                    "layer (SHRP masks whole heads through the routers)"
                )
        self.layers = {
            t.name: model.get_submodule(t.module_name.rpartition(".")[0]) for t in targets
        }

    def init_masks(self) -> None:  # noqa: D102
        for name, layer in self.layers.items():
            keep = layer.head_alive.cpu()[:, None].expand_as(self.masks.mask(name)).contiguous()
            self.masks.update(name, keep.to(self.masks.mask(name).device))
        self._sync()

    # ------------------------------------------------------------------ schedule
    @property
    def in_balance_stage(self) -> bool:
        """Whether the balancing loss is on at the current step."""
        return self.step < self.config.balance_steps

    def _sync(self) -> None:
        """Mirror masks into ``head_alive`` and switch usage counting for the current step."""
        counting = self.config.first_usage_step <= self.step < self.config.prune_step
        for name, layer in self.layers.items():
            if self._masks is not None:
                layer.head_alive.copy_(self.masks.mask(name).any(dim=1))
            layer.counting = counting

    def regularization(self) -> torch.Tensor:
        """Stage 1: ``aux_coef · Σ_layers L_aux`` of the latest forward; afterwards zero."""
        if not self.in_balance_stage or self.config.aux_coef == 0 or not self.layers:
            return torch.zeros(())
        return self.config.aux_coef * sum(layer.aux_loss() for layer in self.layers.values())

    def on_after_optimizer_step(self) -> None:  # noqa: D102
        if self.step == self.config.prune_step:
            self.prune_by_usage()
        self._sync()

    @torch.no_grad()
    def prune_by_usage(
        self, usage: dict[str, torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor]:
        """Remove heads by usage (budget or threshold mode); returns the keep mask per layer.

        Args:
            usage: Counts per target name; default: the counts accumulated in the layers.
        """
        if usage is None:
            usage = {n: layer.usage.detach().cpu() for n, layer in self.layers.items()}
        alive = {n: self.masks.mask(n).any(dim=1).cpu() for n in self.layers}
        keep = select_heads(usage, alive, self.config.sparsity, self.config.usage_threshold)
        for name, heads in keep.items():
            mask = self.masks.mask(name)
            self.masks.update(name, heads.to(mask.device)[:, None].expand_as(mask).contiguous())
        self.usage_at_prune = {n: u.clone() for n, u in usage.items()}
        self._sync()
        return keep

    # ------------------------------------------------------------------ resume / end
    def load_extra_state(self, state: dict[str, Any]) -> None:  # noqa: D102
        self._sync()

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: D102
        super().load_state_dict(state)
        self._sync()

    def finalize(self) -> nn.Module:
        """Bake the masks (removed heads keep ``head_alive = False``) and stop counting."""
        self._sync()
        for layer in self.layers.values():
            layer.counting = False
        return super().finalize()

    def deploy(
        self, model: nn.Module, batches: Iterable[Any] | None = None, plain: bool = False
    ) -> nn.Module:
        """Finalize (if still set up) and deploy.

        Default: the routed model made deterministic and physically smaller, in place
        (`sparse_shrp.deploy.deploy_routed`; its logits equal the trained routed model's).

        Args:
            model: The trained model (``plain=True``: the ``BertModel`` inside it).
            batches: ``plain=True`` only: usage-set inputs for the ridge fit of layers that keep
                more than one head (see `sparse_shrp.deploy.to_plain_bert`).
            plain: Return a stock-forward ``ShrpBertModel`` instead: exact when every layer keeps
                at most one head, an approximation otherwise.
        """
        from sparse_shrp.deploy import deploy_routed, to_plain_bert

        if self._masks is not None:
            self.finalize()
        return to_plain_bert(model, batches) if plain else deploy_routed(model)

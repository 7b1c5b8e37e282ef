"""SlimFit as a sparsecore method: freeze the least-changing weight tensors at every step.

Paper: Arash Ardakani et al., "SlimFit: Memory-Efficient Fine-Tuning of Transformer-based
Models Using Training Dynamics", 2023, arXiv 2305.18513. Official code:
github.com/arashardakani/SlimFit (``BERT/utils_ILS.py``, ``ViT/utils_ILS.py``, the
``ParameterDiffer`` loop of ``BERT/*.py`` and ``ViT/*.py``).

Use (plain loop; nothing else changes)::

    opt = torch.optim.AdamW(model.parameters(), lr=1.25e-4)
    method = SlimFit(freeze_ratio=0.9).setup(model, opt)
    for batch in loader:
        loss = model(**batch).loss
        opt.zero_grad(); loss.backward(); opt.step()   # the step hooks score and re-freeze
    model = method.finalize()                          # everything trainable again, unpatched

Per iteration: the ``⌊ρ·t⌋`` units (weight tensors with ``dim > 1`` and LayerNorm weights,
`sparse_slimfit.scheduler`) with the lowest training-dynamics score are frozen
(``requires_grad = False``); after the optimizer step the trained units' scores are refreshed
and the next iteration's frozen set is chosen. The activation caches of
`sparse_slimfit.activations` (frozen Linear: no input; FFN output projection: 8-bit input;
frozen LayerNorm: top-10% of its normalised output) are installed on the model's own modules.

Choices:

* [choice] Only units that are trainable at `setup` are scheduled (the frozen base of a peft
  model stays frozen); `finalize` restores every unit's original ``requires_grad``.
* [choice] Before each step the gradients of frozen units are set to ``None``, so optimizers
  that would still apply momentum or weight decay to a zero gradient leave them unchanged
  (the official loop relies on ``zero_grad`` leaving ``None``). Their optimizer state is kept
  and used again when they are next trained (official behaviour).
* [choice] ``sparsity`` must be 0: no weight is removed; the core's mask buffers (on the
  Linear/Conv weights, the default targets) stay all-ones so that SlimFit runs in the same
  lifecycle, resume and registry as every other method.
* [choice] The initial scores are drawn from the method's own generator (`method_seed`), not
  the global one, so every DDP rank freezes the same units.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from sparse_slimfit.activations import ActivationPatch, patch_activations
from sparse_slimfit.config import SlimFitConfig
from sparse_slimfit.scheduler import freeze_count, frozen_units, relative_change, slimfit_units
from sparsecore import MethodConfig, PruningMethod
from sparsecore.taxonomy import Taxonomy

__all__ = ["SlimFit"]


class SlimFit(PruningMethod):
    """SlimFit (see the module docstring).

    Args:
        config: A `sparse_slimfit.SlimFitConfig`.
        **overrides: Config fields (``freeze_ratio``, ``layernorm_keep``, ...).
    """

    name: ClassVar[str] = "slimfit"
    config_class: ClassVar[type[MethodConfig]] = SlimFitConfig
    taxonomy: ClassVar[Taxonomy | None] = Taxonomy(
        ("layer",),
        "during",
        "dense-to-sparse",
        "dynamic",
        sparsifies=("activations",),
        note="freezes the ⌊ρt⌋ least-changing weight tensors every step (none removed); frozen "
        "layers keep no / pruned activations, the FFN output input is cached in 8 bits",
    )
    #: Shown by `sparse bench` in its own scenario (its reproduction at --quick scale).
    bench_scenario: ClassVar[str] = "memory-finetune"
    config: SlimFitConfig

    def __init__(self, config: SlimFitConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.units: list[str] = []
        self.scores: torch.Tensor | None = None
        self.frozen: torch.Tensor | None = None
        self.patch: ActivationPatch | None = None
        self._params: list[nn.Parameter] = []
        self._previous: dict[int, torch.Tensor] = {}

    # ------------------------------------------------------------------ setup / finalize
    def setup(
        self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
    ) -> PruningMethod:
        """Validate, add the (all-ones) masks, then freeze the first ``⌊ρ·t⌋`` units and patch.

        Raises:
            RuntimeError: Already set up.
            TypeError: ``model`` / ``optimizer`` of the wrong type.
            ValueError: No trainable unit, bad targets, an optimizer over other parameters,
                meta or non-finite weights (all before the model is touched).
        """
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        params = dict(model.named_parameters())
        units = [
            n for n in slimfit_units(model, self.config.train_always) if params[n].requires_grad
        ]
        if not units:
            raise ValueError(
                "model: no trainable unit (dim > 1 weight or LayerNorm weight) to schedule"
            )
        if self.config.slim_activations:
            patched = [n for n, m in model.named_modules() if "forward" in m.__dict__]
            if patched:
                raise ValueError(
                    f"model: module {patched[0]!r} already has an instance forward (SlimFit set "
                    "up twice, or another patch?)"
                )
        super().setup(model, optimizer)
        self.units = units
        self._params = [params[n] for n in units]
        self.scores = self.config.score_init_scale * torch.rand(
            len(units), generator=self.generator
        )
        self._refreeze()
        if self.config.slim_activations:
            self.patch = patch_activations(
                model,
                quantize_ffn_output=self.config.quantize_ffn_output,
                prune_frozen_layernorm=self.config.prune_frozen_layernorm,
                layernorm_keep=self.config.layernorm_keep,
            )
        return self

    def _release(self) -> None:
        for param in self._params:
            param.requires_grad_(True)
        if self.patch is not None:
            self.patch.remove()
        self.patch = None
        self._params, self.units, self.scores, self.frozen = [], [], None, None
        self._previous = {}

    def finalize(self) -> nn.Module:
        """Make every unit trainable again, remove the activation patch and the masks.

        Returns:
            The plain model (weights as trained).
        """
        self._release()
        return super().finalize()

    # ------------------------------------------------------------------ schedule
    @property
    def freeze_count(self) -> int:
        """``⌊ρ·t⌋``: units frozen at every iteration."""
        return freeze_count(self.config.freeze_ratio, len(self.units))

    def frozen_names(self) -> list[str]:
        """The units frozen for the coming iteration."""
        assert self.frozen is not None
        return [n for n, f in zip(self.units, self.frozen.tolist(), strict=True) if f]

    def _refreeze(self) -> None:
        assert self.scores is not None
        self.frozen = frozen_units(self.scores, self.freeze_count)
        for param, frozen in zip(self._params, self.frozen.tolist(), strict=True):
            param.requires_grad_(not frozen)

    def on_before_optimizer_step(self) -> None:
        """Drop frozen units' gradients; copy the trained units' weights (``W_prev``)."""
        assert self.frozen is not None
        self._previous = {}
        for k, (param, frozen) in enumerate(zip(self._params, self.frozen.tolist(), strict=True)):
            if frozen:
                param.grad = None
            else:
                self._previous[k] = param.detach().clone()

    def on_after_optimizer_step(self) -> None:
        """Score the units trained in this step, then freeze the ``⌊ρ·t⌋`` lowest."""
        assert self.scores is not None
        for k, previous in self._previous.items():
            self.scores[k] = relative_change(previous, self._params[k])
        self._previous = {}
        self._refreeze()

    # ------------------------------------------------------------------ resume
    def extra_state(self) -> dict[str, Any]:
        """The training-dynamics scores (the frozen set follows from them)."""
        assert self.scores is not None
        return {"scores": self.scores.clone(), "units": list(self.units)}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore the scores and re-freeze accordingly.

        Raises:
            ValueError: The state was saved for other units.
        """
        if list(state["units"]) != self.units:
            raise ValueError("state: saved for a model with other SlimFit units")
        self.scores = state["scores"].clone().float()
        self._refreeze()

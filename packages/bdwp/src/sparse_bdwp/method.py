"""BDWP: bidirectional N:M weight pruning for sparse training, as a sparsecore method.

Paper: Chao Fang, Wei Sun, Aojun Zhou & Zhongfeng Wang, "Efficient N:M Sparse DNN Training
Using Algorithm, Architecture, and Dataflow Co-Design", IEEE TCAD 2023, arXiv 2309.13015. No
official code. The paper's abstract: BDWP "leverage[s] the N:M sparsity of weights during both
forward and backward passes of DNN training"; at 2:8 the FPGA accelerator trains 1.75x faster
than dense training with an accuracy loss of 0.56% on average.

What BDWP does per weight layer (``Y = W X``, convolutions in their im2col view), see
`sparse_bdwp.function`:

* forward with ``W ⊙ M_F``, ``M_F`` N:M along the input dimension;
* backward-data with ``(W ⊙ M_B)ᵀ``, ``M_B`` N:M along the output dimension (the reduction
  dimension of the transposed GEMM, so an N:M kernel can run it);
* dense weight gradient ``dY Xᵀ`` onto the dense ``W``, plus the SR-STE decay
  ``λ_W (1 - M_F) ⊙ W`` (co-author Aojun Zhou's SR-STE, arXiv 2102.04010);
* both masks recomputed from ``|W|`` (top-N of every M-group in each direction).

Two of the three training GEMMs are N:M sparse: the counted saving is ``(2/3)(1 - N/M)`` of the
weight-layer MACs (`sparsecore.evaluation.count_training_flops`).

Implementation choices (labelled):

* **[recon] Mask directions and update rule.** The paper's text was not reachable from here;
  the directions above (``M_F`` along inputs, ``M_B`` along outputs) and the dense-weight
  SR-STE update follow the project digest and the issue, which read them from the paper, and
  they are the only choice under which both sparse GEMMs are N:M along their reduction
  dimension.
* **Schedule.** Masks are recomputed every ``update_every`` steps (default 1: every iteration,
  as SR-STE recomputes them in every forward) after the optimizer step, and once at setup.
* **Where masks act.** sparsecore's ``ste`` mask mode keeps the dense ``W`` (``model.weight``
  reads ``W ⊙ M_F``); the layer's ``forward`` is replaced, for the method's lifetime, by the
  three-GEMM function; `BDWP.finalize` restores it and bakes ``W ⊙ M_F``. ``M_B`` is a second
  persistent bool buffer, ``<param>_bmask``, so a state dict resumes exactly.
* **Layers.** ``nn.Linear`` and ``nn.Conv1d/2d/3d`` with ``groups=1`` and zero padding, whose
  input and output sizes are multiples of ``M`` (first layers with 1-3 input channels and small
  classifiers are excluded in practice, as in the N:M papers).
* **CUDA.** With ``kernels="auto"`` a Linear layer at 2:4 in half/bfloat16 on a GPU with
  semi-structured sparsity runs its forward and backward-data GEMMs through
  ``torch.sparse.to_sparse_semi_structured``; everything else runs masked dense products.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from sparse_bdwp.config import BDWPConfig
from sparse_bdwp.function import layer_call, semi_structured_available
from sparsecore.method import MethodConfig, PruningMethod
from sparsecore.patterns import NM, Pattern
from sparsecore.select import select
from sparsecore.targets import Target
from sparsecore.taxonomy import Taxonomy

__all__ = ["BDWP", "backward_mask_name"]

_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def backward_mask_name(param_name: str) -> str:
    """Buffer name of the backward-data mask of ``param_name`` (``weight_bmask``)."""
    return f"{param_name}_bmask"


class BDWP(PruningMethod):
    """Bidirectional N:M weight pruning (Fang et al., IEEE TCAD 2023, arXiv 2309.13015).

    ```python
    method = BDWP(pattern="2:8").setup(model, optimizer)
    for x, y in loader:  # an ordinary loop
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(); loss.backward(); optimizer.step()
    model = method.finalize()  # plain model, W ⊙ M_F baked in
    ```
    """

    taxonomy: ClassVar[Taxonomy | None] = Taxonomy(
        ("n:m",),
        "during",
        "sparse-to-sparse",
        "dynamic",
        note="forward and backward-data N:M masks recomputed from the dense weights",
    )

    name = "bdwp"
    config_class: ClassVar[type[MethodConfig]] = BDWPConfig
    mask_mode = "ste"
    supported_patterns: ClassVar[tuple[type[Pattern], ...]] = (NM,)
    config: BDWPConfig

    def __init__(self, config: MethodConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self._layers: dict[str, nn.Module] = {}

    @classmethod
    def bench_config(cls, total_steps: int, sparsity: float | None) -> dict[str, Any]:
        """Config overrides for one ``sparse bench`` run (see `sparsecore.bench.build_method`).

        The bench fits ``update_every`` to 5% of the run for schedule-driven methods; BDWP
        recomputes its masks every iteration, so it is set back to 1. The N:M pattern fixes the
        sparsity (``sparsity`` is ignored).
        """
        return {"update_every": 1}

    # ------------------------------------------------------------------ setup
    def validate(self, model: nn.Module, targets: list[Target]) -> None:  # noqa: D102
        pattern: NM = self.config.pattern  # type: ignore[assignment]
        backward = NM(pattern.n, pattern.m, dim=0)
        for target in targets:
            module = model.get_submodule(target.module_name)
            if not isinstance(module, _LAYERS) or target.param_name != "weight":
                raise ValueError(
                    f"targets: {target.name!r} is not the weight of a Linear/Conv layer "
                    f"(BDWP replaces those layers' GEMMs); exclude it"
                )
            if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d):
                if module.groups != 1:
                    raise ValueError(f"targets: {target.name!r} is a grouped convolution")
                if module.padding_mode != "zeros" or isinstance(module.padding, str):
                    raise ValueError(
                        f"targets: {target.name!r} needs numeric zero padding, "
                        f"got {module.padding_mode!r} / {module.padding!r}"
                    )
            shape = tuple(module.weight.shape)
            pattern.check_shape(shape, f"{target.name} (inputs)")
            backward.check_shape(shape, f"{target.name} (outputs)")

    def init_masks(self) -> None:  # noqa: D102
        for name, target in self.masks.targets.items():
            module = self.model.get_submodule(target.module_name)  # type: ignore[union-attr]
            weight = self.masks.param(name)
            module.register_buffer(
                backward_mask_name(target.param_name), torch.ones_like(weight, dtype=torch.bool)
            )
            self._layers[name] = module
            module.forward = self._forward_of(name, module)  # type: ignore[method-assign]
        self.update_masks()

    def _forward_of(self, name: str, module: nn.Module):
        def forward(x: torch.Tensor) -> torch.Tensor:
            return layer_call(module, x, self.masks.mask(name), self.backward_mask(name),
                              self._fast(module, x))  # fmt: skip

        return forward

    def _fast(self, module: nn.Module, x: torch.Tensor) -> bool:
        pattern: NM = self.config.pattern  # type: ignore[assignment]
        return (
            self.config.kernels == "auto"
            and isinstance(module, nn.Linear)
            and (pattern.n, pattern.m) == (2, 4)
            and x.dtype in (torch.float16, torch.bfloat16)
            and module.in_features % 64 == 0
            and module.out_features % 64 == 0
            and semi_structured_available(x.device)
        )

    # ------------------------------------------------------------------ masks
    def backward_mask(self, name: str) -> torch.Tensor:
        """``M_B`` of target ``name`` (the live bool buffer)."""
        target = self.masks.targets[name]
        return self._layers[name]._buffers[backward_mask_name(target.param_name)]

    @torch.no_grad()
    def update_masks(self) -> None:
        """Recompute ``M_F`` (N:M along inputs) and ``M_B`` (along outputs) from ``|W|``."""
        pattern: NM = self.config.pattern  # type: ignore[assignment]
        backward = NM(pattern.n, pattern.m, dim=0)
        for name in self.masks.names:
            score = self.masks.param(name).detach().abs()
            forward_mask = select(score, 1.0, self.masks.targets[name].pattern, name=name)
            self.masks.update(name, forward_mask)
            if self.config.backward == "forward":
                self.backward_mask(name).copy_(forward_mask)
            else:
                self.backward_mask(name).copy_(select(score, 1.0, backward, name=name))

    def on_before_optimizer_step(self) -> None:  # noqa: D102
        decay = self.config.decay
        if decay == 0:
            return
        with torch.no_grad():
            for name, param in self.masks.params().items():
                if param.grad is not None:
                    param.grad.add_(param.detach() * ~self.masks.mask(name), alpha=decay)

    def on_after_optimizer_step(self) -> None:  # noqa: D102
        if self.step % self.config.update_every == 0:
            self.update_masks()

    # ------------------------------------------------------------------ counting
    def backward_weights(self) -> dict[str, torch.Tensor]:
        """``{module name: W ⊙ M_B}``, the weights of the backward-data GEMMs.

        For `sparsecore.evaluation.count_training_flops`.
        """
        out = {}
        for name, target in self.masks.targets.items():
            weight = self.masks.param(name).detach()
            out[target.module_name] = weight * self.backward_mask(name)
        return out

    # ------------------------------------------------------------------ end
    def finalize(self) -> nn.Module:
        """Restore the layers' own forward, drop ``M_B`` and bake ``W ⊙ M_F`` into the weights."""
        for name, module in self._layers.items():
            module.__dict__.pop("forward", None)
            delattr(module, backward_mask_name(self.masks.targets[name].param_name))
        self._layers = {}
        return super().finalize()

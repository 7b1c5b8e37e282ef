"""LoRA through peft on a frozen, masked base; merging that keeps every pruned weight at zero.

Compresso, ATP and Light-PEFT train LoRA adapters (Hu et al., "LoRA", arXiv 2106.09685) on a
frozen base while structure gates or weight masks decide what is pruned. This module keeps the
adapters peft's own (``peft.LoraConfig`` / ``get_peft_model`` / ``merge_and_unload``) and adds
the two things pruning needs:

* **Group masks act on the merged path.** `sparsecore.structures.mask_groups` finds a wrapped
  projection under its own name, i.e. the LoRA wrapper, so a head or channel gate multiplies the
  output of ``W0 x + B A x`` as a whole: a pruned group's frozen and LoRA parts vanish together,
  and `merge_lora` followed by `sparsecore.structures.shrink` gives the masked model's function.
* **Weight masks (unstructured, N:M) survive a merge exactly.** peft's merge adds the dense
  ``ΔW = s · B A`` to ``W0``, which puts nonzeros back at pruned positions. `mask_lora_delta`
  makes the forward compute with ``W0 + ΔW ⊙ M`` (for a base already masked, ``W0 ⊙ M = W0``, so
  this is ``(W0 + ΔW) ⊙ M``), and `merge_lora` re-applies ``M`` after merging. The merged weight
  therefore equals the weight the adapters were trained with, with exact zeros where ``M`` is 0.

Choices:

* [choice] The delta mask is applied by a forward hook that recomputes the wrapped layer's output
  from the masked effective weight (one extra matmul per masked layer while training; nothing at
  inference, after the merge). peft's own forward is left untouched so its merge and save keep
  working. Supported for one active, unmerged adapter on ``nn.Linear`` / HF ``Conv1D`` bases.
* [choice] Default LoRA targets are every projection of the structure layout (attention and
  FFN); peft's ``fan_in_fan_out`` is set for GPT-2's ``Conv1D``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sparsecore.layouts import is_hf_conv1d
from sparsecore.structures.layout import describe
from sparsecore.validation import check_int, check_number

__all__ = ["LoraDeltaMask", "add_lora", "lora_modules", "mask_lora_delta", "merge_lora"]


def _peft() -> Any:
    try:
        import peft
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "sparsecore.adapters needs peft: pip install 'sparse-core[peft]'"
        ) from err
    return peft


def default_targets(model: nn.Module) -> list[str]:
    """Module name suffixes of every attention and FFN projection (peft ``target_modules``)."""
    layout = describe(model)
    lay = layout.layers[0]
    modules = [*lay.qkv, lay.attn_out, *lay.ffn_in, lay.ffn_out]
    prefix = layout.name(lay.module) + "."
    return sorted({layout.name(m).removeprefix(prefix) for m in modules})


def add_lora(
    model: nn.Module,
    r: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    target_modules: Sequence[str] | None = None,
    **lora_options: Any,
) -> nn.Module:
    """Wrap ``model`` with peft LoRA adapters; the base weights are frozen by peft.

    Args:
        model: A Hugging Face model supported by `sparsecore.structures.describe`.
        r: LoRA rank.
        alpha: LoRA scaling numerator (``scale = alpha / r``).
        dropout: LoRA dropout.
        target_modules: peft ``target_modules`` (default: every attention and FFN projection).
        **lora_options: Further ``peft.LoraConfig`` fields (e.g. ``init_lora_weights``).

    Returns:
        The ``peft.PeftModel``.

    Raises:
        ValueError, TypeError: Invalid rank, alpha or dropout (before the model is touched).
    """
    r = check_int(r, "r", 1)
    alpha = check_number(alpha, "alpha", 0.0, open_low=True, finite=True)
    dropout = check_number(dropout, "dropout", 0.0, 1.0, open_high=True)
    peft = _peft()
    targets = list(target_modules) if target_modules is not None else default_targets(model)
    conv = describe(model).family == "gpt2"
    config = peft.LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=targets,
        fan_in_fan_out=conv,
        **lora_options,
    )
    return peft.get_peft_model(model, config)


def lora_modules(model: nn.Module) -> dict[str, nn.Module]:
    """LoRA-wrapped layers by the *base model's* parameter name of their weight.

    Keys look like ``"model.layers.0.self_attn.q_proj.weight"``: the names of the unwrapped
    model, i.e. what a `MaskSet` on the base model (or ``dict(method.masks.masks())``) uses.
    """
    peft = _peft()
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {
        f"{name}.weight": module
        for name, module in base.named_modules()
        if isinstance(module, peft.tuners.lora.LoraLayer) and hasattr(module, "base_layer")
    }


def _delta(module: nn.Module) -> torch.Tensor:
    """``s · B A`` of the active adapter, in ``(out, in)`` convention."""
    names = module.active_adapters
    if len(names) != 1:
        raise ValueError(f"mask_lora_delta supports one active adapter, got {names}")
    name = names[0]
    a, b = module.lora_A[name].weight, module.lora_B[name].weight
    return (b @ a) * module.scaling[name]


def _check_masks(wrapped: Mapping[str, nn.Module], masks: Mapping[str, torch.Tensor]) -> None:
    for key, mask in masks.items():
        if key not in wrapped:
            raise ValueError(
                f"weight mask {key!r} does not name a LoRA-wrapped layer; wrapped: "
                f"{sorted(wrapped)[:3]}..."
            )
        shape = tuple(wrapped[key].base_layer.weight.shape)
        if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != shape:
            got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(f"weight mask {key!r}: expected shape {shape}, got {got}")


class LoraDeltaMask:
    """Forward hooks making LoRA layers compute with ``W0 + ΔW ⊙ M`` (see the module docstring).

    Args:
        model: A peft LoRA model.
        masks: Keep-masks by base parameter name (`lora_modules` keys), in the stored layout.
    """

    def __init__(self, model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
        wrapped = lora_modules(model)
        _check_masks(wrapped, masks)
        self.masks = {k: v.to(torch.bool) for k, v in masks.items()}
        self._handles = [
            wrapped[key].register_forward_hook(self._hook(key), with_kwargs=True)
            for key in self.masks
        ]

    def _hook(self, key: str):
        def post(module: nn.Module, args: tuple, kwargs: dict, out: torch.Tensor) -> torch.Tensor:
            if module.merged or module.disable_adapters:
                return out
            base = module.base_layer
            mask = self.masks[key].to(base.weight.device)
            conv = is_hf_conv1d(base)
            w0 = base.weight.t() if conv else base.weight
            keep = mask.t() if conv else mask
            name = module.active_adapters[0]
            x = module.lora_dropout[name](args[0] if args else kwargs["x"])
            weight = w0 + _delta(module) * keep.to(w0.dtype)
            return F.linear(x, weight, base.bias)

        return post

    def remove(self) -> None:
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __enter__(self) -> LoraDeltaMask:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def mask_lora_delta(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> LoraDeltaMask:
    """Restrict the LoRA updates of ``model`` to the kept positions of ``masks`` (in the forward).

    Raises:
        ValueError: A mask names no LoRA-wrapped layer or has the wrong shape (before hooking).
    """
    return LoraDeltaMask(model, masks)


@torch.no_grad()
def merge_lora(model: nn.Module, weight_masks: Mapping[str, torch.Tensor] | None = None) -> Any:
    """``merge_and_unload`` the adapters, then re-apply ``weight_masks`` (exact zeros).

    Args:
        model: A peft LoRA model (its hooks from `mask_lora_delta` may still be attached; they
            become inactive once the adapters are merged).
        weight_masks: Keep-masks by base parameter name; ``None``: no weight masks.

    Returns:
        The plain Hugging Face model with merged weights (ready for
        `sparsecore.structures.shrink`).

    Raises:
        ValueError: A mask names no LoRA-wrapped layer or has the wrong shape (before merging).
    """
    wrapped = lora_modules(model)
    masks = dict(weight_masks or {})
    _check_masks(wrapped, masks)
    merged = model.merge_and_unload()
    params = dict(merged.named_parameters())
    for key, mask in masks.items():
        params[key].mul_(mask.to(params[key].device, params[key].dtype))
    return merged

"""Physical removal: a plain smaller Hugging Face model and a smaller peft LoRA adapter.

`lighten` turns a model pruned by `sparse_lightpeft.LightPEFT` (masked in place) into:

* ``base``: a plain model of the same transformers class with the removed heads and FFN
  neurons gone (`sparsecore.structures.shrink`, which checks the output against the masked
  model), *unmerged* (the frozen foundation weights, as Light-PEFT fine-tunes them);
* ``peft_model``: ``peft.get_peft_model(base, LoraConfig(...))`` with only the kept LoRA
  modules (``target_modules`` lists them by name), each with its kept ranks (``rank_pattern``)
  and the rows / columns of removed heads and neurons cut. ``alpha_pattern`` keeps every
  module's scaling ``alpha / r`` at its original value, as the official ``prune_peft_rank``
  slices ``lora_A`` / ``lora_B`` and leaves ``scaling`` alone.

``Lightened.save`` writes both (``base/`` through ``save_pretrained``, ``adapter/`` through
peft's ``save_pretrained``); `load_lightened` reloads them with
`sparsecore.structures.load_pretrained` and ``PeftModel.from_pretrained``. The lightened model's
output is compared with the masked model's in eval mode (``RuntimeError`` beyond ``atol``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparse_lightpeft.importance import lora_layers
from sparse_lightpeft.plan import PrunePlan, lora_feature_keeps
from sparsecore.structures import describe, load_pretrained, shrink

__all__ = ["Lightened", "lighten", "load_lightened"]


@dataclass
class Lightened:
    """The result of `lighten`.

    Attributes:
        base: The smaller transformers model (frozen foundation weights); when
            ``peft_model`` is set, peft has wrapped its projections in place.
        peft_model: The peft model over ``base`` with the smaller adapter (``None`` when the
            pruned model had no LoRA or every module was removed).
        plan: The plan that was applied.
    """

    base: nn.Module
    peft_model: Any | None
    plan: PrunePlan

    @property
    def model(self) -> nn.Module:
        """What to fine-tune: the peft model if there is one, else the plain model."""
        return self.peft_model if self.peft_model is not None else self.base

    def save(self, path: str | Path) -> Path:
        """Write ``base/`` (safetensors) and ``adapter/`` (peft) under ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        base = self.base
        if self.peft_model is not None:
            self.peft_model.save_pretrained(path / "adapter")
            base = copy.deepcopy(self.peft_model).unload()  # the plain layers, trained head
        base.save_pretrained(path / "base")
        return path


def _plain_state(model: nn.Module, exclude: Sequence[str]) -> dict[str, torch.Tensor]:
    """The unwrapped model's weights: LoRA, masks and ``exclude`` dropped, wrappers unwrapped."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    out = {}
    for key, value in base.state_dict().items():
        if "lora_" in key or ".original_module." in key or key.split(".")[0] in exclude:
            continue
        key = key.replace(".base_layer.", ".").replace(".modules_to_save.default.", ".")
        out[key] = value.detach()
    return out


def _plain_copy(model: nn.Module, exclude: Sequence[str] = ()) -> nn.Module:
    """A fresh model of ``model``'s transformers class with its plain (unwrapped) weights."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    fresh = type(base)(base.config)
    state = _plain_state(model, exclude)
    own = fresh.state_dict()
    result = fresh.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    if result.missing_keys:
        raise RuntimeError(f"lighten: weights missing for {result.missing_keys[:3]}")
    fresh.to(next(base.parameters()).device)
    return fresh.train(base.training)


def _default_inputs(model: nn.Module) -> dict[str, torch.Tensor]:
    emb = describe(model).embeddings[0]
    gen = torch.Generator().manual_seed(4321)
    ids = torch.randint(1, emb.num_embeddings, (2, 10), generator=gen).to(emb.weight.device)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _output(out: Any) -> torch.Tensor:
    logits = getattr(out, "logits", None)
    return logits if logits is not None else out[0]


@torch.no_grad()
def lighten(
    model: nn.Module,
    plan: PrunePlan,
    example_inputs: Mapping[str, torch.Tensor] | None = None,
    *,
    exclude: Sequence[str] = (),
    atol: float = 1e-4,
) -> Lightened:
    """Build the physically smaller model and adapter of ``plan`` (``model`` is not modified).

    Args:
        model: The masked model (a peft LoRA model or a plain BERT/RoBERTa model), with the
            plan already applied in place (`sparse_lightpeft.LightPEFT.prune`).
        plan: The `sparse_lightpeft.PrunePlan`.
        example_inputs: Inputs of the final comparison (default: 2 × 10 random token ids).
        exclude: Top-level submodule names that are not part of the transformers model.
        atol: Tolerance of the comparison.

    Returns:
        A `Lightened` (``base`` plus ``peft_model``).

    Raises:
        RuntimeError: The lightened model's output differs from the masked model's.
    """
    import peft

    inputs = dict(example_inputs) if example_inputs is not None else _default_inputs(model)
    plain = _plain_copy(model, exclude)
    masks = {"heads": [k.float() for k in plan.heads], "ffn": [k.float() for k in plan.ffn]}
    small = shrink(plain, masks, {"input_ids": inputs["input_ids"]}, atol=atol)
    layers = lora_layers(model)
    kept = {n: k for n, k in plan.ranks.items() if n in layers and bool(k.any())}
    peft_model = None
    if kept:
        config = model.peft_config[model.active_adapter]
        r, alpha = int(config.r), float(config.lora_alpha)
        names = {n: n.removeprefix("base_model.model.") for n in kept}
        rank_pattern = {names[n]: int(k.sum()) for n, k in kept.items()}
        alpha_pattern = {names[n]: alpha * int(k.sum()) / r for n, k in kept.items()}
        new_config = peft.LoraConfig(
            r=r,
            lora_alpha=alpha,
            lora_dropout=float(config.lora_dropout),
            target_modules=sorted(names.values()),
            rank_pattern=rank_pattern,
            alpha_pattern=alpha_pattern,
            modules_to_save=list(config.modules_to_save or []) or None,
            fan_in_fan_out=bool(config.fan_in_fan_out),
        )
        peft_model = peft.get_peft_model(small, new_config)
        features = lora_feature_keeps(model, plan)
        new_layers = lora_layers(peft_model)
        for name, keep in kept.items():
            old = layers[name]
            adapter = old.active_adapters[0]
            a = old.lora_A[adapter].weight[keep]
            b = old.lora_B[adapter].weight[:, keep]
            rows, cols = features.get(name, (None, None))
            if rows is not None:
                b = b[rows.to(b.device)]
            if cols is not None:
                a = a[:, cols.to(a.device)]
            new = new_layers[name]
            new_adapter = new.active_adapters[0]
            new.lora_A[new_adapter].weight.copy_(a)
            new.lora_B[new_adapter].weight.copy_(b)
    lightened = Lightened(small, peft_model, plan)
    _check(model, lightened.model, inputs, atol)
    return lightened


def _check(model: nn.Module, small: nn.Module, inputs: Mapping[str, Any], atol: float) -> None:
    modes = (model.training, small.training)
    model.eval()
    small.eval()
    try:
        want, got = _output(model(**inputs)), _output(small(**inputs))
    finally:
        model.train(modes[0])
        small.train(modes[1])
    if want.shape != got.shape or float((want - got).abs().max()) > atol:
        raise RuntimeError(
            "lighten: the lightened model's output differs from the masked model's beyond atol"
        )


def load_lightened(path: str | Path, **kwargs: Any) -> nn.Module:
    """Reload `Lightened.save` output: the smaller base, with the adapter if one was saved.

    Args:
        path: The folder given to `Lightened.save`.
        **kwargs: Passed to `sparsecore.structures.load_pretrained`.

    Returns:
        A ``peft.PeftModel`` (or the plain model when no adapter was saved).
    """
    path = Path(path)
    base = load_pretrained(path / "base", **kwargs)
    if not (path / "adapter").exists():
        return base
    from peft import PeftModel

    return PeftModel.from_pretrained(base, path / "adapter")

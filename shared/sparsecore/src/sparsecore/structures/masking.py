"""Group masks in the forward pass: CoFi / Compresso's ``head_z``, ``intermediate_z``, ``hidden_z``.

A *group mask* is a dict with any of these keys (values bool or float gates; 0 removes a group):

* ``"heads"``: per layer, one value per key/value group (``(L, num_key_value_heads)``; the group's
  query heads move with it) or one per query head (``(L, num_attention_heads)``).
* ``"ffn"``: per layer, one value per intermediate channel (``(L, intermediate_size)``).
* ``"hidden"``: one value per hidden dimension (``(hidden_size,)``), shared by all layers.
* ``"layers"``: one value per layer (``(L,)``).

Per-layer entries may be a 2-D tensor or a list of 1-D tensors (layers of different widths, as in
an already shrunk model). Where each gate acts (forward hooks; the model stays the user's model):

* heads: the input of the attention output projection (``o_proj`` / ``attention.output.dense`` /
  ``attn.c_proj``) is multiplied by the head's gate, i.e. the head's context vector is scaled,
  exactly where CoFi multiplies ``head_z`` (``context_layer * head_z``).
* ffn: the input of the down projection is multiplied by the channel's gate (CoFi's
  ``intermediate_z``).
* hidden: as in CoFi, every module writing the residual stream (embeddings in pre-norm models,
  ``o_proj``/``down_proj``/``c_proj``) has its output multiplied by ``hidden_z``, and every norm on
  the hidden states computes its statistics over the dimensions whose gate is nonzero only, then
  multiplies its output by ``hidden_z`` (CoFi's ``CoFiLayerNorm`` normalises the
  ``hidden_z != 0`` dims and ``BertSelfOutput`` then multiplies by ``hidden_z``; LLM-Shearing,
  github.com/princeton-nlp/LLM-Shearing, does the same for Llama's RMSNorm). This makes the
  masked model compute what the shrunk model computes.
* layers: the layer's output ``y`` becomes ``x + z · (y - x)``; ``z = 0`` skips the layer exactly.
  [choice] One gate per layer, not CoFi's separate ``mha_z`` / ``mlp_z``: removing a whole
  attention block while keeping the layer needs a layer class transformers does not have.

Masks are read at every forward, so gates updated in place (``copy_``) or soft gates that carry
gradients (an L0 relaxation) act immediately; `GroupMasker.update` swaps in new tensors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from sparsecore.structures.layout import LayerLayout, ModelLayout, describe

__all__ = ["KINDS", "GroupMasker", "check_group_masks", "full_group_masks", "mask_groups"]

#: The group kinds, in the order they are validated.
KINDS = ("heads", "ffn", "hidden", "layers")


def _as_tensor(value: Any, where: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{where} must be a torch.Tensor, got {type(value).__name__}")
    if not (value.is_floating_point() or value.dtype == torch.bool):
        raise TypeError(f"{where} must be bool or floating point, got {value.dtype}")
    if value.is_floating_point() and not bool(torch.isfinite(value.detach()).all()):
        raise ValueError(f"{where} contains NaN or infinite values")
    return value


def _per_layer(value: Any, kind: str, count: int) -> list[torch.Tensor]:
    where = f"group_masks[{kind!r}]"
    if isinstance(value, torch.Tensor):
        if value.dim() != 2 or value.shape[0] != count:
            raise ValueError(
                f"{where} must have one row per layer ({count}), got shape {tuple(value.shape)}"
            )
        return list(_as_tensor(value, where).unbind(0))
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != count:
            raise ValueError(f"{where} must have one entry per layer ({count}), got {len(value)}")
        return [_as_tensor(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise TypeError(f"{where} must be a 2-D tensor or a list of 1-D tensors")


def _check_width(layout: ModelLayout, layer: LayerLayout, kind: str, z: torch.Tensor) -> None:
    if kind == "heads":
        allowed = {layer.kv_heads: "key/value groups", layer.heads: "query heads"}
        module = layout.name(layer.attention)
        what = f"{layer.kv_heads} key/value groups and {layer.heads} query heads"
    else:
        allowed = {layer.intermediate: "intermediate channels"}
        module = layout.name(layer.ffn_out)
        what = f"{layer.intermediate} intermediate channels"
    if z.dim() != 1 or z.numel() not in allowed:
        raise ValueError(
            f"group_masks[{kind!r}][{layer.index}]: {module} has {what}, got a mask of shape "
            f"{tuple(z.shape)}"
        )


def check_group_masks(layout: ModelLayout, masks: Mapping[str, Any]) -> dict[str, Any]:
    """Validate group masks against a layout; return them normalised (nothing is copied).

    Args:
        layout: The model's layout (`describe`).
        masks: Group masks (see the module docstring).

    Returns:
        ``{"heads": [1-D per layer] | None, "ffn": [...] | None, "hidden": 1-D | None,
        "layers": 1-D | None}``; the tensors are views of the given ones.

    Raises:
        TypeError: A mask is not a bool or floating tensor.
        ValueError: Unknown key, wrong group count (the message names the module), non-finite.
    """
    if not isinstance(masks, Mapping):
        raise TypeError(f"group_masks must be a mapping, got {type(masks).__name__}")
    unknown = sorted(set(masks) - set(KINDS))
    if unknown:
        raise ValueError(f"group_masks: unknown kind(s) {unknown}; use {list(KINDS)}")
    count = len(layout.layers)
    out: dict[str, Any] = dict.fromkeys(KINDS)
    for kind in ("heads", "ffn"):
        if masks.get(kind) is not None:
            per = _per_layer(masks[kind], kind, count)
            for layer, z in zip(layout.layers, per, strict=True):
                _check_width(layout, layer, kind, z)
            out[kind] = per
    sizes = {"hidden": layout.hidden, "layers": count}
    for kind in ("hidden", "layers"):
        if masks.get(kind) is not None:
            z = _as_tensor(masks[kind], f"group_masks[{kind!r}]")
            if z.dim() != 1 or z.numel() != sizes[kind]:
                where = type(layout.model).__name__
                raise ValueError(
                    f"group_masks[{kind!r}]: {where} has {sizes[kind]} {kind} groups, got a mask "
                    f"of shape {tuple(z.shape)}"
                )
            out[kind] = z
    return out


def full_group_masks(model: nn.Module, kv_groups: bool = True) -> dict[str, Any]:
    """All-ones float gates of every kind for ``model`` (a starting point for scores or L0 gates).

    Args:
        model: A supported Hugging Face model.
        kv_groups: Heads as key/value groups (default) or as query heads.
    """
    layout = describe(model)
    dtype = layout.embeddings[0].weight.dtype
    device = layout.embeddings[0].weight.device
    heads = [(lay.kv_heads if kv_groups else lay.heads) for lay in layout.layers]
    return {
        "heads": [torch.ones(h, dtype=dtype, device=device) for h in heads],
        "ffn": [torch.ones(lay.intermediate, dtype=dtype, device=device) for lay in layout.layers],
        "hidden": torch.ones(layout.hidden, dtype=dtype, device=device),
        "layers": torch.ones(len(layout.layers), dtype=dtype, device=device),
    }


def expand_heads(layer: LayerLayout, z: torch.Tensor) -> torch.Tensor:
    """A head gate (per key/value group or per query head) as one value per context feature."""
    per_head = layer.group_size if z.numel() == layer.kv_heads else 1
    return z.repeat_interleave(per_head * layer.head_dim)


def masked_norm(module: nn.Module, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """LayerNorm / RMSNorm of ``x`` over the dimensions with ``z != 0``, times ``z``."""
    keep = (z != 0).to(x.dtype)
    count = keep.sum().clamp_min(1)
    weight = getattr(module, "weight", None)
    if isinstance(module, nn.LayerNorm):
        mean = (x * keep).sum(-1, keepdim=True) / count
        centred = (x - mean) * keep
        var = (centred * centred).sum(-1, keepdim=True) / count
        y = centred * torch.rsqrt(var + module.eps)
        if weight is not None:
            y = y * weight
        if module.bias is not None:
            y = y + module.bias
        return y * z.to(y.dtype)
    eps = getattr(module, "variance_epsilon", getattr(module, "eps", None))
    if eps is None or weight is None:
        raise ValueError(f"hidden masks: unsupported norm {type(module).__name__}")
    xf = x.float()
    var = (xf * xf * keep.float()).sum(-1, keepdim=True) / count.float()
    y = weight * (xf * torch.rsqrt(var + eps)).to(x.dtype)
    return y * z.to(y.dtype)


class GroupMasker:
    """Forward hooks that apply group masks to a Hugging Face model (see the module docstring).

    Args:
        model: A supported model (a peft model works: hooks sit on the LoRA wrappers).
        masks: Group masks.

    Raises:
        TypeError, ValueError: Invalid masks (raised before any hook is registered).
    """

    def __init__(self, model: nn.Module, masks: Mapping[str, Any]) -> None:
        self.layout = describe(model)
        self.masks = check_group_masks(self.layout, masks)
        if self.masks["hidden"] is not None:
            for norm in self._norms():
                if not isinstance(norm, nn.LayerNorm) and not hasattr(norm, "weight"):
                    raise ValueError(f"{self.layout.name(norm)}: unsupported norm for hidden masks")
        self._handles: list[Any] = []
        self._attach()

    def _norms(self) -> list[nn.Module]:
        return [*self.layout.final_norms, *(n for lay in self.layout.layers for n in lay.norms)]

    def update(self, masks: Mapping[str, Any]) -> None:
        """Replace the masks (validated first; the kinds present must stay the same)."""
        new = check_group_masks(self.layout, masks)
        if {k for k, v in new.items() if v is not None} != {
            k for k, v in self.masks.items() if v is not None
        }:
            raise ValueError("GroupMasker.update: the mask kinds must stay the same")
        self.masks = new

    def _attach(self) -> None:
        hook = self._handles.append
        for lay in self.layout.layers:
            i = lay.index
            if self.masks["heads"] is not None:
                hook(lay.attn_out.register_forward_pre_hook(self._heads_hook(lay)))
            if self.masks["ffn"] is not None:
                hook(lay.ffn_out.register_forward_pre_hook(self._ffn_hook(i)))
            if self.masks["hidden"] is not None:
                for writer in lay.writers:
                    hook(writer.register_forward_hook(self._scale_output))
            if self.masks["layers"] is not None:
                hook(lay.module.register_forward_hook(self._layer_hook(i), with_kwargs=True))
        if self.masks["hidden"] is not None:
            for writer in self.layout.embed_writers:
                hook(writer.register_forward_hook(self._scale_output))
            for norm in self._norms():
                hook(norm.register_forward_hook(self._norm_hook))

    def _heads_hook(self, lay: LayerLayout):
        def pre(_module: nn.Module, args: tuple) -> tuple:
            z = expand_heads(lay, self.masks["heads"][lay.index]).to(args[0].dtype)
            return (args[0] * z, *args[1:])

        return pre

    def _ffn_hook(self, i: int):
        def pre(_module: nn.Module, args: tuple) -> tuple:
            return (args[0] * self.masks["ffn"][i].to(args[0].dtype), *args[1:])

        return pre

    def _scale_output(self, _module: nn.Module, _args: tuple, out: torch.Tensor) -> torch.Tensor:
        return out * self.masks["hidden"].to(out.dtype)

    def _norm_hook(self, module: nn.Module, args: tuple, _out: torch.Tensor) -> torch.Tensor:
        return masked_norm(module, args[0], self.masks["hidden"])

    def _layer_hook(self, i: int):
        def post(_module: nn.Module, args: tuple, kwargs: dict, out: Any) -> Any:
            x = args[0] if args else kwargs["hidden_states"]
            y = out[0] if isinstance(out, tuple) else out
            z = self.masks["layers"][i].to(y.dtype)
            mixed = x + z * (y - x)
            return (mixed, *out[1:]) if isinstance(out, tuple) else mixed

        return post

    def remove(self) -> None:
        """Remove every hook (the model computes its unmasked function again)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    @property
    def attached(self) -> bool:
        """Whether the hooks are registered."""
        return bool(self._handles)

    def __enter__(self) -> GroupMasker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def mask_groups(model: nn.Module, masks: Mapping[str, Any]) -> GroupMasker:
    """Apply group masks to ``model``'s forward; returns the `GroupMasker` (``.remove()`` undoes).

    Usable as a context manager: ``with mask_groups(model, masks): model(**batch)``.
    """
    return GroupMasker(model, masks)

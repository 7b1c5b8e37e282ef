"""`shrink`: a plain, smaller Hugging Face model of the same class, and its reload.

Choices:

* **Direct slicing, not Torch-Pruning.** The layouts of the three families are known module by
  module (`sparsecore.structures.layout`), so the dependent slices of a head / channel / hidden
  dimension are a fixed list, and the head-count attributes (``num_key_value_groups``,
  ``all_head_size``, ``split_size``) and the config must be rewritten anyway, which Torch-Pruning's
  LLM example (``examples/LLMs/prune_llm.py``, "Update model attributes") also does by hand
  after its ``MetaPruner`` pass, with one ratio for every layer. Tracing the model with
  Torch-Pruning would add a dependency on tracing HF forwards without removing any of that work.
* **A copy.** ``shrink`` deep-copies the model; the user's model is never modified (errors are
  raised before anything is copied).
* **Exactness check.** At the end the shrunk model's logits (or last hidden state on the kept
  dimensions) are compared with the masked model's on ``example_inputs`` in eval mode; beyond
  ``atol`` a ``RuntimeError`` is raised, as in `sparsecore.export.surgery`.
* **Soft gates are folded** into the kept weights (see `sparsecore.structures.resize`); layer gates
  must be 0 or 1.
* **Removing every head (or every FFN channel) of a layer is refused**: transformers has no layer
  class without attention, so such a layer must be removed whole (``masks["layers"][i] = 0``).
* **Llama-style head counts that do not divide the hidden size**: transformers 5.24's
  ``LlamaConfig`` (and Qwen2's, Mistral's) validates ``hidden_size % num_attention_heads == 0``
  on ``save_pretrained`` although ``head_dim`` is explicit (7 heads of 16 in a hidden size of
  160 is refused). Then ``num_attention_heads`` and ``num_key_value_heads`` in the config are set
  to the placeholder 1 (which always validates), ``stock`` is false and the true counts are in
  ``sparsecore_structure``: reload with `load_pretrained`.
* **Per-layer configs**: transformers 5.24 has a generic ``per_layer_config``
  (``HeterogeneousConfigMixin``), but the Llama, BERT and GPT-2 modeling code does not read it,
  so it cannot carry per-layer head / FFN counts for these classes.
* **GQA**: heads are removed by key/value group (a group and its query heads together), so each
  layer keeps ``num_attention_heads / num_key_value_heads`` query heads per group. A per-query-head
  mask must therefore be 0 for all or none of a group's heads.
* **Config and reload.** The config gets the new ``hidden_size`` / ``intermediate_size`` /
  ``num_hidden_layers`` / head counts (GPT-2: ``n_embd`` / ``n_inner`` / ``n_layer`` / ``n_head``;
  Llama-style: also ``head_dim`` and a trimmed ``layer_types``) and a ``sparsecore_structure``
  entry with the per-layer counts. When every layer has the same counts and the stock class
  derives the same head width (always for Llama/Qwen2/Mistral, which store ``head_dim``; for
  BERT/GPT-2 only when heads and hidden size were not pruned, since they derive the head width as
  ``hidden_size / num_heads``), the stock ``from_pretrained`` reloads it; ``stock`` in the entry
  says so. Otherwise (different counts per layer: transformers 5.24 has no per-layer head or FFN
  field for these classes, and removed ``pruned_heads``) `load_pretrained` builds the stock class,
  resizes each layer to the recorded counts, and loads the safetensors weights strictly.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparsecore.structures.layout import ModelLayout, describe
from sparsecore.structures.masking import GroupMasker, check_group_masks
from sparsecore.structures.resize import LayerPlan, resize_hidden, resize_layer, resize_linear

__all__ = ["load_pretrained", "plan_shrink", "shrink"]

_CONFIG_KEYS = {
    "llama": ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"),
    "bert": ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"),
    "gpt2": ("n_embd", "n_inner", "n_layer", "n_head"),
}


def _kept(z: torch.Tensor) -> torch.Tensor:
    return torch.nonzero(z.detach().cpu() != 0).flatten()


def _scale(z: torch.Tensor, idx: torch.Tensor) -> torch.Tensor | None:
    values = z.detach().cpu()[idx].float()
    return None if bool((values == 1).all()) else values


def _layer_plan(layout: ModelLayout, i: int, masks: dict[str, Any]) -> LayerPlan:
    lay = layout.layers[i]
    plan = LayerPlan()
    if masks["heads"] is not None:
        z = masks["heads"][i].detach().cpu().float()
        name = layout.name(lay.attention)
        if z.numel() == lay.kv_heads:
            kv = _kept(z)
            per_head = z.repeat_interleave(lay.group_size)
        else:
            alive = (z != 0).reshape(lay.kv_heads, lay.group_size)
            partial = torch.nonzero(alive.any(1) & ~alive.all(1)).flatten().tolist()
            if partial:
                raise ValueError(
                    f"{name}: GQA-misaligned head removal in layer {i}: key/value group(s) "
                    f"{partial} keep only some of their {lay.group_size} query heads; remove "
                    "whole groups (a key/value head together with its query heads)"
                )
            kv = torch.nonzero(alive.all(1)).flatten()
            per_head = z
        if kv.numel() == 0:
            raise ValueError(
                f"{name}: every head of layer {i} is removed; transformers has no layer without "
                f"attention, so remove the whole layer instead (group_masks['layers'][{i}] = 0)"
            )
        heads = (kv[:, None] * lay.group_size + torch.arange(lay.group_size)).reshape(-1)
        plan.heads, plan.kv, plan.head_scale = heads, kv, _scale(per_head, heads)
    if masks["ffn"] is not None:
        z = masks["ffn"][i]
        kept = _kept(z)
        if kept.numel() == 0:
            raise ValueError(
                f"{layout.name(lay.ffn_out)}: every FFN channel of layer {i} is removed; remove "
                f"the whole layer instead (group_masks['layers'][{i}] = 0)"
            )
        plan.ffn, plan.ffn_scale = kept, _scale(z, kept)
    return plan


def plan_shrink(layout: ModelLayout, masks: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``masks`` for shrinking and return the per-layer plan (nothing is modified).

    Returns:
        ``{"layers": kept layer indices, "plans": {index: LayerPlan}, "hidden": (idx, scale) or
        None}``.

    Raises:
        ValueError: See `shrink`.
    """
    norm = check_group_masks(layout, masks)
    model_name = type(layout.model).__name__
    keep_layers = list(range(len(layout.layers)))
    if norm["layers"] is not None:
        z = norm["layers"].detach().cpu().float()
        if not bool(((z == 0) | (z == 1)).all()):
            raise ValueError("group_masks['layers']: layer gates must be 0 or 1 to shrink")
        keep_layers = _kept(z).tolist()
        if not keep_layers:
            raise ValueError(f"group_masks['layers']: {model_name} would keep no layer")
        config = getattr(layout.model, "config", None)
        if len(keep_layers) < len(z) and getattr(config, "scale_attn_by_inverse_layer_idx", False):
            raise ValueError(
                f"{model_name}: layer removal changes the attention scaling of later layers "
                "(scale_attn_by_inverse_layer_idx=True)"
            )
    plans = {i: _layer_plan(layout, i, norm) for i in keep_layers}
    hidden = None
    if norm["hidden"] is not None:
        z = norm["hidden"]
        idx = _kept(z)
        if idx.numel() == 0:
            raise ValueError(f"group_masks['hidden']: {model_name} would keep no hidden dimension")
        scale = _scale(z, idx)
        tied = any(
            getattr(r, "weight", None) is e.weight
            for r in layout.readers
            for e in layout.embeddings
        )
        if scale is not None and tied:
            raise ValueError(
                f"{model_name}: soft hidden gates cannot be folded into tied input/output "
                "embeddings; use 0/1 hidden gates or untie the embeddings"
            )
        # BERT's classifier reads the pooler output, which keeps its width
        independent = ("classifier.",) if layout.family == "bert" else ()
        covered = layout.covered_parameters()
        uncovered = sorted(
            n
            for n, _ in layout.model.named_parameters()
            if n not in covered and not n.startswith((f"{layout.layer_list_name}.", *independent))
        )
        if idx.numel() < layout.hidden and uncovered:
            raise ValueError(
                f"{model_name}: hidden-dimension removal does not know how to slice "
                f"{uncovered[0]!r}; supported heads: lm_head, score, pooler"
            )
        hidden = (idx, scale)
    return {"layers": keep_layers, "plans": plans, "hidden": hidden}


def _run(model: nn.Module, inputs: Mapping[str, Any]) -> Any:
    return model(**inputs)


def _compare_output(out: Any, hidden_idx: torch.Tensor | None) -> torch.Tensor:
    logits = getattr(out, "logits", None)
    if logits is not None:
        return logits
    last = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    return last if hidden_idx is None else last[..., hidden_idx.to(last.device)]


def _default_inputs(layout: ModelLayout) -> dict[str, torch.Tensor]:
    emb = layout.embeddings[0]
    gen = torch.Generator().manual_seed(1234)
    ids = torch.randint(0, emb.num_embeddings, (2, 12), generator=gen)
    return {"input_ids": ids.to(emb.weight.device)}


def _update_config(layout: ModelLayout, keep_layers: list[int], old_layers: int) -> None:
    config = layout.model.config
    lays = layout.layers
    heads = [lay.heads for lay in lays]
    kv = [lay.kv_heads for lay in lays]
    inter = [lay.intermediate for lay in lays]
    d = lays[0].head_dim
    uniform = len(set(heads)) == 1 and len(set(kv)) == 1 and len(set(inter)) == 1
    keys = _CONFIG_KEYS[layout.family]
    for key, value in zip(keys, (layout.hidden, max(inter), len(lays), max(heads)), strict=True):
        setattr(config, key, value)
    if layout.family == "llama":
        config.num_key_value_heads = max(kv)
        config.head_dim = d
        types = getattr(config, "layer_types", None)
        if isinstance(types, list) and len(types) == old_layers:
            config.layer_types = [types[i] for i in keep_layers]
        stock = uniform
        if layout.hidden % max(heads):  # LlamaConfig.validate_architecture would refuse to save
            config.num_attention_heads = config.num_key_value_heads = 1
            stock = False
    else:
        stock = uniform and layout.hidden == heads[0] * d
    config.sparsecore_structure = {
        "version": 1,
        "family": layout.family,
        "head_dim": d,
        "heads": heads,
        "kv_heads": kv,
        "intermediate": inter,
        "stock": bool(stock),
    }
    pooler = next((r for r in layout.readers if layout.name(r).endswith("pooler.dense")), None)
    if pooler is not None and pooler.out_features != layout.hidden:
        # CoFi keeps the pooler's output width (only its inputs follow the hidden dims)
        config.sparsecore_structure["pooler_width"] = int(pooler.out_features)
        config.sparsecore_structure["stock"] = False


@torch.no_grad()
def shrink(
    model: nn.Module,
    group_masks: Mapping[str, Any],
    example_inputs: Mapping[str, Any] | None = None,
    *,
    atol: float = 1e-5,
) -> nn.Module:
    """A physically smaller copy of ``model`` without the groups whose gate is 0.

    Args:
        model: A Llama/Qwen2/Mistral, BERT/RoBERTa or GPT-2 Hugging Face model (merge LoRA
            adapters first: `sparsecore.adapters.merge_lora`). Not modified.
        group_masks: Group masks (`sparsecore.structures.masking`); nonzero soft gates are
            folded into the kept weights.
        example_inputs: Keyword inputs for the final check (default: 2 × 12 random token ids).
        atol: Tolerance of the final comparison with the masked model.

    Returns:
        A model of the same class with an updated config (see the module docstring).

    Raises:
        ValueError: Wrong group counts, a layer left with no head or FFN channel, GQA-misaligned
            head removal, non-binary layer gates, an unknown architecture (all before copying).
        RuntimeError: The shrunk model's output differs from the masked model's beyond ``atol``.
    """
    if hasattr(model, "peft_config"):
        raise ValueError("shrink: merge the LoRA adapters first (sparsecore.adapters.merge_lora)")
    layout = describe(model)
    plan = plan_shrink(layout, group_masks)
    inputs = dict(example_inputs) if example_inputs is not None else _default_inputs(layout)
    hidden_idx = None if plan["hidden"] is None else plan["hidden"][0]
    was_training = model.training
    model.eval()
    try:
        with GroupMasker(model, group_masks):
            reference = _compare_output(_run(model, inputs), hidden_idx).clone()
    finally:
        model.train(was_training)
    new = copy.deepcopy(model)
    new_layout = describe(new)
    old_layers = len(new_layout.layers)
    kept = [new_layout.layers[i] for i in plan["layers"]]
    for lay in kept:
        resize_layer(new_layout, lay, plan["plans"][lay.index])
    if plan["hidden"] is not None:
        resize_hidden(new_layout, *plan["hidden"])
    if len(kept) < old_layers:
        parent_name, _, attr = new_layout.layer_list_name.rpartition(".")
        parent = new.get_submodule(parent_name) if parent_name else new
        setattr(parent, attr, nn.ModuleList([lay.module for lay in kept]))
        for position, lay in enumerate(kept):
            for module in (lay.attention, lay.module):
                if hasattr(module, "layer_idx"):
                    module.layer_idx = position
    new_layout = describe(new)
    _update_config(new_layout, plan["layers"], old_layers)
    new.eval()
    got = _compare_output(_run(new, inputs), None)
    new.train(was_training)
    if got.shape != reference.shape or float((got - reference).abs().max()) > atol:
        raise RuntimeError(
            "shrink: the shrunk model's output differs from the masked model's beyond atol; "
            "please report this with the model"
        )
    return new


def _state_dict_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [path / s for s in shards]
    single = path / "model.safetensors"
    if not single.exists():
        raise FileNotFoundError(f"{path}: no model.safetensors (save with safe_serialization)")
    return [single]


def load_pretrained(path: str | Path, model_class: type | None = None, **kwargs: Any) -> nn.Module:
    """Reload a model saved by ``save_pretrained`` after `shrink`, with per-layer counts.

    Stock-expressible models (``config.sparsecore_structure["stock"]``) go through the stock
    ``from_pretrained``; others are built, resized per layer and loaded strictly from safetensors.

    Args:
        path: The directory ``save_pretrained`` wrote.
        model_class: The transformers class (default: ``config.architectures[0]``).
        **kwargs: Passed to ``from_pretrained`` on the stock path (``attn_implementation`` is
            honoured on both paths).

    Raises:
        ValueError: The checkpoint's weights do not match the recorded structure.
    """
    import transformers
    from safetensors.torch import load_file

    path = Path(path)
    config = transformers.AutoConfig.from_pretrained(path)
    cls = model_class or getattr(transformers, config.architectures[0])
    structure = getattr(config, "sparsecore_structure", None)
    if not structure or structure.get("stock"):
        return cls.from_pretrained(path, **kwargs)
    heads_key = _CONFIG_KEYS[structure["family"]][3]
    saved = {
        k: getattr(config, k) for k in (heads_key, "num_key_value_heads") if hasattr(config, k)
    }
    if "attn_implementation" in kwargs:
        config._attn_implementation = kwargs["attn_implementation"]
    for key in saved:
        setattr(config, key, 1)  # any valid count: every layer is resized below
    try:
        model = cls(config)
    finally:
        for key, value in saved.items():
            setattr(config, key, value)
    layout = describe(model)
    for lay, heads, kv, inter in zip(
        layout.layers,
        structure["heads"],
        structure["kv_heads"],
        structure["intermediate"],
        strict=True,
    ):
        lay.head_dim = int(structure["head_dim"])
        resize_layer(layout, lay, LayerPlan(heads=heads, kv=kv, ffn=inter))
    width = structure.get("pooler_width")
    if width is not None:
        for reader in layout.readers:
            if layout.name(reader).endswith("pooler.dense"):
                resize_linear(reader, out_idx=int(width))
        classifier = getattr(model, "classifier", None)
        if isinstance(classifier, nn.Linear):
            resize_linear(classifier, in_idx=int(width))
    state: dict[str, torch.Tensor] = {}
    for file in _state_dict_files(path):
        state.update(load_file(str(file)))
    result = model.load_state_dict(state, strict=False)
    canonical = {n for n, _ in model.named_parameters()}  # a tied duplicate is not listed
    missing = [k for k in result.missing_keys if k in canonical]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{path}: weights do not match the recorded structure (missing {missing[:3]}, "
            f"unexpected {result.unexpected_keys[:3]})"
        )
    model.eval()
    return model

"""Where the structure groups of a Hugging Face transformer live: one layout per family.

Three families are recognised *by module structure*, not by class name, so Qwen2, Mistral or
RoBERTa (same module names as Llama or BERT) work without an entry of their own:

* ``"llama"``: a ``layers`` ModuleList whose layers have ``self_attn.{q,k,v,o}_proj``,
  ``mlp.{gate,up,down}_proj``, ``input_layernorm`` and ``post_attention_layernorm`` (Llama, Qwen2,
  Mistral; grouped-query attention through ``num_key_value_heads``). Pre-norm: the residual
  stream is written by ``embed_tokens``, ``o_proj`` and ``down_proj``; the final ``norm`` feeds
  ``lm_head`` (or ``score``).
* ``"bert"``: ``encoder.layer`` with ``attention.self.{query,key,value}``,
  ``attention.output.{dense,LayerNorm}``, ``intermediate.dense``, ``output.{dense,LayerNorm}``
  (BERT, RoBERTa). Post-norm: every hidden state is a LayerNorm output; ``pooler.dense`` reads it.
* ``"gpt2"``: ``h`` with ``attn.{c_attn,c_proj}``, ``mlp.{c_fc,c_proj}``, ``ln_1``, ``ln_2``
  (HF ``Conv1D`` weights, stored ``(in, out)``). Pre-norm with ``wte`` + ``wpe`` and ``ln_f``.

Counts are read from the modules' weight shapes, so an already shrunk model (different counts
per layer) is described correctly. A peft model is unwrapped (``get_base_model``); a module wrapped
by a LoRA layer is still found under its own name (the wrapper, whose ``base_layer`` holds the
frozen weight), which is what makes group masks act on the whole ``W0 + BA`` path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from sparsecore.layouts import is_hf_conv1d

__all__ = ["FAMILIES", "LayerLayout", "ModelLayout", "base_layer", "describe"]

#: The architecture families `describe` recognises.
FAMILIES = ("llama", "bert", "gpt2")


def base_layer(module: nn.Module) -> nn.Module:
    """The module holding the weight: ``module.base_layer`` for a peft LoRA wrapper, else itself."""
    return getattr(module, "base_layer", module)


def out_features(module: nn.Module) -> int:
    """Output width of a Linear or HF Conv1D (also through a LoRA wrapper)."""
    inner = base_layer(module)
    weight = inner.weight
    return int(weight.shape[1] if is_hf_conv1d(inner) else weight.shape[0])


@dataclass
class LayerLayout:
    """The modules of one transformer layer that the structure groups touch.

    Attributes:
        index: Position in the layer list.
        name: Qualified module name of the layer (``"model.layers.3"``).
        module: The layer.
        attention: Module holding the head-count attributes (``self_attn`` / ``attention.self`` /
            ``attn``).
        qkv: Query/key/value projections (one fused ``c_attn`` for GPT-2).
        attn_out: Output projection; its *input* carries the heads.
        ffn_in: Projections producing the intermediate channels (gate/up, or one).
        ffn_out: Down projection; its *input* carries the intermediate channels.
        norms: Norms of the layer (on the residual stream / hidden states).
        writers: Modules whose output is added to the residual stream (pre-norm families).
        heads: Query heads. kv_heads: Key/value heads. head_dim: Width of one head.
        intermediate: Intermediate channels.
    """

    index: int
    name: str
    module: nn.Module
    attention: nn.Module
    qkv: list[nn.Module]
    attn_out: nn.Module
    ffn_in: list[nn.Module]
    ffn_out: nn.Module
    norms: list[nn.Module]
    writers: list[nn.Module]
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int

    @property
    def group_size(self) -> int:
        """Query heads per key/value group."""
        return self.heads // self.kv_heads


@dataclass
class ModelLayout:
    """The structure of a whole model (see the module docstring).

    Attributes:
        family: ``"llama"``, ``"bert"`` or ``"gpt2"``.
        model: The Hugging Face model (peft wrapper removed).
        layer_list: The ModuleList of layers. layer_list_name: its qualified name.
        layers: One `LayerLayout` per layer.
        embeddings: Embedding modules whose output width is the hidden size.
        embed_writers: Embeddings whose output enters the residual stream directly (pre-norm).
        final_norms: Norms outside the layers (``norm`` / ``ln_f`` / BERT's embedding LayerNorm).
        readers: Modules outside the layers that read the hidden states (``lm_head``, ``score``,
            ``pooler.dense``).
        hidden: Hidden size.
        names: Qualified name of every module above.
    """

    family: str
    model: nn.Module
    layer_list: nn.ModuleList
    layer_list_name: str
    layers: list[LayerLayout]
    embeddings: list[nn.Module]
    embed_writers: list[nn.Module]
    final_norms: list[nn.Module]
    readers: list[nn.Module]
    hidden: int
    names: dict[nn.Module, str] = field(default_factory=dict)

    def name(self, module: nn.Module) -> str:
        """Qualified name of ``module`` (``"?"`` if it is not part of the model)."""
        return self.names.get(module, "?")

    def covered_parameters(self) -> set[str]:
        """Names of the parameters the hidden-dimension group knows how to slice."""
        modules = [*self.embeddings, *self.final_norms, *self.readers]
        for layer in self.layers:
            modules += [*layer.qkv, layer.attn_out, *layer.ffn_in, layer.ffn_out, *layer.norms]
        covered = set()
        for module in modules:
            prefix = self.name(module)
            covered |= {f"{prefix}.{n}" for n, _ in module.named_parameters()}
        return covered


def _unwrap(model: nn.Module) -> nn.Module:
    get_base = getattr(model, "get_base_model", None)
    if callable(get_base) and not isinstance(model, nn.ModuleList):
        inner = get_base()
        if inner is not model:
            return inner
    return model


def _find(model: nn.Module, test) -> tuple[str, nn.Module] | None:
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0 and test(module[0]):
            return name, module
    return None


def _is_llama(layer: nn.Module) -> bool:
    attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
    return all(hasattr(attn, p) for p in ("q_proj", "k_proj", "v_proj", "o_proj")) and all(
        hasattr(mlp, p) for p in ("gate_proj", "up_proj", "down_proj")
    )


def _is_bert(layer: nn.Module) -> bool:
    attn = getattr(layer, "attention", None)
    return hasattr(getattr(attn, "self", None), "query") and hasattr(layer, "intermediate")


def _is_gpt2(layer: nn.Module) -> bool:
    return hasattr(getattr(layer, "attn", None), "c_attn") and hasattr(
        getattr(layer, "mlp", None), "c_fc"
    )


def _get(model: nn.Module, name: str) -> nn.Module | None:
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def _parent(name: str) -> str:
    return name.rpartition(".")[0]


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def _llama_layer(i: int, name: str, layer: nn.Module) -> LayerLayout:
    attn, mlp = layer.self_attn, layer.mlp
    head_dim = int(attn.head_dim)
    heads = out_features(attn.q_proj) // head_dim
    return LayerLayout(
        i,
        name,
        layer,
        attn,
        [attn.q_proj, attn.k_proj, attn.v_proj],
        attn.o_proj,
        [mlp.gate_proj, mlp.up_proj],
        mlp.down_proj,
        [layer.input_layernorm, layer.post_attention_layernorm],
        [attn.o_proj, mlp.down_proj],
        heads,
        out_features(attn.k_proj) // head_dim,
        head_dim,
        out_features(mlp.gate_proj),
    )


def _bert_layer(i: int, name: str, layer: nn.Module) -> LayerLayout:
    attn = layer.attention.self
    head_dim = int(attn.attention_head_size)
    heads = out_features(attn.query) // head_dim
    return LayerLayout(
        i,
        name,
        layer,
        attn,
        [attn.query, attn.key, attn.value],
        layer.attention.output.dense,
        [layer.intermediate.dense],
        layer.output.dense,
        [layer.attention.output.LayerNorm, layer.output.LayerNorm],
        [],
        heads,
        heads,
        head_dim,
        out_features(layer.intermediate.dense),
    )


def _gpt2_layer(i: int, name: str, layer: nn.Module) -> LayerLayout:
    attn, mlp = layer.attn, layer.mlp
    head_dim = int(attn.head_dim)
    heads = out_features(attn.c_attn) // (3 * head_dim)
    if getattr(attn, "is_cross_attention", False) or hasattr(layer, "crossattention"):
        raise ValueError(f"{name}: GPT-2 cross-attention layers are not supported")
    return LayerLayout(
        i,
        name,
        layer,
        attn,
        [attn.c_attn],
        attn.c_proj,
        [mlp.c_fc],
        mlp.c_proj,
        [layer.ln_1, layer.ln_2],
        [attn.c_proj, mlp.c_proj],
        heads,
        heads,
        head_dim,
        out_features(mlp.c_fc),
    )


def describe(model: nn.Module) -> ModelLayout:
    """The structure-group layout of a Hugging Face Llama-, BERT- or GPT-2-style model.

    Args:
        model: The model (a peft model is unwrapped).

    Returns:
        Its `ModelLayout`.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: No known layer layout is found (the message names the model class).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    model = _unwrap(model)
    candidates = (
        ("llama", _is_llama, _llama_layer),
        ("bert", _is_bert, _bert_layer),
        ("gpt2", _is_gpt2, _gpt2_layer),
    )
    matches = [(f, b, _find(model, t)) for f, t, b in candidates]
    matches = [m for m in matches if m[2] is not None]
    if not matches:
        raise ValueError(
            f"{type(model).__name__}: unknown architecture; sparsecore.structures knows "
            "Llama/Qwen2/Mistral-style decoders, BERT/RoBERTa encoders and GPT-2"
        )
    family, build, (list_name, layer_list) = matches[0]
    layers = [build(i, _join(list_name, str(i)), m) for i, m in enumerate(layer_list)]
    base = _parent(list_name) if family != "bert" else _parent(_parent(list_name))
    parts = {
        "llama": (["embed_tokens"], ["embed_tokens"], ["norm"], ["lm_head", "score"]),
        "gpt2": (["wte", "wpe"], ["wte", "wpe"], ["ln_f"], ["lm_head", "score"]),
        "bert": (
            [f"embeddings.{e}_embeddings" for e in ("word", "position", "token_type")],
            [],
            ["embeddings.LayerNorm"],
            ["pooler.dense"],
        ),
    }[family]
    root_parts = {"lm_head", "score"}

    def lookup(names: list[str]) -> list[nn.Module]:
        found_modules = []
        for n in names:
            module = _get(model, n if n in root_parts else _join(base, n))
            if module is not None:
                found_modules.append(module)
        return found_modules

    embeddings, writers, norms, readers = (lookup(p) for p in parts)
    if not embeddings:
        raise ValueError(f"{type(model).__name__}: no input embedding found next to {list_name}")
    hidden = int(embeddings[0].weight.shape[1])
    names = {m: n for n, m in model.named_modules()}
    return ModelLayout(
        family, model, layer_list, list_name, layers, embeddings, writers, norms, readers,
        hidden, names,
    )  # fmt: skip


def linear_weight(module: nn.Module) -> torch.Tensor:
    """The weight of a Linear / Conv1D as ``(out, in)`` (a view; through LoRA wrappers)."""
    inner = base_layer(module)
    return inner.weight.t() if is_hf_conv1d(inner) else inner.weight

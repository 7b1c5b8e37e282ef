"""Deployment: the routed model made deterministic, or (approximately) a plain smaller BERT.

**Default deployment: `deploy_routed`** [paper: "Top-1 usage-driven mechanism to jointly perform
dynamic routing during training and deterministic pruning at deployment"]. The trained model is
kept as it is, in eval mode: each Expert Attention layer keeps its router and its physically
remaining heads (`remove_dead_heads` drops the removed heads' query/key/value rows and router
rows), routing is the deterministic arg-max, and the gate's forward value is 1, so the deployed
forward *is* the trained routed forward (logits equal; tested). Layers left with one head skip
the router (the single head is always chosen); layers with none add only the expander bias.
A layer with ``k > 1`` heads still computes all ``k`` heads' attention and selects one per
token (a per-token gather), so its cost is that of ``k`` heads.

**Optional: `to_plain_bert`**, a stock-forward ``BertModel`` (``ShrpBertModel``), exact when
every layer keeps at most one head and an approximation (ridge-fitted ``W_O``) otherwise; the
reproduction measures that gap ("trained vs plain"). The rest of this docstring is about it.

Why not ``transformers``' own ``prune_heads``: transformers 5 removed
``PreTrainedModel.prune_heads`` and the ``pruned_heads`` config field (checked on transformers
5.24: neither name occurs in the library any more), and a stock ``BertConfig`` derives the head
size as ``hidden_size / num_attention_heads`` with the same head count in every layer. A BERT with
a different number of heads per layer can therefore not be described by a stock ``BertConfig``.
What we deploy instead:

* `ShrpBertConfig` (``model_type = "shrp_bert"``): a ``BertConfig`` plus
  ``heads_per_layer``; `ShrpBertModel`: a ``BertModel`` subclass whose only change is that
  its constructor builds each layer's query/key/value with ``heads_per_layer[i] · head_size``
  outputs and ``attention.output.dense`` with as many inputs. Its forward *is* transformers'
  ``BertModel`` forward (``BertSelfAttention`` infers the head count from the projection width).
  A layer with no head keeps only the output bias (a ten-line module, `NoHeadSelfAttention`).
  Both classes are registered with ``AutoConfig`` / ``AutoModel`` when `sparse_shrp` is
  imported, so ``save_pretrained`` / ``AutoModel.from_pretrained`` round-trip. A stock
  ``BertModel.from_pretrained`` cannot read it (shape mismatch), which is the price of the
  physically smaller layers.

Head removal from a *stock* BERT that keeps at least one head per layer is the core's
``sparsecore.structures.shrink`` (a plain ``BertModel``, reloaded by
``sparsecore.structures.load_pretrained``); this module keeps what is SHRP's own: layers with no
head, and the routed → plain conversion. The head → projection-row indexing is the core's
``head_features``.

What is exact and what is not (the routed → plain gap):

* A layer with **one** kept head: Top-1 routing always picks it and the gate is exactly 1, so the
  routed block is ``LayerNorm(E · head(x) + b + x)``: a one-head BERT block with
  ``output.dense = E``. Exact.
* A layer with **no** head: ``LayerNorm(b + x)`` in both. Exact.
* A layer with **k > 1** kept heads: the routed block selects one head per token; a BERT block
  sums ``W_O,h · head_h(x)`` over its heads. No BERT block computes a per-token selection, so the
  deployed block is the closest one in the least-squares sense: ``W_O`` (and its bias) are fitted
  by ridge regression so that ``Σ_h W_O,h head_h(x) + b`` matches the routed ``E · head_{h*}(x) +
  b_E`` on the usage-set tokens (inputs taken from the routed model). Without usage batches the
  fallback is the usage-weighted mixture ``W_O,h = u_h · E``. The benchmark measures the
  resulting accuracy gap (routed vs deployed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, BertConfig, BertModel

from sparse_shrp.expert_attention import ExpertAttention, valid_tokens
from sparse_shrp.usage import _call
from sparsecore.structures import head_features

__all__ = [
    "NoHeadSelfAttention",
    "ShrpBertConfig",
    "ShrpBertModel",
    "deploy_routed",
    "prune_bert_heads",
    "remove_dead_heads",
    "to_plain_bert",
]


class ShrpBertConfig(BertConfig):
    """``BertConfig`` plus ``heads_per_layer`` (heads kept in each layer)."""

    model_type = "shrp_bert"

    def __init__(self, heads_per_layer: list[int] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if heads_per_layer is None:
            heads_per_layer = [self.num_attention_heads] * self.num_hidden_layers
        heads_per_layer = [int(h) for h in heads_per_layer]
        if len(heads_per_layer) != self.num_hidden_layers:
            raise ValueError(
                f"heads_per_layer has {len(heads_per_layer)} entries, not num_hidden_layers="
                f"{self.num_hidden_layers}"
            )
        if any(not 0 <= h <= self.num_attention_heads for h in heads_per_layer):
            raise ValueError(f"heads_per_layer entries must lie in [0, {self.num_attention_heads}]")
        self.heads_per_layer = heads_per_layer


class NoHeadSelfAttention(nn.Module):
    """Self-attention with no head: an empty context (the block keeps its output bias)."""

    num_attention_heads = 0

    def __init__(self, head_size: int) -> None:
        super().__init__()
        self.attention_head_size = head_size

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple:
        """``(zeros (batch, length, 0), None)``."""
        return hidden_states.new_zeros(*hidden_states.shape[:-1], 0), None


class ShrpBertModel(BertModel):
    """A ``BertModel`` with ``config.heads_per_layer[i]`` heads in layer ``i`` (see module doc)."""

    config_class = ShrpBertConfig

    def __init__(self, config: ShrpBertConfig, add_pooling_layer: bool = True) -> None:
        super().__init__(config, add_pooling_layer=add_pooling_layer)
        head_size = config.hidden_size // config.num_attention_heads
        for layer, heads in zip(self.encoder.layer, config.heads_per_layer, strict=True):
            attn = layer.attention
            width = heads * head_size
            ref = attn.self.query
            kw = {"device": ref.weight.device, "dtype": ref.weight.dtype}
            if heads == 0:
                attn.self = NoHeadSelfAttention(head_size)
            else:
                for proj in ("query", "key", "value"):
                    setattr(attn.self, proj, nn.Linear(config.hidden_size, width, **kw))
                attn.self.num_attention_heads = heads
                attn.self.all_head_size = width
            attn.output.dense = nn.Linear(width, config.hidden_size, **kw)


def _register() -> None:
    try:
        AutoConfig.register("shrp_bert", ShrpBertConfig)
        AutoModel.register(ShrpBertConfig, ShrpBertModel)
    except ValueError:  # already registered (module re-imported)
        pass


_register()


def _plain_config(bert: BertModel, heads: list[int]) -> ShrpBertConfig:
    data = bert.config.to_dict()
    for key in ("model_type", "architectures", "transformers_version", "heads_per_layer"):
        data.pop(key, None)
    config = ShrpBertConfig(heads_per_layer=heads, **data)
    config._attn_implementation = bert.config._attn_implementation
    return config


def _linear_rows(linear: nn.Linear, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return linear.weight[rows].clone(), linear.bias[rows].clone()


def _assemble(bert: BertModel, attention: list[dict[str, torch.Tensor]]) -> ShrpBertModel:
    """A `ShrpBertModel` with ``bert``'s weights and the given attention weights."""
    heads = [int(a["heads"]) for a in attention]
    plain = ShrpBertModel(_plain_config(bert, heads), add_pooling_layer=bert.pooler is not None)
    state = {k: v for k, v in bert.state_dict().items() if ".attention." not in k}
    missing = plain.load_state_dict(state, strict=False).missing_keys
    if any(".attention." not in k for k in missing):
        raise RuntimeError(f"could not copy weights {missing[:3]}")
    with torch.no_grad():
        for layer, weights in zip(plain.encoder.layer, attention, strict=True):
            attn = layer.attention
            if weights["heads"] > 0:
                for proj in ("query", "key", "value"):
                    getattr(attn.self, proj).weight.copy_(weights[f"{proj}.weight"])
                    getattr(attn.self, proj).bias.copy_(weights[f"{proj}.bias"])
            attn.output.dense.weight.copy_(weights["dense.weight"])
            attn.output.dense.bias.copy_(weights["dense.bias"])
            attn.output.LayerNorm.load_state_dict(weights["layer_norm"])
    plain.to(next(bert.parameters()).device)
    plain.train(bert.training)
    return plain


@torch.no_grad()
def prune_bert_heads(bert: BertModel, keep: Mapping[int, torch.Tensor]) -> ShrpBertModel:
    """Physically remove heads of a plain ``BertModel`` (what ``prune_heads`` used to do).

    Args:
        bert: A stock ``BertModel`` (all layers with ``num_attention_heads`` heads).
        keep: ``{layer index: bool (num_heads,)}`` heads to keep (layers not named keep all).

    Returns:
        A `ShrpBertModel` computing exactly the masked model.
    """
    if not isinstance(bert, BertModel):
        raise TypeError(f"bert must be a transformers BertModel, got {type(bert).__name__}")
    heads = bert.config.num_attention_heads
    size = bert.config.hidden_size // heads
    attention = []
    for i, layer in enumerate(bert.encoder.layer):
        if not hasattr(layer.attention.self, "query"):
            raise ValueError(f"bert: layer {i} is not a stock BERT attention block")
        mask = torch.as_tensor(keep.get(i, torch.ones(heads, dtype=torch.bool))).bool().cpu()
        if mask.shape != (heads,):
            raise ValueError(f"keep[{i}] must have shape ({heads},), got {tuple(mask.shape)}")
        rows = head_features(mask, size)
        entry: dict[str, Any] = {"heads": int(mask.sum())}
        for proj in ("query", "key", "value"):
            w, b = _linear_rows(getattr(layer.attention.self, proj), rows)
            entry[f"{proj}.weight"], entry[f"{proj}.bias"] = w, b
        dense = layer.attention.output.dense
        entry["dense.weight"] = dense.weight[:, rows].clone()
        entry["dense.bias"] = dense.bias.clone()
        entry["layer_norm"] = layer.attention.output.LayerNorm.state_dict()
        attention.append(entry)
    return _assemble(bert, attention)


@torch.no_grad()
def remove_dead_heads(model: nn.Module) -> dict[str, int]:
    """Physically drop the heads with ``head_alive == False`` from every Expert Attention layer.

    The routed model's outputs do not change (dead heads are never chosen and the gate's forward
    value is 1). Returns the number of heads removed per layer.
    """
    removed = {}
    for name, layer in model.named_modules():
        if not isinstance(layer, ExpertAttention):
            continue
        alive = layer.head_alive.cpu()
        if bool(alive.all()):
            removed[name] = 0
            continue
        rows = head_features(alive, layer.head_size)
        for proj in ("query", "key", "value"):
            old = getattr(layer, proj)
            new = nn.Linear(
                old.in_features, rows.numel(), device=old.weight.device, dtype=old.weight.dtype
            )
            new.weight.copy_(old.weight[rows])
            new.bias.copy_(old.bias[rows])
            setattr(layer, proj, new)
        router = nn.Linear(
            layer.router.in_features,
            int(alive.sum()),
            device=layer.router.weight.device,
            dtype=layer.router.weight.dtype,
        )
        router.weight.copy_(layer.router.weight[alive])
        router.bias.copy_(layer.router.bias[alive])
        layer.router = router
        layer.usage = layer.usage[alive.to(layer.usage.device)].clone()
        layer.head_alive = layer.head_alive[alive.to(layer.head_alive.device)].clone()
        removed[name] = int((~alive).sum())
        layer.num_heads = int(alive.sum())
    return removed


@torch.no_grad()
def deploy_routed(model: nn.Module) -> nn.Module:
    """The trained routed model, deterministic and physically smaller, in place.

    Removed heads (``head_alive == False``) are dropped physically (`remove_dead_heads`), usage
    counting is switched off and the model is put in eval mode. Its logits equal those of the
    routed model it came from (masked heads are never chosen and the gate's forward value is 1).

    Args:
        model: A model with Expert Attention layers (finalize the `SHRP` method first, or call
            `SHRP.deploy`, which does).

    Returns:
        ``model``, in eval mode.

    Raises:
        ValueError: ``model`` has no Expert Attention layer.
    """
    layers = [m for m in model.modules() if isinstance(m, ExpertAttention)]
    if not layers:
        raise ValueError("model: no ExpertAttention layer; nothing to deploy")
    remove_dead_heads(model)
    for layer in layers:
        layer.counting = False
    return model.eval()


def _fit_dense(
    layer: ExpertAttention, inputs: list[tuple[torch.Tensor, Any]], rows: torch.Tensor, ridge: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ridge fit of ``W, b`` with ``[ctx_kept] W^T + b ≈ E ctx_{h*} + b_E`` on valid tokens."""
    feats, targets = [], []
    for hidden, mask in inputs:
        b, t, _ = hidden.shape
        valid = valid_tokens(mask, b, t).to(hidden.device)
        ctx = layer.head_contexts(hidden, mask)
        _, top1 = layer.route(hidden)
        chosen = ctx.gather(2, top1[..., None, None].expand(b, t, 1, layer.head_size)).squeeze(2)
        targets.append(layer.expander(chosen)[valid].double())
        feats.append(ctx.reshape(b, t, -1)[..., rows][valid].double())
    x = torch.cat(feats)
    y = torch.cat(targets)
    x = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)], dim=1)
    gram = x.T @ x
    reg = ridge * gram.diagonal().mean() * torch.eye(gram.shape[0], dtype=x.dtype, device=x.device)
    reg[-1, -1] = 0.0
    solution = torch.linalg.solve(gram + reg, x.T @ y)
    weight = solution[:-1].T.to(layer.expander.weight.dtype)
    return weight, solution[-1].to(layer.expander.bias.dtype)


@torch.no_grad()
def to_plain_bert(
    bert: BertModel, batches: Iterable[Any] | None = None, ridge: float = 1e-4
) -> ShrpBertModel:
    """Convert a ``BertModel`` with Expert Attention layers to a plain `ShrpBertModel`.

    Removed heads (``head_alive == False``) are dropped physically; see the module docstring for
    the exact (0 or 1 kept head) and fitted (k > 1 heads) cases.

    Args:
        bert: The ``BertModel`` whose ``encoder.layer[i].attention`` are Expert Attention layers.
        batches: Usage-set inputs of ``bert`` (keyword dicts, tuples or tensors) for the
            least-squares fit of layers with more than one head; ``None``: usage-weighted mixture.
        ridge: Relative ridge strength of the fit.
    """
    if not isinstance(bert, BertModel):
        raise TypeError(f"bert must be a transformers BertModel, got {type(bert).__name__}")
    layers = [layer.attention for layer in bert.encoder.layer]
    if not all(isinstance(a, ExpertAttention) for a in layers):
        raise ValueError("bert: every encoder layer's attention must be an ExpertAttention")
    captured: dict[int, list[tuple[torch.Tensor, Any]]] = {i: [] for i in range(len(layers))}
    needs_fit = [int(a.head_alive.sum()) > 1 for a in layers]
    if batches is not None and any(needs_fit):
        handles = []
        for i, attn in enumerate(layers):

            def grab(_m: nn.Module, args: tuple, kwargs: dict, i: int = i) -> None:
                hidden = kwargs.get("hidden_states", args[0] if args else None)
                mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
                captured[i].append((hidden.detach(), mask))

            handles.append(attn.register_forward_pre_hook(grab, with_kwargs=True))
        was_training = bert.training
        bert.eval()
        try:
            for batch in batches:
                _call(bert, batch)
        finally:
            bert.train(was_training)
            for h in handles:
                h.remove()
    attention = []
    for i, attn in enumerate(layers):
        alive = attn.head_alive.cpu()
        rows = head_features(alive, attn.head_size)
        k = int(alive.sum())
        entry: dict[str, Any] = {"heads": k}
        for proj in ("query", "key", "value"):
            w, b = _linear_rows(getattr(attn, proj), rows)
            entry[f"{proj}.weight"], entry[f"{proj}.bias"] = w, b
        expander = attn.expander
        if k <= 1:
            entry["dense.weight"] = expander.weight[:, :0] if k == 0 else expander.weight.clone()
            entry["dense.bias"] = expander.bias.clone()
        elif captured[i]:
            entry["dense.weight"], entry["dense.bias"] = _fit_dense(attn, captured[i], rows, ridge)
        else:
            usage = attn.usage.cpu()[alive].double()
            frac = usage / usage.sum() if usage.sum() > 0 else torch.full((k,), 1.0 / k)
            blocks = [expander.weight * float(f) for f in frac]
            entry["dense.weight"] = torch.cat(blocks, dim=1)
            entry["dense.bias"] = expander.bias.clone()
        entry["layer_norm"] = attn.LayerNorm.state_dict()
        attention.append(entry)
    return _assemble(bert, attention)

"""Expert Attention: every head of a pretrained BERT attention block becomes a routed expert.

SHRP ("Specialized Head Routing and Pruning for Efficient Encoder Compression", Su, Zhang, Zhang,
Liu, Xu & Zhang, arXiv 2512.20635, Dec 2025; earlier "Expert Attention: MoE-Based Head Decoupling
and Pruning for Pretrained Encoders", ACL ARR 2025; no official code) replaces multi-head
attention by *Expert Attention*: each head is an independent expert, a router picks one head per
token (Top-1), and a lightweight *shared expander* maps the chosen head's output back to the
hidden size, refining it. The module below implements that; what the paper's abstracts state is
marked [paper], what had to be reconstructed is marked [reconstructed] with the reason.

* Experts [paper]: head ``h`` keeps its own slices of the pretrained query / key / value
  projections (the original ``nn.Linear`` modules are reused, so nothing is re-initialised).
* Router [reconstructed]: a ``Linear(hidden, heads)`` on the token's input hidden state,
  softmax over the *alive* heads; per token, not per sequence, because the paper routes "per
  token exactly one head" in the Switch-Transformer manner it builds on. Initialised N(0, 0.02²)
  from a fixed seed so that the initial Top-1 choice is spread over heads (an all-zero router
  would send every token to head 0 through argmax tie-breaking).
* Top-1 [paper]: only the arg-max head's context vector is used (ties: lower head index, the
  ``torch.argmax`` rule). Gate [reconstructed]: the output is multiplied by ``p / p.detach()``,
  whose forward value is exactly 1. Its gradient is ``∇p / p = ∇log p`` (not ``∇p``, which is
  what Switch Transformer's ``p · E(x)`` gate gives): the router receives the score-function
  signal ``<∂L/∂out, out> · ∇log p_{h*}``, i.e. Switch's router gradient divided by ``p_{h*}``.
  Forward value 1 was chosen so that (a) removing heads that are never chosen leaves the
  outputs bit-for-bit equal (no softmax renormalisation enters the forward), (b) a layer left
  with one head computes a plain attention block, which a stock BERT layer can express, and
  (c) the deployed model (deterministic arg-max routing, `sparse_shrp.deploy.deploy_routed`)
  computes exactly the trained forward.
* Shared expander [paper: "lightweight shared expander feed-forward network"; its exact form is
  reconstructed]: one ``Linear(head_size, hidden)`` per layer, shared by all heads, in place of
  the per-head slices of the output projection ``W_O``. It is linear (not a two-layer FFN)
  because a linear expander *is* BERT's ``attention.output.dense`` at deployment, which keeps the
  deployed model a BERT model. Initialised as the sum of the per-head ``W_O`` slices (with
  ``W_O``'s bias), i.e. the map that reproduces the original block if every head produced the
  chosen head's context vector.
* Residual, dropout and LayerNorm are the pretrained ``BertSelfOutput`` ones, unchanged.
* A layer whose heads are all removed keeps only the expander bias (the "whole attention block
  removed" case): its output is ``LayerNorm(bias + x)``, which is what a BERT block with no
  heads computes.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

__all__ = [
    "ExpertAttention",
    "balance_loss",
    "expert_layers",
    "to_expert_attention",
    "valid_tokens",
]


def valid_tokens(attention_mask: torch.Tensor | None, batch: int, length: int) -> torch.Tensor:
    """Which key positions are real tokens, as a ``(batch, length)`` bool tensor.

    Accepts what Hugging Face BERT layers receive: ``None`` (no padding), a boolean mask
    (``True`` = attend; sdpa) or an additive float mask (0 = attend; eager), 2-D or 4-D.
    """
    if attention_mask is None:
        return torch.ones(batch, length, dtype=torch.bool)
    mask = attention_mask
    allowed = mask if mask.dtype == torch.bool else mask == 0
    if allowed.dim() == 4:
        allowed = allowed.any(dim=-2).reshape(allowed.shape[0], -1)[:, -length:]
    elif allowed.dim() != 2:
        raise ValueError(f"attention_mask: unsupported shape {tuple(mask.shape)}")
    return allowed.expand(batch, length)


def balance_loss(
    probs: torch.Tensor, top1: torch.Tensor, valid: torch.Tensor, num_experts: int | None = None
) -> torch.Tensor:
    """Switch-Transformer load-balancing loss ``H · Σ_h f_h · P_h`` over the valid tokens.

    ``f_h`` is the fraction of valid tokens whose Top-1 head is ``h`` (no gradient), ``P_h`` the
    mean router probability of head ``h``; ``H`` is ``num_experts`` (default: the heads that can
    be chosen, i.e. probability columns that are not identically zero). It equals 1 under uniform
    routing, and when the probabilities agree with the dispatch (``P = f``) it is ``H · Σ f²`` ≥ 1,
    with equality only for uniform routing.

    Args:
        probs: Router probabilities ``(..., heads)``.
        top1: Chosen head per token ``(...)``.
        valid: Bool ``(...)``: tokens that count.
        num_experts: ``H`` (default: inferred from ``probs``).
    """
    heads = probs.shape[-1]
    p = probs[valid]
    if p.numel() == 0:
        return probs.sum() * 0.0
    f = torch.bincount(top1[valid], minlength=heads).to(p.dtype) / p.shape[0]
    if num_experts is None:
        num_experts = int((probs.detach().reshape(-1, heads) > 0).any(0).sum())
    return num_experts * (f * p.mean(0)).sum()


class ExpertAttention(nn.Module):
    """A BERT attention block (self-attention + output) as Top-1-routed head experts.

    Built by `to_expert_attention` from a pretrained ``BertAttention``-like module; the
    forward signature is the one Hugging Face BERT layers call.

    Attributes:
        num_heads: Heads still present (physically).
        head_size: Size of one head.
        head_alive: Persistent bool buffer ``(num_heads,)``: heads the router may choose.
        usage: Persistent float64 buffer ``(num_heads,)``: Top-1 counts accumulated while
            `counting` is on (training-mode forwards only).
        counting: Whether training-mode forwards add to `usage`.
        last_probs / last_top1 / last_valid: Routing of the latest forward (for the loss).
    """

    def __init__(
        self,
        query: nn.Linear,
        key: nn.Linear,
        value: nn.Linear,
        expander: nn.Linear,
        layer_norm: nn.LayerNorm,
        num_heads: int,
        head_size: int,
        attn_dropout: float = 0.0,
        hidden_dropout: float = 0.0,
        router_std: float = 0.02,
        seed: int = 0,
    ) -> None:
        super().__init__()
        hidden = layer_norm.normalized_shape[0]
        if query.out_features != num_heads * head_size:
            raise ValueError(
                f"query has {query.out_features} outputs, not num_heads*head_size="
                f"{num_heads * head_size}"
            )
        self.query, self.key, self.value = query, key, value
        self.expander = expander
        self.LayerNorm = layer_norm
        self.router = nn.Linear(hidden, num_heads)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            weight = torch.randn(num_heads, hidden, generator=gen) * router_std
            self.router.weight.copy_(weight.to(self.router.weight))
            self.router.bias.zero_()
        self.router.to(device=query.weight.device, dtype=query.weight.dtype)
        self.num_heads = num_heads
        self.head_size = head_size
        self.attention_head_size = head_size
        self.attn_dropout = nn.Dropout(attn_dropout)
        self.dropout = nn.Dropout(hidden_dropout)
        device = query.weight.device
        self.register_buffer("head_alive", torch.ones(num_heads, dtype=torch.bool, device=device))
        self.register_buffer("usage", torch.zeros(num_heads, dtype=torch.float64, device=device))
        self.counting = False
        self.last_probs: torch.Tensor | None = None
        self.last_top1: torch.Tensor | None = None
        self.last_valid: torch.Tensor | None = None

    @property
    def num_attention_heads(self) -> int:
        """Heads present (the name FLOP counters look for)."""
        return self.num_heads

    def route(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Router probabilities over alive heads and the Top-1 head, per token."""
        logits = self.router(hidden).float()
        logits = logits.masked_fill(~self.head_alive, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        return probs, logits.argmax(dim=-1)

    def head_contexts(
        self, hidden: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Every head's attention output, ``(batch, length, heads, head_size)``."""
        b, t, _ = hidden.shape
        shape = (b, t, self.num_heads, self.head_size)
        q = self.query(hidden).view(shape).transpose(1, 2)
        k = self.key(hidden).view(shape).transpose(1, 2)
        v = self.value(hidden).view(shape).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_size)
        if attention_mask is not None:
            if attention_mask.dtype == torch.bool:
                scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
            else:
                scores = scores + attention_mask.to(scores.dtype)
        weights = self.attn_dropout(torch.softmax(scores, dim=-1))
        return (weights @ v).transpose(1, 2)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, None]:
        """Top-1 routed attention; returns ``(output, None)`` like ``BertAttention``."""
        b, t, _ = hidden_states.shape
        if self.num_heads == 0 or not bool(self.head_alive.any()):
            out = self.expander.bias.expand_as(hidden_states)
            self.last_probs = self.last_top1 = self.last_valid = None
            return self.LayerNorm(self.dropout(out) + hidden_states), None
        if self.num_heads == 1 and not self.training:
            # deterministic fast path: the only head is always chosen and the gate is 1
            ctx = self.head_contexts(hidden_states, attention_mask).squeeze(2)
            self.last_probs = self.last_top1 = self.last_valid = None
            out = self.expander(ctx)
            return self.LayerNorm(self.dropout(out) + hidden_states), None
        valid = valid_tokens(attention_mask, b, t).to(hidden_states.device)
        probs, top1 = self.route(hidden_states)
        ctx = self.head_contexts(hidden_states, attention_mask)
        index = top1[..., None, None].expand(b, t, 1, self.head_size)
        chosen = ctx.gather(2, index).squeeze(2)
        gate = probs.gather(-1, top1[..., None])
        gate = (gate / gate.detach()).to(chosen.dtype)  # forward value exactly 1
        out = self.expander(chosen) * gate
        if self.training:
            self.last_probs, self.last_top1, self.last_valid = probs, top1, valid
            if self.counting:
                with torch.no_grad():
                    counts = torch.bincount(top1[valid], minlength=self.num_heads)
                    self.usage += counts.to(self.usage)
        else:
            self.last_probs = self.last_top1 = self.last_valid = None
        return self.LayerNorm(self.dropout(out) + hidden_states), None

    def aux_loss(self) -> torch.Tensor:
        """`balance_loss` of the latest training forward (0 if none)."""
        if self.last_probs is None:
            return torch.zeros((), device=self.expander.weight.device)
        alive = int(self.head_alive.sum())
        return balance_loss(self.last_probs, self.last_top1, self.last_valid, alive)

    def extra_repr(self) -> str:  # noqa: D102
        alive = int(self.head_alive.sum())
        return f"heads={self.num_heads}, alive={alive}, head_size={self.head_size}"


def _is_bert_attention(module: nn.Module) -> bool:
    inner = getattr(module, "self", None)
    output = getattr(module, "output", None)
    return (
        inner is not None
        and output is not None
        and all(isinstance(getattr(inner, n, None), nn.Linear) for n in ("query", "key", "value"))
        and isinstance(getattr(output, "dense", None), nn.Linear)
        and isinstance(getattr(output, "LayerNorm", None), nn.LayerNorm)
    )


def expert_layers(model: nn.Module) -> dict[str, ExpertAttention]:
    """Every `ExpertAttention` of ``model`` by qualified name, in model order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, ExpertAttention)}


@torch.no_grad()
def to_expert_attention(model: nn.Module, seed: int = 0, router_std: float = 0.02) -> nn.Module:
    """Replace every BERT self-attention block of ``model`` by `ExpertAttention`, in place.

    Works on ``BertModel`` and the task models around it (``BertForSequenceClassification``, a
    user module holding a ``BertModel``), built from a config or loaded pretrained. The query,
    key, value, LayerNorm modules are reused; the expander is initialised from ``W_O``.

    Args:
        model: The model.
        seed: Seed of the routers' initialisation (layer ``i`` uses ``seed + i``).
        router_std: Standard deviation of the router's initial weights.

    Returns:
        ``model`` (modified in place).

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: No BERT self-attention block is found, or one is a cross-attention /
            decoder block (Expert Attention is defined for bidirectional encoders).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    if not router_std >= 0:
        raise ValueError(f"router_std must be >= 0, got {router_std}")
    found = [(n, m) for n, m in model.named_modules() if _is_bert_attention(m)]
    if not found:
        raise ValueError(
            "model: no BERT self-attention block (a module with .self.query/key/value and "
            ".output.dense/LayerNorm) was found"
        )
    for name, module in found:
        inner = module.self
        if getattr(module, "is_cross_attention", False) or getattr(inner, "is_decoder", False):
            raise ValueError(
                f"model: {name} is a decoder / cross-attention block; SHRP is for encoders"
            )
    for index, (name, module) in enumerate(found):
        inner, output = module.self, module.output
        head_size = int(inner.attention_head_size)
        heads = inner.query.out_features // head_size
        dense = output.dense
        expander = nn.Linear(
            head_size, dense.out_features, device=dense.weight.device, dtype=dense.weight.dtype
        )
        expander.weight.copy_(dense.weight.reshape(dense.out_features, heads, head_size).sum(1))
        expander.bias.copy_(dense.bias)
        attn_p = float(getattr(inner.dropout, "p", 0.0)) if hasattr(inner, "dropout") else 0.0
        hidden_p = float(getattr(output.dropout, "p", 0.0)) if hasattr(output, "dropout") else 0.0
        expert = ExpertAttention(
            inner.query,
            inner.key,
            inner.value,
            expander,
            output.LayerNorm,
            heads,
            head_size,
            attn_p,
            hidden_p,
            router_std,
            seed + index,
        )
        expert.train(module.training)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, expert)
    return model

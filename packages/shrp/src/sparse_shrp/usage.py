"""Top-1 usage: counting which head the router picks, and choosing the heads to remove.

SHRP's pruning is "usage-driven" and "deterministic" [paper]: after training, the heads the router
(almost) never picks are removed. Usage is the number of real (non-padding) tokens whose Top-1
head is ``h``, per layer; the usage fraction divides by the tokens of that layer (every layer sees
the same tokens, so fractions are comparable across layers).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from sparse_shrp.expert_attention import ExpertAttention, expert_layers, valid_tokens
from sparsecore.select import keep_count, topk_mask

__all__ = ["measure_usage", "routing_entropy", "select_heads"]


def _call(model: nn.Module, batch: Any) -> Any:
    if isinstance(batch, Mapping):
        return model(**batch)
    if isinstance(batch, tuple | list):
        return model(*batch)
    return model(batch)


@torch.no_grad()
def measure_usage(model: nn.Module, batches: Iterable[Any]) -> dict[str, torch.Tensor]:
    """Top-1 counts per head of every Expert Attention layer over ``batches`` (eval mode).

    Args:
        model: A model converted with `sparse_shrp.to_expert_attention`.
        batches: Model inputs: dicts of keyword arguments (``{"input_ids": ..., "attention_mask":
            ...}``), tuples of positional arguments, or tensors.

    Returns:
        ``{layer name: int64 counts (num_heads,)}``.

    Raises:
        ValueError: ``model`` has no Expert Attention layer, or ``batches`` is empty.
    """
    layers = expert_layers(model)
    if not layers:
        raise ValueError("model: no ExpertAttention layer; call to_expert_attention(model) first")
    counts = {n: torch.zeros(m.num_heads, dtype=torch.int64) for n, m in layers.items()}

    def hook(name: str):
        def record(module: ExpertAttention, args: tuple, kwargs: dict) -> None:
            hidden = kwargs.get("hidden_states", args[0] if args else None)
            mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
            if module.num_heads == 0 or not bool(module.head_alive.any()):
                return
            b, t, _ = hidden.shape
            valid = valid_tokens(mask, b, t).to(hidden.device)
            _, top1 = module.route(hidden)
            counts[name] += torch.bincount(top1[valid], minlength=module.num_heads).cpu()

        return record

    handles = [m.register_forward_pre_hook(hook(n), with_kwargs=True) for n, m in layers.items()]
    was_training = model.training
    model.eval()
    seen = 0
    try:
        for batch in batches:
            _call(model, batch)
            seen += 1
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    if seen == 0:
        raise ValueError("batches: empty; usage needs at least one batch")
    return counts


@torch.no_grad()
def routing_entropy(model: nn.Module, batches: Iterable[Any]) -> float:
    """Mean router entropy (nats) over the real tokens of every Expert Attention layer.

    ``H = -Σ_h p_h log p_h`` of the router's softmax over the alive heads, averaged over valid
    tokens and layers (eval mode). It is ``log H_alive`` for a uniform router and falls as the
    routing concentrates on fewer heads (stage 2, "specialisation").

    Args:
        model: A model converted with `sparse_shrp.to_expert_attention`.
        batches: Model inputs (as for `measure_usage`).

    Raises:
        ValueError: No Expert Attention layer with a head, or ``batches`` is empty.
    """
    layers = {n: m for n, m in expert_layers(model).items() if bool(m.head_alive.any())}
    if not layers:
        raise ValueError("model: no ExpertAttention layer with a head left")
    sums = dict.fromkeys(layers, 0.0)
    tokens = dict.fromkeys(layers, 0)

    def hook(name: str):
        def record(module: ExpertAttention, args: tuple, kwargs: dict) -> None:
            hidden = kwargs.get("hidden_states", args[0] if args else None)
            mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
            b, t, _ = hidden.shape
            valid = valid_tokens(mask, b, t).to(hidden.device)
            probs, _ = module.route(hidden)
            ent = -(probs * probs.clamp_min(1e-30).log()).sum(-1)
            sums[name] += float(ent[valid].sum())
            tokens[name] += int(valid.sum())

        return record

    handles = [m.register_forward_pre_hook(hook(n), with_kwargs=True) for n, m in layers.items()]
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            _call(model, batch)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    if not any(tokens.values()):
        raise ValueError("batches: empty; the entropy needs at least one token")
    return sum(sums[n] / max(tokens[n], 1) for n in layers) / len(layers)


def select_heads(
    usage: Mapping[str, torch.Tensor],
    alive: Mapping[str, torch.Tensor],
    sparsity: float = 0.0,
    threshold: float = 0.0,
) -> dict[str, torch.Tensor]:
    """Heads to keep, from usage counts.

    Args:
        usage: Counts per layer ``(num_heads,)``.
        alive: Bool per layer: heads not removed yet (removed heads stay removed).
        sparsity: Budget mode when > 0: exactly ``N - keep_count(N, 1 - sparsity)`` of the ``N``
            heads (all layers, removed ones included) are removed, the lowest usage fractions
            first (ties: the higher flat index is removed first, i.e. lower index kept).
        threshold: Threshold mode (``sparsity == 0``): remove heads whose usage fraction in their
            layer is ``<= threshold`` (``0``: never-chosen heads).

    Returns:
        ``{layer name: bool keep (num_heads,)}``.
    """
    if set(usage) != set(alive):
        raise ValueError("usage and alive must name the same layers")
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must lie in [0, 1), got {sparsity}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
    fractions = {}
    for name, counts in usage.items():
        counts = counts.to(torch.float64).cpu()
        total = counts.sum()
        frac = counts / total if total > 0 else torch.zeros_like(counts)
        if frac.shape != alive[name].shape:
            raise ValueError(f"usage of {name!r} has shape {tuple(frac.shape)}, not that of alive")
        fractions[name] = frac
    names = list(usage)
    if sparsity > 0:
        flat = torch.cat([fractions[n].masked_fill(~alive[n].cpu(), -1.0) for n in names])
        keep_flat = topk_mask(flat, keep_count(flat.numel(), 1.0 - sparsity))
        keep_flat &= torch.cat([alive[n].cpu() for n in names])
        out, start = {}, 0
        for n in names:
            size = fractions[n].numel()
            out[n] = keep_flat[start : start + size].clone()
            start += size
        return out
    return {n: alive[n].cpu() & (fractions[n] > threshold) for n in names}

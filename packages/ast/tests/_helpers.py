"""Small builders shared by the AST tests (tiny HF models from configs, no downloads)."""

from __future__ import annotations

import os

import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VOCAB = 32


def tiny_gpt2(seed: int = 0) -> nn.Module:
    from sparsecore.bench.models import tiny_gpt2 as build

    return build(
        seed=seed,
        vocab_size=VOCAB,
        n_embd=32,
        n_positions=16,
        n_head=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )


def tiny_llama(seed: int = 0) -> nn.Module:
    from sparsecore.bench.models import tiny_llama as build

    return build(
        seed=seed,
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=16,
    )


def tokens(seed: int, batch: int = 4, length: int = 12) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (batch, length), generator=gen)


def brute_nm_keep(scores: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """Keep-mask of an (out, in) score matrix: per row, per group of m inputs, the top n
    (ties: lower index), computed with Python loops."""
    keep = torch.zeros_like(scores, dtype=torch.bool)
    rows, cols = scores.shape
    for i in range(rows):
        for g in range(0, cols, m):
            vals = [(float(scores[i, g + j]), -j) for j in range(m)]
            best = sorted(range(m), key=lambda j: vals[j], reverse=True)[:n]
            for j in best:
                keep[i, g + j] = True
    return keep

"""Shared helpers: a tiny random Llama on the toy's vocabulary (bytes, <eos>, latent tokens)."""

from __future__ import annotations

import os

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

from sparse_ra3.corpus import FIRST_LATENT  # noqa: E402
from sparsecore.bench.models import tiny_llama  # noqa: E402


def make_lm(seed: int = 0, n_latents: int = 4):
    return tiny_llama(
        seed=seed, vocab_size=FIRST_LATENT + n_latents, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, intermediate_size=64,
        max_position_embeddings=128,
    ).eval()  # fmt: skip


def make_counts(vocab: int = FIRST_LATENT + 4) -> torch.Tensor:
    """Deterministic counts: the ASCII letters and digits seen, everything else never."""
    counts = torch.zeros(vocab, dtype=torch.long)
    for i, c in enumerate(b"0123456789abcdefghijklmnopqrstuvwxyz=+-*\n "):
        counts[c] = 1 + i % 5
    return counts

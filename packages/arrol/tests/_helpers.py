"""Shared helpers: a tiny random Llama on the core's character vocabulary."""

from __future__ import annotations

import os

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

from sparsecore.bench.models import tiny_llama  # noqa: E402
from sparsecore.rl import CHAR_VOCAB  # noqa: E402

HIDDEN = 32


def make_lm(seed: int = 0):
    return tiny_llama(
        seed=seed, vocab_size=CHAR_VOCAB.size, hidden_size=HIDDEN, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, intermediate_size=64,
        max_position_embeddings=64,
    ).eval()  # fmt: skip

"""Shared fixtures: a tiny GQA Llama (random) and calibration batches; HF offline."""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)


def gqa_llama(seed: int = 0, layers: int = 4):
    """4 query heads in 2 key/value groups, hidden 32, FFN 64 (4 blocks of 16)."""
    from sparsecore.bench import tiny_llama

    return tiny_llama(
        seed=seed, vocab_size=64, hidden_size=32, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
        max_position_embeddings=32,
    )  # fmt: skip


def token_batches(count: int = 2, batch: int = 4, seq: int = 16, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 64, (batch, seq), generator=gen) for _ in range(count)]


@pytest.fixture
def model():
    return gqa_llama()


@pytest.fixture
def batches():
    return token_batches()


@pytest.fixture
def make_model():
    return gqa_llama


@pytest.fixture
def make_batches():
    return token_batches

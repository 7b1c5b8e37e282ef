"""Shared fixtures: tiny random Llama pairs (no pretraining, no network)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VOCAB = 64


class TableRunner:
    """A bigram LM as a `Runner`: logits of the next token depend on the last token only.

    ``table[x]`` are the logits (or, with ``token_ids``, the trimmed logits) after token ``x``.
    """

    def __init__(self, table: torch.Tensor, token_ids: torch.Tensor | None = None) -> None:
        self.table = table
        self.token_ids = token_ids
        self.length = 0

    def forward(self, ids: torch.Tensor, last_only: bool) -> torch.Tensor:
        self.length += ids.shape[1]
        logits = self.table[ids]
        return logits[:, -1:] if last_only else logits

    def crop(self, length: int) -> None:
        self.length = min(self.length, length)


def tiny_pair(seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A random target (hidden 32, 2 layers) and drafter (hidden 16, 1 layer), vocab 64."""
    from sparsecore.bench.models import tiny_llama

    target = tiny_llama(
        seed=seed, vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, intermediate_size=64,
    ).eval()  # fmt: skip
    drafter = tiny_llama(
        seed=seed + 1, vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, intermediate_size=32,
    ).eval()  # fmt: skip
    return target, drafter


@pytest.fixture(scope="module")
def pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    return tiny_pair()


@pytest.fixture
def runner_cls() -> type[TableRunner]:
    return TableRunner

"""Shared helpers: a tiny random Llama on the toy's 260-token vocabulary, a calibration."""

from __future__ import annotations

import os

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

from sparse_rebalance import SteeringCalibration  # noqa: E402
from sparsecore.bench.models import tiny_llama  # noqa: E402


def make_lm(seed: int = 0):
    return tiny_llama(
        seed=seed, vocab_size=260, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
        num_key_value_heads=2, intermediate_size=64, max_position_embeddings=128,
    ).eval()  # fmt: skip


def make_calibration(layer: int = 1, hidden: int = 32, seed: int = 0) -> SteeringCalibration:
    g = torch.Generator().manual_seed(seed + 11)
    return SteeringCalibration(
        layer=layer, vector=torch.randn(hidden, generator=g), q25c=0.3, q75c=0.6, q25v=1e-3,
        q75v=1e-2, r2=[0.0, 0.5, 0.1, 0.0], positives=3, negatives=4,
    )  # fmt: skip

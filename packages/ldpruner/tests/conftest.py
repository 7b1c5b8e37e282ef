"""Shared fixtures: tiny random-initialised LDMs (no pretraining, no network)."""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

from sparse_ldpruner import LDMConfig, TinyLDM  # noqa: E402

MICRO = LDMConfig(channels=(8, 16), heads=2, context_dim=8, vae_channels=(8, 16), groups=4)


@pytest.fixture
def ldm() -> TinyLDM:
    """A random-init micro LDM (fresh per test)."""
    return TinyLDM.from_config(MICRO, seed=0).eval()

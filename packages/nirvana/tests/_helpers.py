"""Shared helpers: tiny videos, a tiny patch INR and test-sized codec options."""

from __future__ import annotations

import torch

torch.set_num_threads(1)

from sparse_nirvana import CodecConfig, PatchINR, patch_coords, synthetic_video  # noqa: E402


def tiny_video(kind: str = "slow", frames: int = 8, seed: int = 0) -> torch.Tensor:
    return synthetic_video(kind, frames=frames, size=16, seed=seed, shapes=2)


def tiny_inr(seed: int = 0) -> PatchINR:
    return PatchINR(group=2, patch=8, width=12, depth=2, freqs=2, up_channels=2, seed=seed)


def tiny_coords() -> torch.Tensor:
    return patch_coords(16, 16, 8)


def tiny_config(**overrides) -> CodecConfig:
    options = dict(group=2, patch=8, width=12, depth=2, freqs=2, up_channels=2, lam=3e-4,
                   first_iters=40, max_iters=15, check_every=5, init_bits=4)  # fmt: skip
    options.update(overrides)
    return CodecConfig(**options)

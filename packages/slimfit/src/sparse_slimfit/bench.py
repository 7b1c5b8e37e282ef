"""The tiny Hugging Face ViT and the digits images SlimFit's tests and reproduction use.

The paper fine-tunes ViT-B/16 on CIFAR / ImageNet; at CPU scale the reproduction uses a
randomly initialised ``ViTForImageClassification`` from a tiny ``ViTConfig`` (8×8 single-
channel images in 2×2 patches) on scikit-learn's bundled digits, first trained briefly with
every weight trainable ("pretraining") and then fine-tuned by each variant.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["digits_tensors", "tiny_vit"]


def tiny_vit(num_labels: int = 10, seed: int = 0, **config: Any) -> nn.Module:
    """A randomly initialised ``ViTForImageClassification`` (8×8×1 images, 2×2 patches).

    Defaults: hidden 64, 2 layers, 4 heads, intermediate 128, no dropout, eager attention.

    Args:
        num_labels: Number of classes.
        seed: Initialisation seed (the global generator's state is restored afterwards).
        **config: Overrides of ``transformers.ViTConfig`` fields.
    """
    from transformers import ViTConfig, ViTForImageClassification

    options: dict[str, Any] = dict(
        image_size=8,
        patch_size=2,
        num_channels=1,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=num_labels,
        attn_implementation="eager",
    )
    options.update(config)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return ViTForImageClassification(ViTConfig(**options))


def digits_tensors(seed: int = 0, test_fraction: float = 0.3) -> dict[str, torch.Tensor]:
    """scikit-learn's digits as ``(N, 1, 8, 8)`` float tensors in ``[0, 1]``, split by ``seed``.

    Returns:
        ``{"x_train", "y_train", "x_test", "y_test"}``.
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    cut = int(len(y) * test_fraction)
    test, train = order[:cut], order[cut:]
    return {"x_train": x[train], "y_train": y[train], "x_test": x[test], "y_test": y[test]}

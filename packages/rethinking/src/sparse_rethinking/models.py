"""A small VGG-like network with BatchNorm, the CPU-scale stand-in for the paper's VGG-16/19.

The paper prunes VGG and ResNet networks on CIFAR and ImageNet; network slimming needs a
BatchNorm after every convolution (its channel scores are the BN scales γ). `SmallVGG` is that
shape at the size of 8×8 digits: ``[conv3×3-BN-ReLU] × 2, max-pool, [conv3×3-BN-ReLU] × 2,
global average pooling, Linear``. For a ResNet-like net use `sparsecore.bench.make_model`
(``"resnet"``), which the same pruning code handles (residual channels are grouped).

`reinitialize` gives a model a fresh random initialisation: the Scratch-E/B models of the paper
are the pruned *architecture* with new weights.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from sparsecore.validation import check_int

__all__ = ["SmallVGG", "reinitialize"]


class SmallVGG(nn.Module):
    """Four 3×3 convolutions with BatchNorm (VGG-like), pooling and a linear classifier.

    Args:
        in_channels: Input channels (1 for digits).
        num_classes: Number of outputs.
        widths: Output channels of the four convolutions.
    """

    def __init__(
        self, in_channels: int = 1, num_classes: int = 10, widths: Sequence[int] = (32, 32, 64, 64)
    ):
        super().__init__()
        check_int(in_channels, "in_channels", 1)
        check_int(num_classes, "num_classes", 1)
        widths = tuple(widths)
        if len(widths) != 4:
            raise ValueError(f"widths must have 4 entries, got {widths!r}")
        layers: list[nn.Module] = []
        cin = in_channels
        for i, width in enumerate(widths):
            check_int(width, f"widths[{i}]", 1)
            layers += [nn.Conv2d(cin, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)]
            layers.append(nn.ReLU())
            if i == 1:
                layers.append(nn.MaxPool2d(2))
            cin = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(batch, num_classes)`` for inputs ``(batch, C, H, W)``."""
        return self.classifier(self.features(x).mean((2, 3)))


def reinitialize(model: nn.Module, seed: int) -> nn.Module:
    """A copy of ``model`` (same architecture) with every layer's parameters re-initialised.

    Every module with ``reset_parameters`` is reset with PyTorch's default initialisation, under
    a forked global generator seeded with ``seed`` (the caller's random state is untouched);
    BatchNorm running statistics are reset too.

    Args:
        model: The (pruned) model whose architecture is kept.
        seed: Seed of the new initialisation.

    Returns:
        The new model; ``model`` is not changed.
    """
    check_int(seed, "seed")
    fresh = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in fresh.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.reset_running_stats()
    return fresh

"""A plain (non-residual) CNN, where a narrow layer really blocks the information flow.

In a ResNet only the first convolution of each block has free channels, and the residual stream
carries information around it whatever its width; in a plain CNN every layer but the classifier
is prunable and every narrow layer is a bottleneck. LAPP's bypass is built for the latter
(`sparse_lapp.bypass`), so the tests and the reproduction use this model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["PlainCNN"]


class PlainCNN(nn.Module):
    """Convolution, BatchNorm and ReLU blocks, global average pooling, then a linear classifier.

    Args:
        input_shape: One example's shape without the batch dimension: ``(C, L)`` (Conv1d) or
            ``(C, H, W)`` (Conv2d).
        num_classes: Outputs of the classifier.
        widths: Output channels of each convolution.
        strides: Stride of each convolution (default: 2 for every second layer, else 1).
        kernel_size: Odd kernel size (padding keeps the size at stride 1).

    Raises:
        ValueError: A bad shape, width, stride or kernel size.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        widths: Sequence[int] = (32, 32, 64, 64),
        strides: Sequence[int] | None = None,
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        if len(input_shape) not in (2, 3):
            raise ValueError(f"input_shape must be (C, L) or (C, H, W), got {tuple(input_shape)}")
        if not widths or any(w < 1 for w in widths):
            raise ValueError(f"widths must be positive, got {tuple(widths)}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
        strides = list(strides) if strides is not None else [1 + i % 2 for i in range(len(widths))]
        if len(strides) != len(widths) or any(s < 1 for s in strides):
            raise ValueError(f"strides must give one positive stride per width, got {strides}")
        conv = nn.Conv1d if len(input_shape) == 2 else nn.Conv2d
        norm = nn.BatchNorm1d if len(input_shape) == 2 else nn.BatchNorm2d
        layers: list[nn.Module] = []
        channels = input_shape[0]
        for width, stride in zip(widths, strides, strict=True):
            layers += [
                conv(channels, width, kernel_size, stride, kernel_size // 2, bias=False),
                norm(width),
                nn.ReLU(),
            ]
            channels = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool1d(1) if len(input_shape) == 2 else nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch."""
        return self.classifier(self.pool(self.features(x)).flatten(1))

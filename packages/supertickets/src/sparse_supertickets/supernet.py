"""A small multi-branch supernet (HR-NAS style inverted-residual blocks) for digits-sized inputs.

From You et al., "SuperTickets: Drawing Task-Agnostic Lottery Tickets from Supernets via Jointly
Architecture Searching and Parameter Pruning", ECCV 2022, arXiv 2207.03677; official code
GATECH-EIC/SuperTickets (`models/mobilenet_base.py`, `InvertedResidualChannels`).

Each `MultiBranchBlock` holds one branch per depthwise kernel size (the official supernet uses
{3, 5, 7}): ``1×1 expand → BN → ReLU → k×k depthwise → BN → ReLU``; the branches' outputs are
summed, projected by one ``1×1`` conv and a BN, and added to the input when the shapes match.
Every hidden channel of a branch is an *atomic block*: the search removes it with its expand row,
both BN entries, its depthwise filter and its column of the projection. The BN after the
depthwise conv carries the γ the search penalises.

CHOICE (labelled): one shared projection for all branches (the official block concatenates the
branches' hidden channels and projects them with one 1×1 conv, which is the same function as a
sum of per-branch projections); here each branch has its own 1×1 projection without BN and the
block applies one BN after the sum, so each branch is a separable unit that can be dropped whole.
CHOICE: no transformer branch (the official HR-NAS supernet optionally adds light transformers;
at 8×8 inputs they are not worth their cost).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sparsecore.validation import check_int

__all__ = ["Branch", "MultiBranchBlock", "SuperNet", "is_depthwise"]


def is_depthwise(module: nn.Module) -> bool:
    """Whether ``module`` is a depthwise conv (``groups == in_channels == out_channels``)."""
    return (
        isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d)
        and module.groups > 1
        and module.groups == module.in_channels == module.out_channels
    )


class Branch(nn.Module):
    """``1×1 expand → BN → ReLU → k×k depthwise (stride) → BN → ReLU → 1×1 project``.

    Args:
        channels: Block input channels.
        out_channels: Block output channels.
        hidden: Hidden (atomic-block) channels of this branch.
        kernel: Depthwise kernel size (odd).
        stride: Depthwise stride.
    """

    def __init__(self, channels: int, out_channels: int, hidden: int, kernel: int, stride: int):
        super().__init__()
        self.kernel = kernel
        self.expand = nn.Conv2d(channels, hidden, 1, bias=False)
        self.expand_bn = nn.BatchNorm2d(hidden)
        self.depthwise = nn.Conv2d(
            hidden, hidden, kernel, stride, kernel // 2, groups=hidden, bias=False
        )
        self.depthwise_bn = nn.BatchNorm2d(hidden)
        self.project = nn.Conv2d(hidden, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = torch.relu(self.expand_bn(self.expand(x)))
        x = torch.relu(self.depthwise_bn(self.depthwise(x)))
        return self.project(x)


class MultiBranchBlock(nn.Module):
    """Branches with different depthwise kernels, summed, BN, residual when shapes match.

    Args:
        channels: Input channels.
        out_channels: Output channels.
        hidden: Hidden channels per branch (the supernet's expansion: ``expand_ratio · channels``).
        kernels: One branch per depthwise kernel size.
        stride: Stride of the depthwise convs.
    """

    def __init__(
        self,
        channels: int,
        out_channels: int,
        hidden: int,
        kernels: Sequence[int] = (3, 5, 7),
        stride: int = 1,
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            Branch(channels, out_channels, hidden, k, stride) for k in kernels
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.residual = stride == 1 and channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = self.branches[0](x)
        for branch in self.branches[1:]:
            out = out + branch(x)
        out = self.bn(out)
        return x + out if self.residual else out

    @torch.no_grad()
    def drop_empty_branches(self) -> list[int]:
        """Remove the branches whose every atomic block was removed (their output is zero).

        A branch is empty when its expand weight, both BN affine parameters and its depthwise
        weight are all zero (the state a fully masked channel group leaves); its output is then
        exactly zero, so dropping it does not change the block. At least one branch stays.

        Returns:
            The kernel sizes of the dropped branches.
        """
        dropped = []
        keep = []
        for branch in self.branches:
            empty = not any(
                bool(t.ne(0).any())
                for t in (
                    branch.expand.weight,
                    branch.expand_bn.weight,
                    branch.expand_bn.bias,
                    branch.depthwise.weight,
                    branch.depthwise_bn.weight,
                    branch.depthwise_bn.bias,
                )
            )
            (dropped if empty else keep).append(branch)
        if not keep:
            keep, dropped = dropped[:1], dropped[1:]
        self.branches = nn.ModuleList(keep)
        return [b.kernel for b in dropped]


class SuperNet(nn.Module):
    """Stem conv-BN-ReLU, `MultiBranchBlock` stages, global pooling, linear classifier.

    Args:
        num_classes: Output classes.
        in_channels: Input channels (1 for digits).
        stem: Stem output channels.
        stages: ``(out_channels, stride)`` per block.
        expand_ratio: Hidden channels per branch = ``expand_ratio · block input channels``
            (official `expand_ratio: 4`).
        kernels: Depthwise kernel sizes, one branch each (official ``[3, 5, 7]``).
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        stem: int = 8,
        stages: Sequence[tuple[int, int]] = ((8, 1), (16, 2), (16, 1)),
        expand_ratio: int = 4,
        kernels: Sequence[int] = (3, 5, 7),
    ) -> None:
        super().__init__()
        for value, name in ((num_classes, "num_classes"), (in_channels, "in_channels")):
            check_int(value, name, 1)
        check_int(stem, "stem", 1)
        check_int(expand_ratio, "expand_ratio", 1)
        if not kernels or any(int(k) % 2 != 1 for k in kernels):
            raise ValueError(f"kernels must be odd sizes, got {tuple(kernels)}")
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem, 3, padding=1, bias=False), nn.BatchNorm2d(stem), nn.ReLU()
        )
        blocks = []
        channels = stem
        for out, stride in stages:
            blocks.append(MultiBranchBlock(channels, out, expand_ratio * channels, kernels, stride))
            channels = out
        self.blocks = nn.Sequential(*blocks)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.classifier(self.blocks(self.stem(x)).mean((2, 3)))

    def drop_empty_branches(self) -> dict[str, list[int]]:
        """`MultiBranchBlock.drop_empty_branches` on every block; dropped kernels by block."""
        out = {}
        for name, block in self.blocks.named_children():
            dropped = block.drop_empty_branches()
            if dropped:
                out[f"blocks.{name}"] = dropped
        return out

    def architecture(self) -> list[dict[str, object]]:
        """The (searched) architecture: per block, hidden channels per kernel size."""
        return [
            {
                "kernels": [b.kernel for b in block.branches],
                "hidden": [b.depthwise.out_channels for b in block.branches],
                "out": block.bn.num_features,
            }
            for block in self.blocks
        ]

"""A gated BatchNorm ResNet (the core's `sparsecore.bench.models.ResNet`), for tests and bench."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from sparse_consensus.gates import attach_gates
from sparsecore.bench.models import ResNet

__all__ = ["gated_resnet", "resnet_gate_names"]


def resnet_gate_names(model: ResNet) -> tuple[list[str], dict[str, str]]:
    """Block gates (identity-shortcut blocks) and channel gates (``conv1 → bn1`` of every block).

    Found from the module structure, without a trace (works on the ``meta`` device).
    """
    blocks, channels = [], {}
    for i, block in enumerate(model.stages):
        name = f"stages.{i}"
        if isinstance(block.shortcut, nn.Identity):
            blocks.append(name)
        channels[f"{name}.conv1"] = f"{name}.bn1"
    return blocks, channels


def gated_resnet(
    input_shape: Sequence[int],
    num_classes: int,
    width: int = 8,
    blocks: tuple[int, int, int] = (2, 2, 2),
    *,
    gate_blocks: bool = True,
    gate_channels: bool = True,
    hidden: int = 16,
) -> ResNet:
    """A `ResNet` with consensus gates attached (seed the global RNG before calling).

    Args:
        input_shape: One example's shape.
        num_classes: Number of classes.
        width: Channels of the first stage.
        blocks: Basic blocks per stage.
        gate_blocks: Gate the identity-shortcut blocks (layer pruning).
        gate_channels: Gate the inner channels of every block (channel pruning).
        hidden: Hidden width of the gate nets.
    """
    model = ResNet(tuple(input_shape), num_classes, width, blocks)
    block_names, channel_names = resnet_gate_names(model)
    attach_gates(
        model,
        blocks=block_names if gate_blocks else (),
        channels=channel_names if gate_channels else {},
        hidden=hidden,
    )
    return model

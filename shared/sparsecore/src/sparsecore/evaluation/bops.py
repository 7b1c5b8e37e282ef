"""Bit operations (BOPs) of a quantized network: ``Σ_layers MACs · b_w · b_a``.

The measure of mixed-precision papers (e.g. Makenali et al., arXiv 2509.04244; Baskin et al.,
"UNIQ", arXiv 1804.10969): each multiply-accumulate of a layer costs the product of its weight
and input-activation bit widths. A full-precision layer costs ``32 · 32 = 1024`` per MAC.

MACs are the dense MACs of `sparsecore.evaluation.count_flops` (Linear / Conv layers, the
batch of ``example_input`` included), so count on the *compacted* network (after
`sparsecore.export.remove_channels`) to see what pruning removed. Bit widths come from
`sparsecore.quant.layer_bits` (the layer's ``weight_quantizer`` / ``input_quantizer``) unless
given per layer in ``bits``.

CHOICE: only Linear / Conv MACs are counted (normalisations, additions and pooling are not
multiplications by weights and are left out, as in the papers that report BOPs).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from sparsecore.evaluation.flops import count_flops
from sparsecore.quant import layer_bits
from sparsecore.validation import check_int

__all__ = ["BopCount", "LayerBops", "count_bops"]


@dataclass(frozen=True)
class LayerBops:
    """One layer's share: ``macs · weight_bits · act_bits``."""

    macs: int
    weight_bits: int
    act_bits: int

    @property
    def bops(self) -> int:
        """Bit operations of the layer."""
        return self.macs * self.weight_bits * self.act_bits


@dataclass(frozen=True)
class BopCount:
    """BOPs of one forward pass, per layer and in total."""

    layers: dict[str, LayerBops]

    @property
    def total(self) -> int:
        """``Σ macs · b_w · b_a`` over the layers."""
        return sum(layer.bops for layer in self.layers.values())

    @property
    def macs(self) -> int:
        """Total MACs of the counted layers."""
        return sum(layer.macs for layer in self.layers.values())

    def ratio_to(self, other: BopCount) -> float:
        """``other.total / self.total``: how many times fewer BOPs this network needs."""
        return other.total / self.total if self.total else float("inf")


def count_bops(
    model: nn.Module,
    example_input: Any,
    bits: Mapping[str, tuple[int, int]] | None = None,
) -> BopCount:
    """Count the BOPs of one forward pass of ``model`` on ``example_input``.

    Args:
        model: The (compacted) model.
        example_input: As for `sparsecore.evaluation.count_flops` (the batch is counted).
        bits: ``{layer name: (weight bits, activation bits)}`` overriding what the layers'
            quantizers say (`sparsecore.quant.layer_bits`).

    Returns:
        A `BopCount`.

    Raises:
        ValueError: A name in ``bits`` is not a counted layer, or a width below 1.
    """
    flops = count_flops(model, example_input)
    modules = dict(model.named_modules())
    given = dict(bits or {})
    unknown = sorted(set(given) - set(flops.by_module))
    if unknown:
        raise ValueError(f"bits: {unknown[:3]} are not Linear / Conv layers of the model")
    layers = {}
    for name, (macs, _) in flops.by_module.items():
        weight_bits, act_bits = given.get(name, layer_bits(modules[name]))
        check_int(weight_bits, f"bits[{name!r}] weight", 1)
        check_int(act_bits, f"bits[{name!r}] activation", 1)
        layers[name] = LayerBops(int(macs), int(weight_bits), int(act_bits))
    return BopCount(layers)

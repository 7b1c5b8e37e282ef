"""Quantized Linear / Conv layers made in place from the model's own layers.

`install_quantizers` turns each ``nn.Linear`` / ``nn.Conv{1,2,3}d`` of a model into its
quantized subclass (`QuantLinear`, `QuantConv1d`, ...) by changing the module's class in place
and adding the submodules ``weight_quantizer`` (and ``input_quantizer``). The parameters stay the
same objects under the same names, so the optimizer, the masks (``weight_mask`` buffers), the
channel groups and checkpoints keep working; `sparsecore.quant.layer_bits` reads the bit
widths for BOPs.

The forward pass is ``layer(Q_a(x), Q_w(w) · keep)`` with ``keep = (w ≠ 0) ∧ weight_mask``: the
mask is re-applied *after* the quantizer (see `sparse_prunequant.apot`).

CHOICE (official ``first_conv`` / ``last_fc``): the first and the last quantizable layer in
module order get `UniformWeightQuantizer` (8 bits) and no input quantizer; every other layer
gets APoT weights and APoT activations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sparse_prunequant.apot import APoTActQuantizer, APoTWeightQuantizer, UniformWeightQuantizer

__all__ = [
    "QuantConv1d",
    "QuantConv2d",
    "QuantConv3d",
    "QuantLinear",
    "install_quantizers",
    "quant_layers",
    "strip_quantizers",
]


class _QuantLayer:
    """Mixin of the quantized layers: quantize the input and the weight, then the layer."""

    weight: nn.Parameter
    weight_quantizer: nn.Module
    input_quantizer: nn.Module | None

    def keep(self) -> torch.Tensor:
        """Entries that may be non-zero: ``(w ≠ 0)`` and the mask buffer, if any."""
        keep = self.weight.detach() != 0
        mask = getattr(self, "weight_mask", None)
        return keep if mask is None else keep & mask

    def quantized_weight(self) -> torch.Tensor:
        """``Q_w(w) · keep`` (the weight itself while the quantizer is inactive)."""
        return self.weight_quantizer(self.weight, self.keep())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``layer(Q_a(x), Q_w(w) · keep)``."""
        if self.input_quantizer is not None:
            x = self.input_quantizer(x)
        return self._with_weight(x, self.quantized_weight())

    def _with_weight(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, weight, self.bias)  # type: ignore[attr-defined]


class QuantConv1d(_QuantLayer, nn.Conv1d):
    """``nn.Conv1d`` with quantized weights and inputs."""


class QuantConv2d(_QuantLayer, nn.Conv2d):
    """``nn.Conv2d`` with quantized weights and inputs."""


class QuantConv3d(_QuantLayer, nn.Conv3d):
    """``nn.Conv3d`` with quantized weights and inputs."""


class QuantLinear(_QuantLayer, nn.Linear):
    """``nn.Linear`` with quantized weights and inputs."""

    def _with_weight(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.linear(x, weight, self.bias)


QUANT_CLASSES: dict[type[nn.Module], type[nn.Module]] = {
    nn.Conv1d: QuantConv1d,
    nn.Conv2d: QuantConv2d,
    nn.Conv3d: QuantConv3d,
    nn.Linear: QuantLinear,
}
PLAIN_CLASSES = {v: k for k, v in QUANT_CLASSES.items()}


def quant_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The quantized layers of ``model`` by name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, _QuantLayer)}


def install_quantizers(
    model: nn.Module,
    weight_bits: int,
    act_bits: int,
    edge_bits: int = 8,
    weight_alpha: float = 3.0,
    act_alpha: float = 8.0,
    active: bool = True,
) -> dict[str, nn.Module]:
    """Make every plain Linear / Conv of ``model`` quantized, in place.

    Args:
        model: The model.
        weight_bits: APoT weight bits (2 to 5).
        act_bits: APoT activation bits (2 to 6).
        edge_bits: Uniform weight bits of the first and the last layer.
        weight_alpha: Initial weight clip (official 3.0).
        act_alpha: Initial activation clip (official 8.0).
        active: Whether the quantizers start on (`set_quantization` turns them on later).

    Returns:
        The quantized layers by name.

    Raises:
        ValueError: The model has no Linear / Conv layer, or one is already quantized.
    """
    layers = [(n, m) for n, m in model.named_modules() if type(m) in QUANT_CLASSES]
    if quant_layers(model):
        raise ValueError("model: its layers are already quantized")
    if not layers:
        raise ValueError("model: no nn.Linear / nn.Conv layer to quantize")
    edges = {layers[0][0], layers[-1][0]}
    for name, module in layers:
        param = module.weight
        if name in edges:
            weight_q: nn.Module = UniformWeightQuantizer(edge_bits)
            input_q: nn.Module | None = None
        else:
            weight_q = APoTWeightQuantizer(weight_bits, weight_alpha)
            input_q = APoTActQuantizer(act_bits, act_alpha)
        module.__class__ = QUANT_CLASSES[type(module)]
        module.add_module("weight_quantizer", weight_q.to(param.device))
        module.add_module("input_quantizer", None if input_q is None else input_q.to(param.device))
    set_quantization(model, active)
    return quant_layers(model)


def set_quantization(model: nn.Module, active: bool) -> None:
    """Turn every quantizer of ``model`` on or off."""
    for module in model.modules():
        if hasattr(module, "set_active") and hasattr(module, "active"):
            module.set_active(active)


def quant_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The clips ``α`` of every quantizer (to add to the optimizer)."""
    return [
        p
        for layer in quant_layers(model).values()
        for q in (layer.weight_quantizer, layer.input_quantizer)
        if q is not None
        for p in q.parameters()
    ]


def strip_quantizers(model: nn.Module) -> dict[str, tuple[nn.Module, nn.Module | None]]:
    """Make the quantized layers plain again (in place); returns their quantizers by name."""
    out = {}
    for name, layer in quant_layers(model).items():
        out[name] = (layer.weight_quantizer, layer.input_quantizer)
        del layer._modules["weight_quantizer"]
        del layer._modules["input_quantizer"]
        layer.__class__ = PLAIN_CLASSES[type(layer)]
    return out

"""Export a pruned, quantized model: compact shapes, integer codes in safetensors, bytes.

`export_compact` takes the model that `PruneQuant.finalize` returned (quantized layers, masked
zeros) and

1. replaces every quantized layer's weight by its quantized value ``α · (±level) · keep``;
2. removes the pruned channels with `sparsecore.export.remove_channels` (on plain layers, so
   Torch-Pruning traces an ordinary graph; the input quantizers are put back afterwards);
3. encodes each quantized weight as integer codes packed to its bit width
   (`sparsecore.quant.QuantizedTensor`) with its level table and scale, and writes them with
   the remaining float32 tensors (BatchNorm, biases, clips ``α``) to one safetensors file whose
   metadata holds every tensor's shape and each layer's bit width.

`load_compact` rebuilds the compact network from a fresh instance of the *original*
architecture (its layers are resized to the stored shapes) and gives exactly the outputs of
the fake-quantized model (tested).

CHOICE: a kept filter whose quantized weights are all zero is removed too (its output is a
constant that `remove_channels` folds or keeps, as it does for any dead channel).
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from sparse_prunequant.apot import APoTActQuantizer, nearest_level
from sparse_prunequant.layers import QUANT_CLASSES, quant_layers, strip_quantizers
from sparsecore.export import remove_channels
from sparsecore.quant import QuantizedTensor, Quantizer, unpack_codes

__all__ = ["CompactExport", "FrozenWeight", "export_compact", "load_compact"]

_CODES = ".weight_codes"


class FrozenWeight(Quantizer):
    """The weight quantizer of an exported layer: the weight already lies on its levels.

    Args:
        levels: Level magnitudes (``levels[0] == 0``).
        scale: The factor of the levels (``α`` or the uniform scale).
        bits: Bits per code.
    """

    signed = True

    def __init__(self, levels: torch.Tensor, scale: float, bits: int) -> None:
        super().__init__()
        self.bits = int(bits)
        self.register_buffer("levels", levels.detach().clone().to(torch.float32))
        self.register_buffer("scale", torch.tensor(float(scale)))

    def forward(self, weight: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """``weight`` unchanged (it is stored decoded)."""
        return weight

    @torch.no_grad()
    def encode(self, weight: torch.Tensor, keep: torch.Tensor | None = None) -> QuantizedTensor:
        """Recover the codes exactly: nearest level of ``|w| / scale``, with the sign."""
        scale = float(self.scale)
        index = nearest_level((weight.abs() / scale).float(), self.levels)
        codes = index * torch.sign(weight).to(torch.int64)
        return QuantizedTensor(codes, self.levels.cpu(), scale, self.bits, True)


@dataclass(frozen=True)
class CompactExport:
    """What `export_compact` made.

    Attributes:
        model: The compact quantized model (frozen weights, input quantizers kept).
        tensors: The safetensors payload (codes packed to ``bits`` bits, float32 others).
        metadata: The safetensors metadata (shapes and bit widths, JSON strings).
        removed: Channels removed per layer (`remove_channels`).
    """

    model: nn.Module
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]
    removed: dict[str, int]

    @property
    def nbytes(self) -> int:
        """Bytes of the stored tensors (codes at their bit width, the rest as stored)."""
        return sum(t.numel() * t.element_size() for t in self.tensors.values())


def _encode(layer: nn.Module) -> QuantizedTensor:
    return layer.weight_quantizer.encode(layer.weight.detach())


@torch.no_grad()
def export_compact(
    model: nn.Module, example_inputs: Any, path: str | os.PathLike[str] | None = None
) -> CompactExport:
    """Shrink and encode a finalized `PruneQuant` model (see the module docstring).

    Args:
        model: The model `PruneQuant.finalize` returned (left unchanged).
        example_inputs: Inputs to trace and check the removal (as for `remove_channels`).
        path: Where to write the safetensors file (``None``: not written).

    Returns:
        A `CompactExport`.

    Raises:
        ValueError: The model has mask buffers (finalize first) or no quantized layer.
    """
    if any(name.endswith("_mask") for name, _ in model.named_buffers()):
        raise ValueError("model still has mask buffers; call method.finalize() first")
    compact = copy.deepcopy(model).eval()
    layers = quant_layers(compact)
    if not layers:
        raise ValueError("model: no quantized layer (was it set up with weight_bits?)")
    encoded = {}
    for name, layer in layers.items():
        quantizer = layer.weight_quantizer
        code = quantizer.encode(layer.weight.detach(), layer.keep())
        layer.weight.copy_(layer.quantized_weight())
        encoded[name] = (code.levels, code.scale, code.bits)
    quantizers = strip_quantizers(compact)
    removed = remove_channels(compact, example_inputs)
    modules = dict(compact.named_modules())
    for name, (levels, scale, bits) in encoded.items():
        layer = modules[name]
        layer.__class__ = QUANT_CLASSES[type(layer)]
        layer.add_module("weight_quantizer", FrozenWeight(levels, scale, bits))
        layer.add_module("input_quantizer", quantizers[name][1])
    tensors, metadata = _payload(compact, encoded)
    if path is not None:
        save_file(tensors, os.fspath(path), metadata=metadata)
    return CompactExport(compact, tensors, metadata, removed)


def _payload(
    compact: nn.Module, encoded: dict[str, tuple[torch.Tensor, float, int]]
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    state = {k: v.detach().cpu().contiguous() for k, v in compact.state_dict().items()}
    layers = quant_layers(compact)
    quantized = {}
    for name in encoded:
        code = _encode(layers[name])
        del state[f"{name}.weight"]
        state[name + _CODES] = code.packed()
        quantized[name] = {"bits": code.bits, "numel": code.codes.numel()}
        act = layers[name].input_quantizer
        quantized[name]["act_bits"] = None if act is None else int(act.bits)
    shapes = {k: list(v.shape) for k, v in compact.state_dict().items()}
    metadata = {"format": "sparse-prunequant/1", "shapes": json.dumps(shapes)}
    metadata["quantized"] = json.dumps(quantized)
    return state, metadata


def _resize(model: nn.Module, shapes: dict[str, list[int]]) -> None:
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        for store in (module._parameters, module._buffers):
            for key, value in list(store.items()):
                shape = shapes.get(prefix + key)
                if value is None or shape is None or list(value.shape) == shape:
                    continue
                new = torch.empty(shape, dtype=value.dtype, device=value.device)
                store[key] = nn.Parameter(new) if isinstance(value, nn.Parameter) else new
        weight = module._parameters.get("weight")
        if isinstance(module, nn.Linear) and weight is not None:
            module.out_features, module.in_features = weight.shape
        elif isinstance(module, nn.modules.conv._ConvNd) and weight is not None:
            module.out_channels = weight.shape[0]
            module.in_channels = weight.shape[1] * module.groups
        elif isinstance(module, nn.modules.batchnorm._NormBase) and weight is not None:
            module.num_features = weight.shape[0]


def load_compact(path: str | os.PathLike[str], model: nn.Module) -> nn.Module:
    """Rebuild an exported compact model.

    Args:
        path: The safetensors file `export_compact` wrote.
        model: A fresh, plain instance of the original architecture (resized in place).

    Returns:
        ``model``, resized, with frozen quantized layers and the stored values.

    Raises:
        ValueError: The file is not a sparse-prunequant export, or does not fit ``model``.
    """
    from safetensors import safe_open

    with safe_open(os.fspath(path), "pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("format") != "sparse-prunequant/1":
        raise ValueError(f"path: {os.fspath(path)!r} is not a sparse-prunequant export")
    tensors = load_file(os.fspath(path))
    shapes = json.loads(metadata["shapes"])
    quantized = json.loads(metadata["quantized"])
    _resize(model, shapes)
    modules = dict(model.named_modules())
    for name, info in quantized.items():
        layer = modules.get(name)
        if layer is None or type(layer) not in QUANT_CLASSES:
            raise ValueError(f"path: layer {name!r} is not a plain Linear / Conv of the model")
        levels = tensors[f"{name}.weight_quantizer.levels"]
        scale = float(tensors[f"{name}.weight_quantizer.scale"])
        layer.__class__ = QUANT_CLASSES[type(layer)]
        layer.add_module("weight_quantizer", FrozenWeight(levels, scale, info["bits"]))
        act = None if info["act_bits"] is None else APoTActQuantizer(info["act_bits"])
        layer.add_module("input_quantizer", act)
        packed = tensors.pop(name + _CODES)
        codes = unpack_codes(packed, info["bits"], info["numel"], True)
        code = QuantizedTensor(codes, levels, scale, info["bits"], True)
        tensors[f"{name}.weight"] = code.dequantize().reshape(shapes[f"{name}.weight"])
    model.load_state_dict(tensors, strict=True)
    return model.eval()

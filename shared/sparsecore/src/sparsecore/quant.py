"""A small interface for weight and activation quantizers, and their integer codes.

Pruning packages that also quantize (``sparse-prunequant``'s APoT; later perhaps AST's int4 or
NIRVANA's quantized weights) share three things, held here:

* `Quantizer`: an ``nn.Module`` that fake-quantizes a tensor in the forward pass (``forward``)
  and says how many bits one value costs (``bits``); `Quantizer.encode` turns a tensor
  into a `QuantizedTensor`;
* `QuantizedTensor`: integer codes with the level table and scale that decode them
  (``value = scale * levels[|code|] * sign(code)``), which covers uniform grids (levels
  ``0, 1/L, ..., 1``) and non-uniform ones (powers of two, APoT) alike; `pack_codes` /
  `unpack_codes` store ``bits`` bits per code, so `QuantizedTensor.nbytes` is the real
  storage size;
* `layer_bits`: the ``(weight bits, activation bits)`` of a layer that carries quantizers as
  submodules ``weight_quantizer`` / ``input_quantizer`` (32 / 32 when it has none), read by the
  BOPs counter (`sparsecore.evaluation.bops.count_bops`).

CHOICE: signed codes are stored as ``code + 2**(bits-1)`` in ``bits`` bits (offset binary), so a
``bits``-bit signed code holds ``-(2**(bits-1)) .. 2**(bits-1) - 1``; unsigned codes as they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from sparsecore.validation import check_int

__all__ = ["QuantizedTensor", "Quantizer", "layer_bits", "pack_codes", "unpack_codes"]


def _code_range(bits: int, signed: bool) -> tuple[int, int]:
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)


def pack_codes(codes: torch.Tensor, bits: int, signed: bool) -> torch.Tensor:
    """Pack integer codes into ``ceil(numel * bits / 8)`` bytes (little-endian bit order).

    Args:
        codes: Integer tensor of codes (any shape; flattened).
        bits: Bits per code, 1 to 16.
        signed: Whether the codes are signed (stored offset by ``2**(bits-1)``).

    Returns:
        A 1-D ``uint8`` tensor.

    Raises:
        ValueError: ``bits`` out of range, or a code that does not fit in ``bits`` bits.
    """
    check_int(bits, "bits", 1)
    if bits > 16:
        raise ValueError(f"bits must be <= 16, got {bits}")
    low, high = _code_range(bits, signed)
    flat = codes.detach().flatten().to(torch.int64).cpu()
    if flat.numel() and (int(flat.min()) < low or int(flat.max()) > high):
        raise ValueError(f"codes outside [{low}, {high}] do not fit in bits={bits}")
    unsigned = flat - low
    shifts = torch.arange(bits, dtype=torch.int64)
    bit_matrix = ((unsigned.unsqueeze(1) >> shifts) & 1).flatten()
    pad = (-bit_matrix.numel()) % 8
    bit_matrix = torch.cat([bit_matrix, torch.zeros(pad, dtype=torch.int64)]).reshape(-1, 8)
    weights = 2 ** torch.arange(8, dtype=torch.int64)
    return (bit_matrix * weights).sum(1).to(torch.uint8)


def unpack_codes(packed: torch.Tensor, bits: int, numel: int, signed: bool) -> torch.Tensor:
    """Inverse of `pack_codes`: the first ``numel`` codes as a 1-D ``int64`` tensor."""
    check_int(bits, "bits", 1)
    check_int(numel, "numel", 0)
    raw = packed.detach().cpu().to(torch.int64)
    bit_matrix = (raw.unsqueeze(1) >> torch.arange(8, dtype=torch.int64)) & 1
    bit_matrix = bit_matrix.flatten()[: numel * bits].reshape(numel, bits)
    unsigned = (bit_matrix << torch.arange(bits, dtype=torch.int64)).sum(1)
    return unsigned + _code_range(bits, signed)[0]


@dataclass(frozen=True)
class QuantizedTensor:
    """Integer codes of a tensor and what decodes them.

    Attributes:
        codes: ``int64`` codes, shaped like the tensor; the magnitude indexes ``levels``, the
            sign is the value's sign.
        levels: Non-negative level magnitudes (``float32``, 1-D, ``levels[0] == 0``).
        scale: The factor every level is multiplied by (APoT's clipping ``α``).
        bits: Bits per stored code.
        signed: Whether codes carry a sign.
    """

    codes: torch.Tensor
    levels: torch.Tensor
    scale: float
    bits: int
    signed: bool

    def dequantize(self) -> torch.Tensor:
        """``scale * levels[|codes|] * sign(codes)`` (``float32``)."""
        magnitude = self.levels.to(torch.float32)[self.codes.abs()]
        return magnitude.mul(torch.sign(self.codes).to(torch.float32)).mul(self.scale)

    def packed(self) -> torch.Tensor:
        """The codes packed to ``bits`` bits each (`pack_codes`)."""
        return pack_codes(self.codes, self.bits, self.signed)

    @property
    def nbytes(self) -> int:
        """Storage size: packed codes, the level table (float32) and the scale (float32)."""
        return math.ceil(self.codes.numel() * self.bits / 8) + 4 * self.levels.numel() + 4


class Quantizer(nn.Module):
    """Base class of fake quantizers (subclass it; ``forward`` returns the quantized values).

    Attributes:
        bits: Bits per quantized value (what a BOPs count charges for it).
        signed: Whether quantized values may be negative (weights) or not (activations after
            a ReLU).
    """

    bits: int
    signed: bool

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Fake-quantized ``x`` (same shape and dtype)."""
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> QuantizedTensor:  # pragma: no cover - abstract
        """Integer codes of ``x`` such that ``encode(x).dequantize() == forward(x)``."""
        raise NotImplementedError


def layer_bits(module: nn.Module) -> tuple[int, int]:
    """``(weight bits, input-activation bits)`` of a layer: the ``bits`` of its
    ``weight_quantizer`` / ``input_quantizer`` submodules, 32 where it has none.
    """
    weight = getattr(module, "weight_quantizer", None)
    act = getattr(module, "input_quantizer", None)
    return (
        int(weight.bits) if weight is not None else 32,
        int(act.bits) if act is not None else 32,
    )

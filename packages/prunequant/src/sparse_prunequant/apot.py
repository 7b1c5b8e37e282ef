"""APoT quantization-aware training: additive powers-of-two levels with a learnable clip.

Paper: Li, Dong & Wang, "Additive Powers-of-Two Quantization: An Efficient Non-uniform
Discretization for Neural Networks", ICLR 2020, arXiv 1909.13144. Official code:
yhhhli/APoT_Quantization, ``CIFAR10/models/quant_layer.py`` (``build_power_value``,
``weight_quantization``, ``act_quantization``, ``first_conv`` / ``last_fc``), read for this
module; the quantizers below follow it:

* **weights** (`APoTWeightQuantizer`, ``b`` bits): normalise ``ŵ = (w − μ) / σ`` (statistics
  detached), divide by the learnable clip ``α`` (initial 3.0), clamp to ``[−1, 1]``, project
  ``|x|`` onto the nearest of the ``2**(b−1)`` APoT levels (`apot_levels` with ``B = b − 1``),
  restore the sign and multiply by ``α``. The quantized weight is ``α · (±level)`` (not
  de-normalised, as in the official code: a normalisation layer follows). Gradients: straight
  through to ``ŵ``, not clipped; ``∂/∂α = Σ g · (sign(x) · 1[|x| > 1] + (q − x) · 1[|x| ≤ 1])``;
* **activations** (`APoTActQuantizer`, ``b`` bits, unsigned): ``x / α`` (initial 8.0), clamp
  above at 1, nearest of the ``2**b`` levels (``B = b``), times ``α``; ``∂/∂x = g · 1[x ≤ 1]``,
  ``∂/∂α = Σ g · (1[x > 1] + (q − x) · 1[x ≤ 1])``;
* **first conv / last FC** (`UniformWeightQuantizer`): 8-bit uniform weights with a
  straight-through estimator, inputs not quantized.

Pruning on top (Makenali et al., arXiv 2509.04244): the quantized weight is multiplied by a
*keep* tensor after quantizing, because the normalisation maps a pruned (zero) weight to
``−μ/σ``, which APoT rounds to a non-zero level.

Choices:

* CHOICE: ``μ, σ`` are taken over the kept entries only (the official code knows no masks and
  takes all). A filter of exact zeros then changes neither the statistics of its layer nor the
  quantized values of the others, so removing it (`sparsecore.export.remove_channels`) leaves
  the quantized network unchanged.
* CHOICE: 2-bit weights use the uniform levels ``{0, 1}`` (the official ``power=False`` path;
  ``build_power_value(1)`` would be empty); APoT weights are 3 to 5 bits (``B`` 2 to 4),
  activations 2 to 6 bits.
* CHOICE: the 8-bit layers scale by ``max |w|`` with codes ``−127..127``; the official
  ``first_conv`` scales by ``max w``, whose codes overflow 8 bits when ``|min w| > max w``.
* CHOICE: the nearest level is found with ``torch.bucketize`` on the midpoints (ties go to the
  lower level), the same projection as the official ``argmin`` without its ``levels × numel``
  matrix.
"""

from __future__ import annotations

import torch
from torch import nn

from sparsecore.quant import QuantizedTensor, Quantizer

__all__ = [
    "APoTActQuantizer",
    "APoTWeightQuantizer",
    "UniformWeightQuantizer",
    "apot_levels",
    "nearest_level",
]

#: Exponents of the additive terms for ``B`` bits (``build_power_value``): each term is 0 or
#: ``2**-e`` for one ``e`` of its row; a level is the sum of one choice per term.
_TERMS: dict[int, tuple[tuple[int, ...], ...]] = {
    2: ((1, 2, 3),),
    3: ((1, 2, 4), (3,)),
    4: ((1, 3, 5), (2, 4, 6)),
    5: ((1, 3, 6), (2, 4, 7), (5,)),
    6: ((1, 4, 7), (2, 5, 8), (3, 6, 9)),
}


def apot_levels(bits: int, additive: bool = True) -> torch.Tensor:
    """The ``2**bits`` non-negative APoT levels for ``bits`` (``B``) bits, normalised to max 1.

    Args:
        bits: ``B`` of the official ``build_power_value``: 1 (uniform ``{0, 1}``) or 2 to 6.
        additive: ``False``: uniform levels ``k / (2**B − 1)`` instead.

    Returns:
        Sorted ``float32`` levels, ``levels[0] == 0`` and ``levels[-1] == 1``.

    Raises:
        ValueError: ``bits`` outside 1 to 6.
    """
    if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= 6:
        raise ValueError(f"bits must be an integer from 1 to 6, got {bits!r}")
    if not additive or bits == 1:
        return torch.arange(2**bits, dtype=torch.float64).div(2**bits - 1).to(torch.float32)
    values = {0.0}
    for row in _TERMS[bits]:
        values = {v + t for v in values for t in (0.0, *(2.0**-e for e in row))}
    levels = torch.tensor(sorted(values), dtype=torch.float64)
    return levels.div(levels.max()).to(torch.float32)


def nearest_level(x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Index of the nearest level of every entry of ``x`` (ties to the lower level)."""
    levels = levels.to(x.device, x.dtype)
    return torch.bucketize(x.contiguous(), (levels[1:] + levels[:-1]) / 2)


class _WeightQuant(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x_hat, alpha, levels, keep):  # type: ignore[override]
        x = x_hat / alpha
        clipped = x.clamp(-1.0, 1.0)
        q = levels.to(x.dtype)[nearest_level(clipped.abs(), levels)] * clipped.sign()
        ctx.save_for_backward(x, q, keep)
        return q.mul(alpha).mul(keep)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, q, keep = ctx.saved_tensors
        outside = x.abs() > 1.0
        local = torch.where(outside, x.sign(), q - x) * keep
        return grad, (grad * local).sum().reshape(()), None, None


class _ActQuant(torch.autograd.Function):
    @staticmethod
    def forward(ctx, inputs, alpha, levels):  # type: ignore[override]
        x = inputs / alpha
        q = levels.to(x.dtype)[nearest_level(x.clamp(0.0, 1.0), levels)]
        ctx.save_for_backward(x, q)
        return q.mul(alpha)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, q = ctx.saved_tensors
        outside = x > 1.0
        grad_alpha = (grad * torch.where(outside, torch.ones_like(x), q - x)).sum().reshape(())
        return grad * (~outside).to(grad.dtype), grad_alpha, None


class _StraightThrough(torch.autograd.Function):
    """Forward: exactly ``quantized``; backward: the gradient goes to ``weight`` unchanged."""

    @staticmethod
    def forward(ctx, weight, quantized):  # type: ignore[override]
        return quantized.clone()

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return grad, None


class _ActiveFlag(Quantizer):
    """A quantizer that is the identity until its persistent ``active`` buffer is set."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("active", torch.tensor(True))

    def set_active(self, value: bool) -> None:
        """Turn quantization on or off (the buffer is in the model's state_dict)."""
        self.active.fill_(bool(value))


def _keep_of(weight: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    out = weight.detach() != 0
    return out if keep is None else out & keep.to(out.device)


class APoTWeightQuantizer(_ActiveFlag):
    """Signed ``bits``-bit APoT weights with a learnable clip ``alpha`` (module docstring).

    Args:
        bits: Weight bits, 2 to 5 (one is the sign).
        alpha: Initial clip (official 3.0).
    """

    signed = True

    def __init__(self, bits: int = 4, alpha: float = 3.0) -> None:
        super().__init__()
        if not isinstance(bits, int) or isinstance(bits, bool) or not 2 <= bits <= 5:
            raise ValueError(f"weight_bits must be an integer from 2 to 5, got {bits!r}")
        self.bits = bits
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))
        self.register_buffer("levels", apot_levels(bits - 1), persistent=False)

    def normalised(self, weight: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """``(w − μ) / σ`` with ``μ, σ`` of the kept entries (detached)."""
        kept = weight.detach()[keep]
        if kept.numel() < 2:
            return weight
        return (weight - kept.mean()) / kept.std().clamp_min(1e-12)

    def forward(self, weight: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """The quantized weight ``α · (±level) · keep`` (``keep`` defaults to ``w ≠ 0``)."""
        if not bool(self.active):
            return weight
        keep = _keep_of(weight, keep)
        levels = self.levels.to(weight.device)
        return _WeightQuant.apply(
            self.normalised(weight, keep), self.alpha, levels, keep.to(weight.dtype)
        )

    @torch.no_grad()
    def encode(self, weight: torch.Tensor, keep: torch.Tensor | None = None) -> QuantizedTensor:
        """Signed codes ``±index`` (0 where not kept), levels and ``α``."""
        keep = _keep_of(weight, keep)
        x = (self.normalised(weight, keep) / self.alpha).clamp(-1.0, 1.0)
        codes = nearest_level(x.abs(), self.levels) * x.sign().to(torch.int64) * keep
        return QuantizedTensor(
            codes.to(torch.int64), self.levels.cpu(), float(self.alpha), self.bits, True
        )


class APoTActQuantizer(_ActiveFlag):
    """Unsigned ``bits``-bit APoT activations with their own learnable clip ``alpha``.

    Args:
        bits: Activation bits, 2 to 6.
        alpha: Initial clip (official 8.0).
    """

    signed = False

    def __init__(self, bits: int = 4, alpha: float = 8.0) -> None:
        super().__init__()
        if not isinstance(bits, int) or isinstance(bits, bool) or not 2 <= bits <= 6:
            raise ValueError(f"act_bits must be an integer from 2 to 6, got {bits!r}")
        self.bits = bits
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))
        self.register_buffer("levels", apot_levels(bits), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Quantized activations ``α · level``."""
        if not bool(self.active):
            return x
        return _ActQuant.apply(x, self.alpha, self.levels.to(x.device))

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> QuantizedTensor:
        """Unsigned level indices, levels and ``α``."""
        codes = nearest_level((x / self.alpha).clamp(0.0, 1.0), self.levels)
        return QuantizedTensor(codes, self.levels.cpu(), float(self.alpha), self.bits, False)


class UniformWeightQuantizer(_ActiveFlag):
    """Symmetric uniform weights (first conv / last FC, official 8 bits), straight through.

    Args:
        bits: Bits, 2 to 8 (codes ``−(2**(b−1) − 1) .. 2**(b−1) − 1``).
    """

    signed = True

    def __init__(self, bits: int = 8) -> None:
        super().__init__()
        if not isinstance(bits, int) or isinstance(bits, bool) or not 2 <= bits <= 8:
            raise ValueError(f"edge_bits must be an integer from 2 to 8, got {bits!r}")
        self.bits = bits
        steps = 2 ** (bits - 1) - 1
        self.register_buffer("levels", torch.arange(steps + 1) / float(steps), persistent=False)

    def _codes(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scale = weight.detach().abs().max().clamp_min(1e-12)
        steps = self.levels.numel() - 1
        return (weight.detach() / scale * steps).round(), scale

    def forward(self, weight: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """``scale · code / (2**(b−1) − 1) · keep``, gradient straight through to ``weight``."""
        if not bool(self.active):
            return weight
        codes, scale = self._codes(weight)
        quantized = self.levels.to(weight.dtype)[codes.abs().long()] * codes.sign()
        quantized = quantized.mul(scale).mul(_keep_of(weight, keep).to(weight.dtype))
        return _StraightThrough.apply(weight, quantized)

    @torch.no_grad()
    def encode(self, weight: torch.Tensor, keep: torch.Tensor | None = None) -> QuantizedTensor:
        """Signed integer codes with the uniform levels and the scale ``max |w|``."""
        codes, scale = self._codes(weight)
        codes = codes.to(torch.int64) * _keep_of(weight, keep)
        return QuantizedTensor(codes, self.levels.cpu(), float(scale), self.bits, True)

"""Options of `sparse_prunequant.PruneQuant` (FPGM filter pruning + APoT quantization)."""

from __future__ import annotations

from dataclasses import dataclass

from sparsecore.method import MethodConfig
from sparsecore.patterns import Channel, Pattern
from sparsecore.validation import check_int, check_number, check_shape

__all__ = ["PruneQuantConfig", "ppq", "spq"]


def _check_bits(value: int | None, name: str, low: int, high: int) -> None:
    if value is None:
        return
    check_int(value, name, low)
    if value > high:
        raise ValueError(f"{name} must be at most {high}, got {value}")


@dataclass(frozen=True)
class PruneQuantConfig(MethodConfig):
    """FPGM soft filter pruning with APoT quantization-aware training.

    SPQ (simultaneous, the default): ``quant_start=0``, ``prune_end=None`` (soft pruning every
    ``prune_every`` steps while quantized training runs; hard at `finalize`). PPQ (post-pruning):
    ``prune_end = quant_start = P`` (soft FPGM for ``P`` steps, hard masks at ``P``, then
    quantization-aware fine-tuning with the masks fixed). Prune only: ``weight_bits=None``;
    quantize only: ``sparsity=0``.

    Attributes:
        sparsity: Fraction ``r`` of filters pruned in every prunable channel group (``⌊r·N⌋``).
        pattern: Always ``"channel"`` (whole filters, the core's channel groups).
        input_shape: One input example's shape (no batch), to trace the channel groups;
            required when ``sparsity > 0``.
        prune_every: Steps between FPGM re-selections (one epoch in the paper).
        prune_end: Step at which the masks become hard (``None``: at `finalize`).
        weight_bits: APoT weight bits (2 to 5; ``None``: no quantization).
        act_bits: APoT activation bits (2 to 6; ``None``: the same as ``weight_bits``).
        edge_bits: Uniform weight bits of the first and last layer (official 8).
        quant_start: Step at which quantization-aware training starts.
        weight_alpha: Initial weight clip ``α`` (official 3.0).
        act_alpha: Initial activation clip ``α`` (official 8.0).
    """

    sparsity: float = 0.3
    pattern: Pattern | str = "channel"
    input_shape: tuple[int, ...] | None = None
    prune_every: int = 100
    prune_end: int | None = None
    weight_bits: int | None = 4
    act_bits: int | None = None
    edge_bits: int = 8
    quant_start: int = 0
    weight_alpha: float = 3.0
    act_alpha: float = 8.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.pattern, Channel) or self.pattern.dim != 0:
            raise ValueError(f"pattern must be 'channel' (FPGM prunes filters), got {self.pattern}")
        if self.input_shape is not None:
            object.__setattr__(self, "input_shape", check_shape(self.input_shape, "input_shape"))
        check_int(self.prune_every, "prune_every", 1)
        if self.prune_end is not None:
            check_int(self.prune_end, "prune_end", 0)
        _check_bits(self.weight_bits, "weight_bits", 2, 5)
        _check_bits(self.act_bits, "act_bits", 2, 6)
        _check_bits(self.edge_bits, "edge_bits", 2, 8)
        check_int(self.quant_start, "quant_start", 0)
        check_number(self.weight_alpha, "weight_alpha", 0.0, open_low=True, finite=True)
        check_number(self.act_alpha, "act_alpha", 0.0, open_low=True, finite=True)
        if self.sparsity > 0 and self.input_shape is None:
            raise ValueError("input_shape is required when sparsity > 0 (it traces the groups)")
        if self.act_bits is not None and self.weight_bits is None:
            raise ValueError("act_bits needs weight_bits (quantization is off without it)")

    @property
    def activation_bits(self) -> int | None:
        """The activation bits in use (``act_bits``, else ``weight_bits``)."""
        return self.act_bits if self.act_bits is not None else self.weight_bits

    @property
    def prunes(self) -> bool:
        """Whether filters are pruned (``sparsity > 0``)."""
        return self.sparsity > 0

    @property
    def quantizes(self) -> bool:
        """Whether the model is quantized (``weight_bits`` set)."""
        return self.weight_bits is not None


def spq(sparsity: float, bits: int, input_shape: tuple[int, ...], prune_every: int) -> dict:
    """Options of SPQ: quantized training from step 0, soft FPGM throughout, hard at the end."""
    return {
        "sparsity": sparsity,
        "weight_bits": bits,
        "input_shape": input_shape,
        "prune_every": prune_every,
        "quant_start": 0,
        "prune_end": None,
    }


def ppq(
    sparsity: float, bits: int, input_shape: tuple[int, ...], prune_every: int, prune_end: int
) -> dict:
    """Options of PPQ: soft FPGM to ``prune_end``, hard masks, then quantized fine-tuning."""
    return {
        "sparsity": sparsity,
        "weight_bits": bits,
        "input_shape": input_shape,
        "prune_every": prune_every,
        "quant_start": prune_end,
        "prune_end": prune_end,
    }

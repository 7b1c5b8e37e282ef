"""SlimFit: memory-efficient fine-tuning by freezing layers from their training dynamics.

Ardakani et al., "SlimFit: Memory-Efficient Fine-Tuning of Transformer-based Models Using
Training Dynamics", 2023, arXiv 2305.18513 (official code: github.com/arashardakani/SlimFit).
At every iteration the ``⌊ρ·t⌋`` weight tensors that changed least (relative L1 change per
entry at their last training step) are frozen; frozen Linear layers keep no input for
backward, frozen LayerNorms keep only the top-10% of their normalised output, and the FFN
output projection caches its input in 8-bit fixed point.
"""

from sparse_slimfit.activations import (
    ActivationPatch,
    FrozenLayerNormFunction,
    FrozenLinearFunction,
    QuantizedInputLinearFunction,
    dequantize_fixed_point,
    ffn_output_projections,
    patch_activations,
    quantize_fixed_point,
)
from sparse_slimfit.config import SlimFitConfig
from sparse_slimfit.method import SlimFit
from sparse_slimfit.scheduler import freeze_count, frozen_units, relative_change, slimfit_units

__version__ = "0.1.0"

__all__ = [
    "ActivationPatch",
    "FrozenLayerNormFunction",
    "FrozenLinearFunction",
    "QuantizedInputLinearFunction",
    "SlimFit",
    "SlimFitConfig",
    "__version__",
    "dequantize_fixed_point",
    "ffn_output_projections",
    "freeze_count",
    "frozen_units",
    "patch_activations",
    "quantize_fixed_point",
    "relative_change",
    "slimfit_units",
]

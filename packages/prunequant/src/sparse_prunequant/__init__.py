"""sparse-prunequant: FPGM filter pruning integrated with APoT quantization (SPQ and PPQ).

Makenali, Rokh & Azarpeyvand, "Integrating Pruning with Quantization for Efficient Deep Neural
Networks Compression", arXiv 2509.04244.

```python
from sparse_prunequant import PruneQuant, export_compact
method = PruneQuant(sparsity=0.3, weight_bits=4, input_shape=(1, 8, 8), prune_every=12)
method.setup(model, optimizer)   # quantized layers, channel-group masks
...                              # the training loop as it was
model = method.finalize()        # hard masks, fake-quantized model
compact = export_compact(model, x[:1], "model.safetensors")  # shrunk, integer codes
```
"""

from sparse_prunequant.apot import (
    APoTActQuantizer,
    APoTWeightQuantizer,
    UniformWeightQuantizer,
    apot_levels,
)
from sparse_prunequant.config import PruneQuantConfig, ppq, spq
from sparse_prunequant.export import CompactExport, export_compact, load_compact
from sparse_prunequant.fpgm import fpgm_keeps, pruned_count, soft_zero
from sparse_prunequant.layers import install_quantizers, quant_layers, strip_quantizers
from sparse_prunequant.method import PruneQuant

__version__ = "0.1.0"

__all__ = [
    "APoTActQuantizer",
    "APoTWeightQuantizer",
    "CompactExport",
    "PruneQuant",
    "PruneQuantConfig",
    "UniformWeightQuantizer",
    "__version__",
    "apot_levels",
    "export_compact",
    "fpgm_keeps",
    "install_quantizers",
    "load_compact",
    "ppq",
    "pruned_count",
    "quant_layers",
    "soft_zero",
    "spq",
    "strip_quantizers",
]

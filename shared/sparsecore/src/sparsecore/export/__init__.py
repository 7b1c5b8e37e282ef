"""Making sparsity pay off: compact checkpoints, CSR inference, structured surgery, 2:4 kernels.

* `save_compact` / `load_compact`: safetensors with packed bitmasks plus kept values
  (a 90 % sparse fp32 model in about 13 % of the dense file).
* `to_sparse_inference`: sparse ``nn.Linear`` layers become `CSRLinear` modules.
* `remove_channels`: physically remove pruned channels with Torch-Pruning's dependency graph
  (optional extra ``sparse-core[structured]``).
* `to_semi_structured`: 2:4 weights become ``torch.sparse`` semi-structured tensors (CUDA).
* `sparsecore.export.compressed_tensors`: write / reload the compressed-tensors
  ``sparse-bitmask`` folder (the format llm-compressor writes), bit for bit the library's layout.
* `sparsecore.export.entropy`: range coding of integer tensors (quantized weights, weight
  residuals) under discretised-logistic priors, with the prior's bit estimate (optional extra
  ``sparse-core[coding]``: the ``constriction`` package; imported on first use).

See ``docs/export.md`` for a guide with measured numbers.
"""

from sparsecore.export.checkpoint import FORMAT, compact_size_report, load_compact, save_compact
from sparsecore.export.inference import CSRLinear, to_sparse_inference
from sparsecore.export.semi_structured import is_two_four, to_semi_structured
from sparsecore.export.surgery import remove_channels

__all__ = [
    "FORMAT",
    "CSRLinear",
    "compact_size_report",
    "is_two_four",
    "load_compact",
    "remove_channels",
    "save_compact",
    "to_semi_structured",
    "to_sparse_inference",
]

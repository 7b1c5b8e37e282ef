"""BDWP: bidirectional N:M weight pruning for sparse training (Fang et al., IEEE TCAD 2023).

"Efficient N:M Sparse DNN Training Using Algorithm, Architecture, and Dataflow Co-Design",
arXiv 2309.13015 (no official code).

* `BDWP`: the sparsecore method (registry name ``"bdwp"``): forward N:M along inputs,
  backward-data N:M along outputs, dense weight gradient, SR-STE decay.
* `bdwp_linear`, `bdwp_conv`: the three-GEMM autograd functions; `semi_structured_linear`: the
  CUDA 2:4 path.
* Training FLOPs: `sparsecore.evaluation.count_training_flops` with `BDWP.backward_weights`.
"""

from sparse_bdwp.config import BACKWARD_MODES, KERNELS, BDWPConfig
from sparse_bdwp.function import (
    bdwp_conv,
    bdwp_linear,
    semi_structured_available,
    semi_structured_linear,
)
from sparse_bdwp.method import BDWP, backward_mask_name

__version__ = "0.1.0"

__all__ = [
    "BACKWARD_MODES",
    "BDWP",
    "KERNELS",
    "BDWPConfig",
    "__version__",
    "backward_mask_name",
    "bdwp_conv",
    "bdwp_linear",
    "semi_structured_available",
    "semi_structured_linear",
]

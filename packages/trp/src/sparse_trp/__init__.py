"""TRP (Xu et al., IJCAI 2020): trained rank pruning, on sparsecore.

Train with `TRP` attached to an ordinary loop (periodic low-rank substitution of the
weights plus a nuclear-norm sub-gradient), then `TRP.decompose` the trained model into a
smaller, faster one made of standard layers only.
"""

from sparse_trp.config import TRPConfig
from sparse_trp.decompose import (
    build_decomposed,
    decompose,
    decomposed_module,
    eligible_layers,
    plan_ranks,
)
from sparse_trp.flops import decomposed_macs, dense_macs, layer_inputs, model_macs, plan_at_macs
from sparse_trp.lowrank import (
    EnergyThreshold,
    FixedRank,
    RankCriterion,
    Truncation,
    ValueThreshold,
    from_matrix,
    svd_truncate,
    to_matrix,
)
from sparse_trp.method import TRP

__version__ = "0.1.0"

__all__ = [
    "TRP",
    "EnergyThreshold",
    "FixedRank",
    "RankCriterion",
    "TRPConfig",
    "Truncation",
    "ValueThreshold",
    "__version__",
    "build_decomposed",
    "decompose",
    "decomposed_macs",
    "decomposed_module",
    "dense_macs",
    "eligible_layers",
    "from_matrix",
    "layer_inputs",
    "model_macs",
    "plan_at_macs",
    "plan_ranks",
    "svd_truncate",
    "to_matrix",
]

"""sparsecore: masks, schedules, method lifecycle, baselines, evaluation and export for sparse
training in PyTorch.

The public API is re-exported here; see the concepts page of the documentation for a tour.
"""

from sparsecore.baselines import GMP, IMP, SET, SNIP, OneShotMagnitude, RandomPruning, RigL
from sparsecore.distribution import erk, layer_densities, uniform
from sparsecore.layouts import is_hf_conv1d
from sparsecore.masks import MaskSet
from sparsecore.method import (
    DynamicSparseConfig,
    DynamicSparseMethod,
    MethodConfig,
    PruningMethod,
)
from sparsecore.oneshot import SparseGPT, Wanda
from sparsecore.patterns import (
    NM,
    Block,
    Channel,
    Head,
    Pattern,
    Unstructured,
    parse_pattern,
    transpose_pattern,
)
from sparsecore.procedure import Procedure, ProcedureConfig
from sparsecore.registry import (
    available_methods,
    available_procedures,
    get_method,
    get_procedure,
    register_method,
    register_procedure,
)
from sparsecore.select import keep_count, select, select_global, topk_mask
from sparsecore.targets import Target, default_targets, resolve_targets
from sparsecore.window import PruningWindow, ScheduleIncompleteWarning

__version__ = "0.1.0"

__all__ = [
    "GMP",
    "IMP",
    "NM",
    "SET",
    "SNIP",
    "Block",
    "Channel",
    "DynamicSparseConfig",
    "DynamicSparseMethod",
    "Head",
    "MaskSet",
    "MethodConfig",
    "OneShotMagnitude",
    "Pattern",
    "Procedure",
    "ProcedureConfig",
    "PruningMethod",
    "PruningWindow",
    "RandomPruning",
    "RigL",
    "ScheduleIncompleteWarning",
    "SparseGPT",
    "Target",
    "Unstructured",
    "Wanda",
    "__version__",
    "available_methods",
    "available_procedures",
    "default_targets",
    "erk",
    "get_method",
    "get_procedure",
    "is_hf_conv1d",
    "keep_count",
    "layer_densities",
    "parse_pattern",
    "register_method",
    "register_procedure",
    "resolve_targets",
    "select",
    "select_global",
    "topk_mask",
    "transpose_pattern",
    "uniform",
]

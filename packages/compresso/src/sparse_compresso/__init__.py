"""Compresso: structured pruning with collaborative prompting, on sparsecore.

Guo, Xu, Zhang & Yang, "Compresso: Structured Pruning with Collaborative Prompting Learns Compact
Large Language Models", arXiv 2310.05015 (github.com/microsoft/Moonlit ``Compresso/``).
Hard-concrete L0 gates on attention heads, FFN channels and hidden dimensions train together with
LoRA under a Lagrangian size constraint, on instruction data wrapped in a prompt that tells the
model it is being pruned; the gated-off structures are then removed physically.
"""

from sparse_compresso.config import CompressoConfig
from sparse_compresso.hard_concrete import (
    cdf_zero,
    deterministic_gate,
    keep_probability,
    sample_gate,
)
from sparse_compresso.l0 import L0Gates, target_sparsity
from sparse_compresso.method import Compresso
from sparse_compresso.prompt import (
    COLLABORATIVE_PROMPT,
    PROMPTS,
    format_example,
    instruction_examples,
    tokenize_example,
)

__version__ = "0.1.0"

__all__ = [
    "COLLABORATIVE_PROMPT",
    "PROMPTS",
    "Compresso",
    "CompressoConfig",
    "L0Gates",
    "__version__",
    "cdf_zero",
    "deterministic_gate",
    "format_example",
    "instruction_examples",
    "keep_probability",
    "sample_gate",
    "target_sparsity",
    "tokenize_example",
]

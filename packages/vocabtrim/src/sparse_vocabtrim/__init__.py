"""VocabTrim: vocabulary pruning of the drafter LM head for efficient speculative decoding.

Goel et al., "VocabTrim: Vocabulary Pruning for Efficient Speculative Decoding in LLMs",
arXiv 2506.22694. No official code exists.
"""

from sparse_vocabtrim.method import VocabTrim, VocabTrimConfig
from sparse_vocabtrim.metrics import decode_bytes, memory_bound_speedup
from sparse_vocabtrim.speculative import (
    CausalLMRunner,
    SpeculativeOutput,
    autoregressive_generate,
    speculative_generate,
    verify_block,
)
from sparse_vocabtrim.trim import TrimmedLMHead, token_counts, top_k_vocab, trim_drafter

__version__ = "0.1.0"

__all__ = [
    "CausalLMRunner",
    "SpeculativeOutput",
    "TrimmedLMHead",
    "VocabTrim",
    "VocabTrimConfig",
    "__version__",
    "autoregressive_generate",
    "decode_bytes",
    "memory_bound_speedup",
    "speculative_generate",
    "token_counts",
    "top_k_vocab",
    "trim_drafter",
    "verify_block",
]

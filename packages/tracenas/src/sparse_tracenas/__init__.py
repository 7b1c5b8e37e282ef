"""sparse-tracenas: TraceNAS, zero-shot LLM depth and width search by gradient-trace correlation.

Paper: "TraceNAS: Zero-shot LLM Pruning via Gradient Trace Correlation" (Malettira et al.,
arXiv 2602.02891); official code github.com/pmaletti/TraceNAS.
"""

from sparse_tracenas.config import PROXIES, TraceNASConfig
from sparse_tracenas.evolution import breed, initial_candidate
from sparse_tracenas.method import TraceNAS, element_masks, projection_targets
from sparse_tracenas.search import Scored, SearchResult, evolutionary_search
from sparse_tracenas.space import Candidate, SearchSpace
from sparse_tracenas.traces import (
    causal_lm_loss,
    collect_base,
    correlation,
    group_masks_of,
    proxy_score,
    trace_of,
)

__version__ = "0.1.0"

__all__ = [
    "PROXIES",
    "Candidate",
    "Scored",
    "SearchResult",
    "SearchSpace",
    "TraceNAS",
    "TraceNASConfig",
    "breed",
    "causal_lm_loss",
    "collect_base",
    "correlation",
    "element_masks",
    "evolutionary_search",
    "group_masks_of",
    "initial_candidate",
    "projection_targets",
    "proxy_score",
    "trace_of",
]

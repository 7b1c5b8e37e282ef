"""SHRP: specialized head routing and pruning for encoder compression, on sparsecore.

Su et al., "SHRP: Specialized Head Routing and Pruning for Efficient Encoder Compression",
arXiv 2512.20635 (2025). Each head of a pretrained BERT encoder becomes a Top-1-routed expert
followed by a shared expander; after a load-balancing and a specialisation stage the heads the
router does not use are removed and a physically smaller BERT is deployed.
"""

from typing import TYPE_CHECKING, Any

from sparse_shrp.config import SHRPConfig
from sparse_shrp.expert_attention import (
    ExpertAttention,
    balance_loss,
    expert_layers,
    to_expert_attention,
    valid_tokens,
)
from sparse_shrp.method import SHRP
from sparse_shrp.structure import encoder_params, shrink_encoder
from sparse_shrp.usage import measure_usage, routing_entropy, select_heads

if TYPE_CHECKING:
    from sparse_shrp.deploy import (
        NoHeadSelfAttention,
        ShrpBertConfig,
        ShrpBertModel,
        deploy_routed,
        prune_bert_heads,
        remove_dead_heads,
        to_plain_bert,
    )

# The deploy names need transformers: imported on first use, so that discovering the method
# (`sparse list`, `get_method`) does not import transformers.
_DEPLOY = (
    "NoHeadSelfAttention",
    "ShrpBertConfig",
    "ShrpBertModel",
    "deploy_routed",
    "prune_bert_heads",
    "remove_dead_heads",
    "to_plain_bert",
)

__version__ = "0.1.0"

__all__ = [
    "SHRP",
    "ExpertAttention",
    "NoHeadSelfAttention",
    "SHRPConfig",
    "ShrpBertConfig",
    "ShrpBertModel",
    "__version__",
    "balance_loss",
    "deploy_routed",
    "encoder_params",
    "expert_layers",
    "measure_usage",
    "prune_bert_heads",
    "remove_dead_heads",
    "routing_entropy",
    "select_heads",
    "shrink_encoder",
    "to_expert_attention",
    "to_plain_bert",
    "valid_tokens",
]


def __getattr__(name: str) -> Any:
    if name in _DEPLOY:
        from sparse_shrp import deploy

        return getattr(deploy, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

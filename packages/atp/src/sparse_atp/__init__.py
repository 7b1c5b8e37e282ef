"""ATP: all-in-one tuning and structural pruning for domain-specific LLMs, on sparsecore.

Lu et al., "All-in-One Tuning and Structural Pruning for Domain-Specific LLMs", arXiv
2412.14426. A trainable pruning-decision generator re-decides which attention heads and FFN
channels are kept while LoRA fine-tunes the model on the domain; a budget penalty steers the
decisions to the parameter target and a group lasso on the pruned groups' effective weights
``W0 + BA`` prepares their removal; at the end the decisions are fixed, LoRA is merged and the
pruned structures are removed, giving a plain smaller Hugging Face model.
"""

from sparse_atp.budget import GroupCosts, budget_penalty, project_to_budget, remaining_fraction
from sparse_atp.config import ATPConfig
from sparse_atp.generator import DecisionGenerator, gumbel_sigmoid_ste
from sparse_atp.lasso import TARGETS, effective_weight, group_lasso
from sparse_atp.method import ATP, GENERATOR

__version__ = "0.1.0"

__all__ = [
    "ATP",
    "GENERATOR",
    "TARGETS",
    "ATPConfig",
    "DecisionGenerator",
    "GroupCosts",
    "__version__",
    "budget_penalty",
    "effective_weight",
    "group_lasso",
    "gumbel_sigmoid_ste",
    "project_to_budget",
    "remaining_fraction",
]

"""Structure groups of Hugging Face transformers: heads, FFN channels, hidden dimensions, layers.

* `describe`: the layout of a Llama/Qwen2/Mistral, BERT/RoBERTa or GPT-2 model (found by module
  structure), with per-layer head / key-value / FFN counts read from the weights.
* `mask_groups` / `GroupMasker`: group masks (bool or soft gates) applied in the forward through
  hooks, where CoFi and Compresso put ``head_z``, ``intermediate_z`` and ``hidden_z``.
* `shrink`: a plain, smaller model of the same class; `load_pretrained` reloads it when the counts
  differ per layer (the stock ``from_pretrained`` does when they are uniform).
* `group_members` / `group_scores`: which parameter slices form each group, and magnitude scores;
* `importance` (`group_importance`, `prune_structured`): magnitude, first-order Taylor
  (LLM-Pruner) and Wanda-sp group scores and one-shot structured pruning to a parameter budget,
  the structured baselines of LLM pruning papers;
  `head_features`: the projection rows / columns of a set of heads (used by sparse-shrp).

Sources: CoFi ("Structured Pruning Learns Compact and Accurate Models", Xia, Zhong & Chen,
arXiv 2204.00408, github.com/princeton-nlp/CoFiPruning) and Compresso (arXiv 2310.05015,
github.com/microsoft/Moonlit ``Compresso/models/l0_module.py``) for where the gates act.
"""

from sparsecore.structures.importance import (
    CRITERIA,
    budget_masks,
    collect_gradients,
    collect_input_norms,
    group_importance,
    group_parameter_counts,
    prune_structured,
)
from sparsecore.structures.layout import FAMILIES, LayerLayout, ModelLayout, describe
from sparsecore.structures.masking import (
    KINDS,
    GroupMasker,
    check_group_masks,
    full_group_masks,
    mask_groups,
)
from sparsecore.structures.members import group_members, group_scores, masks_from_scores
from sparsecore.structures.resize import head_features
from sparsecore.structures.shrink import load_pretrained, plan_shrink, shrink

__all__ = [
    "CRITERIA",
    "FAMILIES",
    "KINDS",
    "GroupMasker",
    "LayerLayout",
    "ModelLayout",
    "budget_masks",
    "check_group_masks",
    "collect_gradients",
    "collect_input_norms",
    "describe",
    "full_group_masks",
    "group_importance",
    "group_members",
    "group_parameter_counts",
    "group_scores",
    "head_features",
    "load_pretrained",
    "mask_groups",
    "masks_from_scores",
    "plan_shrink",
    "prune_structured",
    "shrink",
]

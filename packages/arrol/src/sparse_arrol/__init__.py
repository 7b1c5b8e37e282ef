"""ARRoL (Xu et al., arXiv 2603.24840): online rollout pruning for faster and better RLVR.

Paper: "Prune as You Generate: Online Rollout Pruning for Faster and Better RLVR" (ACL 2026).

Public API:

* `ARRoL` / `ARRoLConfig`: the procedure (entry point ``arrol``): a quality head on the partial
  rollout's hidden state, bucketed online calibration, and pruning to ``round(K·N)`` survivors
  per prompt whose expected positive fraction is closest to ``p``; one pruned GRPO step with
  `ARRoL.step`;
* `RandomRolloutPruning` / `RandomPruningConfig`: the same ``K`` with uniformly random survivors;
* `balanced_subset`, `prune_groups`, `keep_count`, `objective`: the selection rule;
* `QualityHead`, `BucketCalibrator`: the head and its calibration;
* `vote_accuracy`: quality-weighted vote@k against maj@k.

The GRPO loop, rollout generation with mid-generation pruning and the toy tasks are the core's
(`sparsecore.rl`).
"""

from sparse_arrol.evaluation import vote_accuracy
from sparse_arrol.head import BucketCalibrator, QualityHead
from sparse_arrol.procedure import ARRoL, ARRoLConfig, RandomPruningConfig, RandomRolloutPruning
from sparse_arrol.selection import balanced_subset, keep_count, objective, prune_groups

__version__ = "0.1.0"

__all__ = [
    "ARRoL",
    "ARRoLConfig",
    "BucketCalibrator",
    "QualityHead",
    "RandomPruningConfig",
    "RandomRolloutPruning",
    "__version__",
    "balanced_subset",
    "keep_count",
    "objective",
    "prune_groups",
    "vote_accuracy",
]

"""RA3 (Zhang et al., Apple, arXiv 2509.25810): action abstractions and action-space pruning.

"Learning to Reason as Action Abstractions with Scalable Mid-Training RL". Public API:

* `ActionPruning` / `ActionPruningConfig` / `token_counts`: the action-space pruning step as a
  `sparsecore.Procedure` (entry point ``ra3``): a causal LM restricted to the token set ``Ẑ``
  its expert data plays frequently;
* `theory`: `make_bandit_family`, `BanditFamily`, `prune_by_frequency`, `theorem_sample_size`,
  `pruning_trials` (Theorem 3.5, runnable); `horizon`: `LockFamily`, `action_set`,
  `episodes_to_solve`, `vi_iterations_bound` (RL convergence vs horizon, Theorem 3.6);
* `latents`: the sequential ELBO over latent abstractions (`elbo`, `exact_log_marginal`,
  `posterior`, `sample_latents`, `score`, `augment`, `patterns`);
* `em`: the RA3 EM loop (`ra3_step`, `ntp_step`, `RA3Config`, `latent_lm`, `sft_loss`);
* `corpus`: the code-like toy (`make_programs`, `Program`, `reward`); `rlvr`: a minimal GRPO.
"""

from sparse_ra3.actions import ActionPruning, ActionPruningConfig, token_counts
from sparse_ra3.corpus import EOS, FIRST_LATENT, Program, make_programs, reward
from sparse_ra3.em import RA3Config, latent_lm, ntp_step, ra3_step, sft_loss
from sparse_ra3.horizon import LockFamily, action_set, episodes_to_solve, vi_iterations_bound
from sparse_ra3.latents import (
    CONT,
    augment,
    boundaries,
    elbo,
    exact_log_marginal,
    expert_ids,
    patterns,
    posterior,
    sample_latents,
    score,
)
from sparse_ra3.theory import (
    BanditFamily,
    make_bandit_family,
    prune_by_frequency,
    pruning_trials,
    theorem_sample_size,
)

__version__ = "0.1.0"

__all__ = [
    "CONT",
    "EOS",
    "FIRST_LATENT",
    "ActionPruning",
    "ActionPruningConfig",
    "BanditFamily",
    "LockFamily",
    "Program",
    "RA3Config",
    "__version__",
    "action_set",
    "augment",
    "boundaries",
    "elbo",
    "episodes_to_solve",
    "exact_log_marginal",
    "expert_ids",
    "latent_lm",
    "make_bandit_family",
    "make_programs",
    "ntp_step",
    "patterns",
    "posterior",
    "prune_by_frequency",
    "pruning_trials",
    "ra3_step",
    "reward",
    "sample_latents",
    "score",
    "sft_loss",
    "theorem_sample_size",
    "token_counts",
    "vi_iterations_bound",
]

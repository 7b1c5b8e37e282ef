"""Reinforcement learning with verifiable rewards (RLVR) on small causal LMs: GRPO/DAPO pieces.

Used by the rollout-pruning (ARRoL) and mid-training RL (RA3) packages; generic, nothing of either
paper lives here.

* `sparsecore.rl.rollout`: `generate_rollouts`: N rollouts per prompt with the KV cache, per-row
  stopping on EOS, an optional ``detect`` callback at step ``detect_step`` that sees each rollout's
  hidden state and returns the survivors; removed rows leave the batch *and* the cache, so they
  generate no further tokens (`RolloutBatch.tokens_generated`, ``row_forwards``, ``seconds``).
* `sparsecore.rl.grpo`: `group_advantages` (``(r - mean) / (std + eps)`` over the included rollouts
  of each prompt), `dynamic_sampling_mask` (DAPO: drop all-0 / all-1 groups), `token_logprobs`
  (re-batched over whatever rollouts are passed), `policy_loss` (token-level clipped surrogate,
  DAPO clip-higher via ``eps_high``).
* `sparsecore.rl.trainer`: `GRPOConfig`, `grpo_step` (generation / log-prob / update, timed per
  phase), `greedy_accuracy`, `weighted_vote` (equal weights = maj@k).
* `sparsecore.rl.tasks`: verifiable toy tasks (`AdditionTask`, `ReversalTask`) over a
  tokenizer-free character vocabulary (`CHAR_VOCAB`), exact-match reward.
* `sparsecore.rl.warmstart`: `sft_warm_start`: a cached SFT warm start of the core's tiny Llama so
  that rewards are neither all 0 nor all 1.

Why not TRL (decided and checked on this machine): ``trl`` 1.16.0 installs next to
transformers 5.24 and torch 2.15, but ``GRPOTrainer`` generates each group in one
``model.generate`` call (or in vLLM); stopping *some* rollouts mid-generation would need a fork of
``_generate_single_turn``, and a ``StoppingCriteria`` only marks rows done while they keep
occupying the batch (padded forward passes: no tokens saved). It also pulls in ``accelerate``,
``datasets`` and a ``Trainer`` loop whose phases cannot be timed separately. A clear GRPO loop of
~300 lines on transformers' forward pass with ``DynamicCache`` does what the rollout-pruning
papers need: rows truly leave the batch, tokens and phases are counted.

Requires the ``hf`` extra (transformers).
"""

from sparsecore.rl.grpo import dynamic_sampling_mask, group_advantages, policy_loss, token_logprobs
from sparsecore.rl.rollout import DetectInfo, RolloutBatch, generate_rollouts, left_pad
from sparsecore.rl.tasks import CHAR_VOCAB, AdditionTask, CharVocab, Problem, ReversalTask, ToyTask
from sparsecore.rl.trainer import (
    GRPOConfig,
    StepResult,
    greedy_accuracy,
    grpo_step,
    weighted_vote,
)
from sparsecore.rl.warmstart import RL_MODEL_SIZES, sft_warm_start, warm_start_path

__all__ = [
    "CHAR_VOCAB",
    "RL_MODEL_SIZES",
    "AdditionTask",
    "CharVocab",
    "DetectInfo",
    "GRPOConfig",
    "Problem",
    "ReversalTask",
    "RolloutBatch",
    "StepResult",
    "ToyTask",
    "dynamic_sampling_mask",
    "generate_rollouts",
    "greedy_accuracy",
    "group_advantages",
    "grpo_step",
    "left_pad",
    "policy_loss",
    "sft_warm_start",
    "token_logprobs",
    "warm_start_path",
    "weighted_vote",
]

"""RLVR after mid-training: GRPO (the core's ``sparsecore.rl``) on the toy's verifiable reward.

Paper: Zhang et al. (Apple), "Learning to Reason as Action Abstractions with Scalable Mid-Training
RL" (RA3), arXiv 2509.25810: RA3 "achieves faster convergence and higher asymptotic performance
in RLVR" (GRPO-style RL on HumanEval+, MBPP+, LiveCodeBench, Codeforces). Here the policy
is a mid-trained tiny LM, the prompts are ``want NN`` and the verifier is
`sparse_ra3.corpus.reward` (1 when the generated program returns the wanted value; shaped).

The pieces come from the core's generic RL module (``sparsecore.rl``, merged from issue 36):
`sparsecore.rl.generate_rollouts` (``group`` rollouts per prompt with the KV cache, per-row
stopping at ``<eos>``), `sparsecore.rl.group_advantages` (``(r − mean) / (std + 1e-6)`` per
prompt), `sparsecore.rl.token_logprobs` and `sparsecore.rl.policy_loss` (token-level clipped
surrogate). This module only wraps them (choices, labelled): one on-policy update per batch (so
the PPO ratio is 1 and clipping never binds), no KL term (DAPO / Dr. GRPO practice), gradient
norm clipped at 1, and a batch whose advantages are all 0 takes no step.

An attached `sparse_ra3.ActionPruning` acts in both sampling and the log-probabilities (its hook
is on the output head), so RL runs inside the pruned action set ``Ẑ``.
"""

from __future__ import annotations

import random

import torch
from torch import nn

from sparse_ra3.corpus import EOS, prompt_ids, reward
from sparsecore.rl import generate_rollouts, group_advantages, policy_loss, token_logprobs
from sparsecore.rl.rollout import RolloutBatch
from sparsecore.validation import check_int, check_number

__all__ = ["completions_of", "greedy_accuracy", "grpo_step", "rlvr", "sample_rollouts"]


def sample_rollouts(
    model: nn.Module,
    wants: list[int],
    group: int,
    max_new_tokens: int,
    generator: torch.Generator | None,
    temperature: float = 1.0,
) -> tuple[RolloutBatch, torch.Tensor]:
    """``group`` rollouts per ``want NN`` prompt and their rewards (``temperature=0``: greedy)."""
    batch = generate_rollouts(
        model, [prompt_ids(w) for w in wants], group, max_new_tokens, EOS, EOS,
        temperature=temperature, generator=generator,
    )  # fmt: skip
    rewards = torch.tensor(
        [reward(wants[int(g)], c) for g, c in zip(batch.groups, completions_of(batch), strict=True)]
    )
    return batch, rewards


def completions_of(batch: RolloutBatch) -> list[list[int]]:
    """The generated token lists of a `RolloutBatch`."""
    return [batch.completions[r, : int(n)].tolist() for r, n in enumerate(batch.lengths)]


def grpo_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, batch: RolloutBatch, rewards: torch.Tensor
) -> float:
    """One on-policy GRPO update; returns the loss (0 and no step when every advantage is 0)."""
    adv = group_advantages(rewards.float(), batch.groups)
    if not bool((adv != 0).any()):
        return 0.0
    model.train()
    optimizer.zero_grad(set_to_none=True)
    logp = token_logprobs(model, batch.prompts, batch.prompt_mask, batch.completions, batch.lengths)
    loss = policy_loss(logp, logp.detach(), adv, batch.completion_mask())
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return loss.item()


def rlvr(
    model: nn.Module,
    wants: list[int],
    steps: int,
    prompts_per_step: int = 8,
    group: int = 8,
    lr: float = 1e-3,
    max_new_tokens: int = 48,
    seed: int = 0,
) -> list[float]:
    """GRPO on prompts drawn from ``wants``; the mean batch reward of every step."""
    check_int(steps, "steps", 0)
    check_int(prompts_per_step, "prompts_per_step", 1)
    check_number(lr, "lr", 0.0, open_low=True)
    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    curve = []
    for _ in range(steps):
        batch, rewards = sample_rollouts(
            model, [rng.choice(wants) for _ in range(prompts_per_step)], group, max_new_tokens, g
        )
        grpo_step(model, optimizer, batch, rewards)
        curve.append(float(rewards.mean()))
    model.eval()
    return curve


def greedy_accuracy(model: nn.Module, wants: list[int], max_new_tokens: int = 48) -> float:
    """Fraction of ``wants`` whose greedy completion returns exactly the wanted value."""
    was = model.training
    batch, _ = sample_rollouts(model, wants, 1, max_new_tokens, None, temperature=0.0)
    model.train(was)
    comps = completions_of(batch)
    return sum(reward(w, c, shaped=False) for w, c in zip(wants, comps, strict=True)) / len(wants)

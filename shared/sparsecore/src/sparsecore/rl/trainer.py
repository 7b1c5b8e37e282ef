"""One GRPO/DAPO step on a causal LM, timed per phase, with a hook for mid-generation pruning.

`grpo_step` runs the three phases the RLVR systems report separately:

1. **generation**: `sparsecore.rl.rollout.generate_rollouts` (``num_samples`` rollouts per prompt,
   KV cache, optional ``detect`` callback that prunes rollouts mid-generation), then the
   verifiable rewards of the surviving rollouts;
2. **log-prob**: the old policy's token log-probs of the rollouts that enter the update
   (survivors, minus DAPO-dropped groups), re-batched so that pruned rollouts cost nothing;
3. **update**: ``updates`` gradient steps on the clipped token-level loss
   (`sparsecore.rl.grpo.policy_loss`) with group advantages over the included rollouts.

It returns a `StepResult` with the rollouts, rewards, the mask of rollouts used, token and
forward counts and the seconds of each phase, so a caller (a rollout-pruning procedure, a
benchmark) can train its own predictor on the completed rollouts.

`greedy_accuracy` and `weighted_vote` are the evaluation pieces (greedy exact-match accuracy;
a weighted majority vote over sampled answers, equal weights = maj@k).
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from sparsecore.rl.grpo import dynamic_sampling_mask, group_advantages, policy_loss, token_logprobs
from sparsecore.rl.rollout import DetectFn, RolloutBatch, generate_rollouts
from sparsecore.rl.tasks import Problem, ToyTask
from sparsecore.validation import check_bool, check_int, check_number

__all__ = ["GRPOConfig", "StepResult", "greedy_accuracy", "grpo_step", "weighted_vote"]


@dataclass(frozen=True)
class GRPOConfig:
    """Options of `grpo_step` (validated on construction; errors name the field).

    Attributes:
        num_samples: Rollouts per prompt (N).
        max_new_tokens: Most tokens per rollout.
        temperature: Sampling temperature of the rollouts.
        eps_low: Lower clip of the importance ratio.
        eps_high: Upper clip (``> eps_low``: DAPO clip-higher).
        dynamic_sampling: Drop groups whose included rewards are all equal (DAPO).
        updates: Gradient steps per batch of rollouts.
        max_grad_norm: Gradient-norm clip (0: none).
        logprob_batch: Rows per forward pass of the log-prob and update passes.
        adv_eps: Added to the group std.
    """

    num_samples: int = 8
    max_new_tokens: int = 8
    temperature: float = 1.0
    eps_low: float = 0.2
    eps_high: float = 0.28
    dynamic_sampling: bool = False
    updates: int = 1
    max_grad_norm: float = 1.0
    logprob_batch: int = 256
    adv_eps: float = 1e-6

    def __post_init__(self) -> None:
        check_int(self.num_samples, "num_samples", 1)
        check_int(self.max_new_tokens, "max_new_tokens", 1)
        check_number(self.temperature, "temperature", 0.0, open_low=True, finite=True)
        check_number(self.eps_low, "eps_low", 0.0, 1.0, open_high=True)
        check_number(self.eps_high, "eps_high", 0.0, finite=True)
        check_bool(self.dynamic_sampling, "dynamic_sampling")
        check_int(self.updates, "updates", 1)
        check_number(self.max_grad_norm, "max_grad_norm", 0.0, finite=True)
        check_int(self.logprob_batch, "logprob_batch", 1)
        check_number(self.adv_eps, "adv_eps", 0.0, finite=True)


@dataclass
class StepResult:
    """What one `grpo_step` did.

    Attributes:
        batch: All rollouts (pruned ones included, with ``survivors`` False).
        rewards: ``[R]`` rewards (0 for pruned rollouts, which are never scored).
        used: ``[R]`` bool, rollouts that entered the update.
        advantages: ``[R]`` advantages (0 outside ``used``).
        loss: Loss of the last update (0.0 when nothing was used).
        seconds: ``{"generation", "logprob", "update"}`` wall time of each phase.
        tokens_generated: Tokens sampled in the generation phase.
        tokens_trained: Completion tokens in the log-prob/update passes.
    """

    batch: RolloutBatch
    rewards: torch.Tensor
    used: torch.Tensor
    advantages: torch.Tensor
    loss: float
    seconds: dict[str, float] = field(default_factory=dict)
    tokens_generated: int = 0
    tokens_trained: int = 0


def grpo_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    task: ToyTask,
    problems: Sequence[Problem],
    config: GRPOConfig,
    generator: torch.Generator,
    *,
    detect: DetectFn | None = None,
    detect_step: int | None = None,
) -> StepResult:
    """Generate, score, recompute log-probs and update the policy once (see the module docstring).

    Args:
        model: The policy (a Hugging Face causal LM); trained in place.
        optimizer: Its optimizer.
        task: Scores completions.
        problems: The prompts of this step.
        config: `GRPOConfig`.
        generator: Sampling generator.
        detect: Optional rollout-pruning callback (see `generate_rollouts`).
        detect_step: Tokens after which ``detect`` runs.
    """
    vocab = task.vocab
    t0 = time.perf_counter()
    batch = generate_rollouts(
        model, [p.prompt for p in problems], config.num_samples, config.max_new_tokens,
        vocab.eos, vocab.pad, temperature=config.temperature, generator=generator,
        detect_step=detect_step, detect=detect,
    )  # fmt: skip
    rewards = torch.zeros(batch.lengths.shape[0])
    for r in batch.survivors.nonzero().flatten().tolist():
        rewards[r] = task.reward(problems[int(batch.groups[r])], batch.completions[r])
    used = batch.survivors.clone()
    if config.dynamic_sampling:
        used = dynamic_sampling_mask(rewards, batch.groups, used)
    advantages = group_advantages(rewards, batch.groups, used, eps=config.adv_eps)
    t1 = time.perf_counter()
    index = used.nonzero().flatten()
    seconds = {"generation": t1 - t0, "logprob": 0.0, "update": 0.0}
    loss_value = 0.0
    tokens_trained = int(batch.lengths[index].sum())
    if index.numel() and tokens_trained:
        sub = batch.select(index)
        width = int(sub.lengths.max())
        comps = sub.completions[:, :width]
        tmask = (torch.arange(width)[None, :] < sub.lengths[:, None]).float()
        was_training = model.training
        model.eval()
        with torch.no_grad():
            logp_old = token_logprobs(
                model, sub.prompts, sub.prompt_mask, comps, sub.lengths, config.logprob_batch
            )
        t2 = time.perf_counter()
        seconds["logprob"] = t2 - t1
        model.train()
        adv = advantages[index]
        for _ in range(config.updates):
            logp = token_logprobs(
                model, sub.prompts, sub.prompt_mask, comps, sub.lengths, config.logprob_batch
            )
            loss = policy_loss(logp, logp_old, adv, tmask, config.eps_low, config.eps_high)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            loss_value = float(loss.detach())
        model.train(was_training)
        seconds["update"] = time.perf_counter() - t2
    return StepResult(
        batch, rewards, used, advantages, loss_value, seconds, batch.tokens_generated,
        tokens_trained,
    )  # fmt: skip


def greedy_accuracy(
    model: nn.Module, task: ToyTask, problems: Sequence[Problem], max_new_tokens: int
) -> float:
    """Exact-match accuracy of greedy decoding over ``problems``."""
    batch = generate_rollouts(
        model, [p.prompt for p in problems], 1, max_new_tokens, task.vocab.eos, task.vocab.pad,
        temperature=0.0,
    )  # fmt: skip
    hits = [task.reward(p, batch.completions[i]) for i, p in enumerate(problems)]
    return float(sum(hits) / len(hits))


def weighted_vote(
    answers: Sequence[Hashable | None], weights: Sequence[float] | torch.Tensor | None = None
) -> Hashable | None:
    """The answer with the largest total weight (``None`` answers are ignored).

    Equal weights (or ``None``) give the plain majority vote (maj@k). Ties go to the answer
    that appears first.

    Returns:
        The winning answer, or ``None`` when every answer is ``None``.
    """
    if weights is None:
        weights = [1.0] * len(answers)
    weights = [float(w) for w in weights]
    if len(weights) != len(answers):
        raise ValueError(f"weights must have one entry per answer ({len(answers)})")
    if any(w < 0 or w != w for w in weights):
        raise ValueError("weights must be non-negative numbers")
    totals: dict[Hashable, float] = {}
    for answer, w in zip(answers, weights, strict=True):
        if answer is not None:
            totals[answer] = totals.get(answer, 0.0) + w
    if not totals:
        return None
    best = max(totals.values())
    return next(a for a, t in totals.items() if t == best)

"""RLVR after mid-training: a minimal GRPO on the code-like toy's verifiable reward.

Paper: Zhang et al. (Apple), "Learning to Reason as Action Abstractions with Scalable Mid-Training
RL" (RA3), arXiv 2509.25810: RA3 "achieves faster convergence and higher asymptotic performance
in RLVR" (GRPO-style RL on HumanEval+, MBPP+, LiveCodeBench, Codeforces). Here the policy
is a mid-trained tiny LM, the prompts are ``want NN`` and the verifier is
`sparse_ra3.corpus.reward` (1 when the generated program returns the wanted value).

The core's generic RL module (``sparsecore.rl``, issue 36) was not committed when this package
was written, so this module holds the minimal GRPO the reproduction needs (choice, labelled):

* `sample_completions`: ``group`` rollouts per prompt with the KV cache (prompts share one
  length, so no padding), temperature sampling from a seeded generator, a row stops counting at
  its ``<eos>``;
* `grpo_step`: group-normalised advantages ``(r − mean) / (std + 1e-6)`` and the on-policy loss
  ``−mean_rows(A · mean_tokens log π(o_t | ·))`` (one update per batch, so the PPO ratio is 1 and
  clipping never binds; no KL term, as in DAPO / Dr. GRPO practice);
* `rlvr`: the loop, with the mean batch reward per step (the curve whose first crossing of a
  threshold is "steps to threshold"), and `greedy_accuracy` on held-out prompts.

An attached `sparse_ra3.ActionPruning` acts in both sampling and the log-probabilities (its hook
is on the output head), so RL runs inside the pruned action set ``Ẑ``.
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F
from torch import nn

from sparse_ra3.corpus import EOS, prompt_ids, reward
from sparsecore.validation import check_int, check_number

__all__ = ["completion_logprobs", "greedy_accuracy", "grpo_step", "rlvr", "sample_completions"]


def _cache_kwarg(model: nn.Module) -> str:
    """``cache`` in transformers versions that renamed ``past_key_values``."""
    import inspect

    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


@torch.no_grad()
def sample_completions(
    model: nn.Module,
    prompts: list[list[int]],
    group: int,
    max_new_tokens: int,
    generator: torch.Generator | None,
    temperature: float = 1.0,
) -> list[list[int]]:
    """``group`` completions per prompt (rows ``prompt * group + j``), each cut after ``<eos>``.

    ``temperature=0`` decodes greedily.
    """
    check_int(group, "group", 1)
    check_int(max_new_tokens, "max_new_tokens", 1)
    if len({len(p) for p in prompts}) != 1:
        raise ValueError("prompts must share one length")
    ids = torch.tensor([p for p in prompts for _ in range(group)])
    out = [[] for _ in range(ids.shape[0])]
    done = torch.zeros(ids.shape[0], dtype=torch.bool)
    key = _cache_kwarg(model)
    past, cur = None, ids
    for _ in range(max_new_tokens):
        res = model(input_ids=cur, use_cache=True, **({key: past} if past is not None else {}))
        past = getattr(res, "cache", None)
        past = past if past is not None else res.past_key_values
        logits = res.logits[:, -1].float()
        if temperature == 0:
            tok = logits.argmax(-1)
        else:
            probs = F.softmax(logits / temperature, -1)
            tok = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        for r in torch.nonzero(~done).flatten().tolist():
            out[r].append(int(tok[r]))
        done |= tok == EOS
        if bool(done.all()):
            break
        cur = tok[:, None]
    return out


def completion_logprobs(
    model: nn.Module, prompts: list[list[int]], completions: list[list[int]], group: int
) -> torch.Tensor:
    """Mean token log-probability of every completion (with graph)."""
    seqs = [prompts[i // group] + c for i, c in enumerate(completions)]
    width = max(len(s) for s in seqs)
    ids = torch.tensor([s + [EOS] * (width - len(s)) for s in seqs])
    logits = model(input_ids=ids).logits.float()
    logp = F.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    start = len(prompts[0]) - 1
    mask = torch.zeros_like(logp, dtype=torch.bool)
    for r, c in enumerate(completions):
        mask[r, start : start + len(c)] = True
    logp = torch.where(mask, logp, torch.zeros_like(logp))
    return logp.sum(1) / mask.sum(1).clamp(min=1)


def grpo_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    prompts: list[list[int]],
    completions: list[list[int]],
    rewards: torch.Tensor,
    group: int,
) -> float:
    """One on-policy GRPO update; returns the loss (0 and no step when every advantage is 0)."""
    r = rewards.view(-1, group).double()
    spread = r.std(1, keepdim=True, unbiased=False)
    adv = torch.where(spread > 0, (r - r.mean(1, keepdim=True)) / (spread + 1e-6), 0.0).flatten()
    if not bool((adv != 0).any()):
        return 0.0
    optimizer.zero_grad(set_to_none=True)
    loss = -(adv.float() * completion_logprobs(model, prompts, completions, group)).mean()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return float(loss.detach())


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
        batch = [rng.choice(wants) for _ in range(prompts_per_step)]
        prompts = [prompt_ids(w) for w in batch]
        model.eval()
        comps = sample_completions(model, prompts, group, max_new_tokens, g)
        rewards = torch.tensor([reward(batch[i // group], c) for i, c in enumerate(comps)])
        model.train()
        grpo_step(model, optimizer, prompts, comps, rewards, group)
        curve.append(float(rewards.mean()))
    model.eval()
    return curve


def greedy_accuracy(model: nn.Module, wants: list[int], max_new_tokens: int = 48) -> float:
    """Fraction of ``wants`` whose greedy completion returns exactly the wanted value."""
    was = model.training
    model.eval()
    prompts = [prompt_ids(w) for w in wants]
    comps = sample_completions(model, prompts, 1, max_new_tokens, None, temperature=0)
    model.train(was)
    return sum(reward(w, c, shaped=False) for w, c in zip(wants, comps, strict=True)) / len(wants)

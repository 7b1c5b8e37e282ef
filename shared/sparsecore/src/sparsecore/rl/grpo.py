"""GRPO / DAPO pieces: group advantages, dynamic sampling, token log-probs, clipped PG loss.

References: Shao et al., "DeepSeekMath" (GRPO, arXiv 2402.03300); Yu et al., "DAPO: An
Open-Source LLM Reinforcement Learning System at Scale" (arXiv 2503.14476).

* `group_advantages`: ``A_i = (r_i - mean_g r) / (std_g r + eps)`` over the rollouts of the same
  prompt ``g`` that are *included* (``mask``; e.g. the survivors of rollout pruning), population
  std (``unbiased=False``; TRL and verl use the sample std: with eps the sign and the zero sum are
  the same). Excluded rollouts get advantage 0. Over the included rollouts of any group the
  advantages sum to 0.
* `dynamic_sampling_mask`: DAPO's dynamic sampling without the re-sampling: a group whose
  included rewards are all equal (all 0 or all 1) carries no gradient and is dropped.
* `token_logprobs`: log-probabilities of the completion tokens under a model, re-batched over
  whatever rollouts are passed (only survivors pay for this pass).
* `policy_loss`: the token-level clipped surrogate
  ``-min(ρ A, clip(ρ, 1 - eps_low, 1 + eps_high) A)``, ``ρ = exp(logp - logp_old)``, averaged over
  all completion tokens of the batch (DAPO's token-level aggregation; ``eps_high > eps_low`` is
  DAPO's clip-higher; ``eps_high = eps_low`` is GRPO/PPO's symmetric clip). No KL term (DAPO
  drops it; GRPO's KL to a reference model is left out).
"""

from __future__ import annotations

import torch
from torch import nn

from sparsecore.validation import check_int, check_number

__all__ = ["dynamic_sampling_mask", "group_advantages", "policy_loss", "token_logprobs"]


def _group_stats(rewards: torch.Tensor, groups: torch.Tensor, mask: torch.Tensor):
    n = int(groups.max()) + 1 if groups.numel() else 0
    w = mask.float()
    count = torch.zeros(n).index_add_(0, groups, w)
    total = torch.zeros(n).index_add_(0, groups, rewards * w)
    mean = total / count.clamp(min=1)
    sq = torch.zeros(n).index_add_(0, groups, (rewards - mean[groups]) ** 2 * w)
    std = (sq / count.clamp(min=1)).sqrt()
    return mean, std, count


def _check(rewards: torch.Tensor, groups: torch.Tensor, mask: torch.Tensor | None):
    rewards = torch.as_tensor(rewards, dtype=torch.float32).flatten()
    groups = torch.as_tensor(groups, dtype=torch.long).flatten()
    if rewards.shape != groups.shape:
        raise ValueError(f"groups must have the shape of rewards {tuple(rewards.shape)}")
    if groups.numel() and groups.min() < 0:
        raise ValueError("groups must be >= 0")
    if mask is None:
        mask = torch.ones_like(rewards, dtype=torch.bool)
    mask = torch.as_tensor(mask, dtype=torch.bool).flatten()
    if mask.shape != rewards.shape:
        raise ValueError(f"mask must have the shape of rewards {tuple(rewards.shape)}")
    return rewards, groups, mask


def group_advantages(
    rewards: torch.Tensor,
    groups: torch.Tensor,
    mask: torch.Tensor | None = None,
    eps: float = 1e-6,
    scale: bool = True,
) -> torch.Tensor:
    """Group-normalised advantages over the included rollouts of each prompt.

    Args:
        rewards: ``[R]`` scalar rewards.
        groups: ``[R]`` prompt index of each rollout.
        mask: ``[R]`` bool, rollouts included (default: all).
        eps: Added to the std.
        scale: Divide by the std (``False``: Dr. GRPO's mean-centring only).

    Returns:
        ``[R]`` advantages, 0 for excluded rollouts.
    """
    check_number(eps, "eps", 0.0, finite=True)
    rewards, groups, mask = _check(rewards, groups, mask)
    mean, std, _ = _group_stats(rewards, groups, mask)
    adv = rewards - mean[groups]
    if scale:
        adv = adv / (std[groups] + eps)
    return torch.where(mask, adv, torch.zeros_like(adv))


def dynamic_sampling_mask(
    rewards: torch.Tensor, groups: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``mask`` without the groups whose included rewards are all equal (DAPO dynamic sampling).

    Returns:
        ``[R]`` bool.
    """
    rewards, groups, mask = _check(rewards, groups, mask)
    _, std, count = _group_stats(rewards, groups, mask)
    informative = (std > 1e-12) & (count >= 2)
    return mask & informative[groups]


def token_logprobs(
    model: nn.Module,
    prompts: torch.Tensor,
    prompt_mask: torch.Tensor,
    completions: torch.Tensor,
    lengths: torch.Tensor,
    batch_size: int = 64,
) -> torch.Tensor:
    """Log-probabilities ``[R, T]`` of each completion token (0 past the completion's end).

    Gradients flow when called with grad enabled. Sequences are ``left-padded prompt +
    completion``; positions follow the attention mask as in generation.

    Args:
        model: A causal LM.
        prompts: ``[R, P]`` left-padded prompts.
        prompt_mask: ``[R, P]`` their attention mask.
        completions: ``[R, T]`` generated tokens.
        lengths: ``[R]`` completion lengths.
        batch_size: Rows per forward pass.
    """
    check_int(batch_size, "batch_size", 1)
    device = next(model.parameters()).device
    rows, width = completions.shape
    steps = torch.arange(width)
    cmask = (steps[None, :] < lengths[:, None]).long()
    ids = torch.cat([prompts, completions], dim=1)
    attn = torch.cat([prompt_mask, cmask], dim=1)
    out = []
    plen = prompts.shape[1]
    for lo in range(0, rows, batch_size):
        b_ids = ids[lo : lo + batch_size].to(device)
        b_attn = attn[lo : lo + batch_size].to(device)
        pos = (b_attn.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=b_ids, attention_mask=b_attn, position_ids=pos).logits
        logits = logits[:, plen - 1 : -1].float()
        logp = torch.log_softmax(logits, dim=-1)
        target = b_ids[:, plen:]
        picked = logp.gather(-1, target[..., None]).squeeze(-1)
        out.append(picked * cmask[lo : lo + batch_size].to(device))
    return torch.cat(out, dim=0)


def policy_loss(
    logp: torch.Tensor,
    logp_old: torch.Tensor,
    advantages: torch.Tensor,
    token_mask: torch.Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
) -> torch.Tensor:
    """Token-level clipped policy-gradient loss (DAPO clip-higher when ``eps_high > eps_low``).

    Args:
        logp: ``[R, T]`` log-probs under the current policy (with grad).
        logp_old: ``[R, T]`` log-probs of the policy that generated the rollouts.
        advantages: ``[R]`` per-rollout advantages.
        token_mask: ``[R, T]`` 1 for tokens that count.
        eps_low: Lower clip ``1 - eps_low``.
        eps_high: Upper clip ``1 + eps_high``.

    Returns:
        Scalar loss (0 with no tokens).
    """
    check_number(eps_low, "eps_low", 0.0, 1.0, open_high=True)
    check_number(eps_high, "eps_high", 0.0, finite=True)
    ratio = torch.exp(logp - logp_old.detach())
    adv = advantages.to(logp.device)[:, None]
    clipped = ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    surrogate = torch.minimum(ratio * adv, clipped * adv)
    mask = token_mask.to(logp.device).float()
    return -(surrogate * mask).sum() / mask.sum().clamp(min=1.0)

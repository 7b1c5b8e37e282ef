"""Test-time scaling with the quality head: quality-weighted voting against maj@k.

Paper: Xu et al., "Prune as You Generate: Online Rollout Pruning for Faster and Better RLVR",
arXiv 2603.24840: at test time ``k`` answers are sampled per problem and the answer with the
largest total quality-head score wins (weights = the head's calibrated ``p̂`` at the detection
length), against the plain majority vote (maj@k). `vote_accuracy` measures both on the same
samples (and pass@1, the mean reward of a single sample), so the comparison is paired.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from sparsecore.rl import DetectInfo, Problem, ToyTask, generate_rollouts, weighted_vote
from sparsecore.validation import check_int

__all__ = ["vote_accuracy"]


def vote_accuracy(
    model: nn.Module,
    task: ToyTask,
    problems: Sequence[Problem],
    k: int,
    scorer: Callable[[DetectInfo], torch.Tensor] | None,
    detect_step: int,
    max_new_tokens: int,
    generator: torch.Generator,
    temperature: float = 1.0,
) -> dict[str, float]:
    """maj@k, quality-weighted vote@k and pass@1 over ``problems`` (same samples for all).

    Args:
        model: The policy.
        task: Scores and decodes answers.
        problems: Test problems.
        k: Samples per problem.
        scorer: ``DetectInfo -> [R]`` weights from the partial rollouts at ``detect_step``
            (e.g. `ARRoL.score_info`); ``None`` reports maj@k twice.
        detect_step: Tokens after which the hidden state is read (nothing is pruned).
        max_new_tokens: Most tokens per sample.
        generator: Sampling generator.
        temperature: Sampling temperature.

    Returns:
        ``{"maj": ..., "weighted": ..., "pass1": ...}`` accuracies in ``[0, 1]``.
    """
    check_int(k, "k", 1)

    seen: list[DetectInfo] = []

    def keep_all(info: DetectInfo) -> torch.Tensor:
        seen.append(info)
        return torch.arange(info.hidden.shape[0])

    batch = generate_rollouts(
        model, [p.prompt for p in problems], k, max_new_tokens, task.vocab.eos, task.vocab.pad,
        temperature=temperature, generator=generator, detect_step=detect_step, detect=keep_all,
    )  # fmt: skip
    weights = scorer(seen[0]) if scorer is not None else None
    maj = weighted_hits = pass1 = 0.0
    for i, problem in enumerate(problems):
        rows = range(i * k, (i + 1) * k)
        answers = [task.answer_text(batch.completions[r]) for r in rows]
        pass1 += sum(a == problem.answer for a in answers) / k
        maj += float(weighted_vote(answers) == problem.answer)
        w = None if weights is None else [float(weights[r]) for r in rows]
        weighted_hits += float(weighted_vote(answers, w) == problem.answer)
    n = len(problems)
    return {"maj": maj / n, "weighted": weighted_hits / n, "pass1": pass1 / n}

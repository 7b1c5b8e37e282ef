"""RL convergence within the pruned set against the horizon: primitive actions vs options.

Paper: Zhang et al. (Apple), "Learning to Reason as Action Abstractions with Scalable Mid-Training
RL" (RA3), arXiv 2509.25810. Theorem 3.6 (as quoted by a third-party review; [recon] beyond
that): value iteration over temporally extended actions reaches ε-optimality after
``N ≥ 1/(1 − γ̄) · log(R_max / (ε (1 − γ̄)))`` iterations, ``γ̄ = sup_{s,z} E[γ^τ | s, z]``, where
``τ`` is the duration of abstraction ``z``: longer abstractions shrink ``γ̄`` and the iteration
count. `vi_iterations_bound` evaluates it.

The runnable family, a *combination lock* (choice, labelled): a task is a secret code of ``H``
primitive actions out of ``a``; playing the code's next action advances, any other action ends
the episode with reward 0; finishing pays 1. Codes are built from ``H/k`` *motifs* (length-``k``
chunks drawn from a small Zipf-weighted motif set), so expert codes compress into few options.
Mid-training = frequency pruning (`sparse_ra3.theory.prune_by_frequency`) of either the primitive
actions or the length-``k`` chunks seen in expert codes. Post-training RL = tabular Q-learning
with optimistic initial values (α = 1, deterministic transitions, greedy with random
tie-breaking) on a fresh task; the cost is the number of episodes until the lock first opens
(reward 1, the reward threshold). A chunk the pruning dropped makes the task unsolvable inside
``Ẑ``: the pruning error.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch

from sparse_ra3.theory import prune_by_frequency
from sparsecore.validation import check_int, check_number

__all__ = ["LockFamily", "action_set", "episodes_to_solve", "vi_iterations_bound"]


def vi_iterations_bound(gamma: float, duration: int, epsilon: float, r_max: float = 1.0) -> int:
    """Theorem 3.6's ``⌈1/(1−γ̄) log(R_max/(ε(1−γ̄)))⌉`` with ``γ̄ = γ^duration``."""
    check_number(gamma, "gamma", 0.0, 1.0, open_low=True, open_high=True)
    check_int(duration, "duration", 1)
    check_number(epsilon, "epsilon", 0.0, open_low=True)
    g = gamma**duration
    return math.ceil(1.0 / (1.0 - g) * math.log(r_max / (epsilon * (1.0 - g))))


@dataclass(frozen=True)
class LockFamily:
    """Combination locks of horizon ``H = k · chunks`` built from ``motifs`` (``(m, k)``)."""

    n_primitive: int
    motifs: torch.Tensor
    chunks: int
    motif_probs: torch.Tensor

    @classmethod
    def make(
        cls, n_primitive: int = 4, k: int = 3, chunks: int = 4, n_motifs: int = 4,
        zipf: float = 1.0, seed: int = 0,
    ) -> LockFamily:  # fmt: skip
        """Random distinct motifs of length ``k`` over ``n_primitive`` actions."""
        check_int(n_primitive, "n_primitive", 2)
        check_int(k, "k", 1)
        check_int(chunks, "chunks", 1)
        check_int(n_motifs, "n_motifs", 1)
        if n_motifs > n_primitive**k:
            raise ValueError(f"n_motifs must be <= n_primitive**k = {n_primitive**k}")
        g = torch.Generator().manual_seed(seed)
        codes = torch.randperm(n_primitive**k, generator=g)[:n_motifs]
        digits = torch.stack([(codes // n_primitive**i) % n_primitive for i in range(k)], 1)
        probs = torch.arange(1, n_motifs + 1, dtype=torch.float64).pow(-zipf)
        return cls(n_primitive, digits, chunks, probs / probs.sum())

    @property
    def k(self) -> int:
        """Motif (option) length."""
        return self.motifs.shape[1]

    @property
    def horizon(self) -> int:
        """Primitive steps per episode."""
        return self.k * self.chunks

    def sample_codes(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``(n, H)`` codes, each ``chunks`` motifs drawn i.i.d. from ``motif_probs``."""
        idx = torch.multinomial(self.motif_probs, n * self.chunks, True, generator=generator)
        return self.motifs[idx].reshape(n, self.horizon)


def action_set(
    family: LockFamily, demos: torch.Tensor | None, length: int, sigma: float
) -> list[tuple[int, ...]]:
    """The (pruned) action set of ``length``-step actions.

    ``demos=None``: the full set (all ``a^length`` sequences). Otherwise the sequences whose
    frequency among the demos' aligned chunks is at least ``σ/2`` (`prune_by_frequency`).
    """
    check_int(length, "length", 1)
    if family.horizon % length:
        raise ValueError(f"length must divide the horizon {family.horizon}, got {length}")
    full = list(itertools.product(range(family.n_primitive), repeat=length))
    if demos is None:
        return full
    index = {s: i for i, s in enumerate(full)}
    chunks = demos.reshape(-1, length).tolist()
    counts = torch.bincount(torch.tensor([index[tuple(c)] for c in chunks]), minlength=len(full))
    keep = prune_by_frequency(counts, sigma)
    return [s for s, kept in zip(full, keep.tolist(), strict=True) if kept]


def episodes_to_solve(
    code: torch.Tensor,
    actions: list[tuple[int, ...]],
    generator: torch.Generator,
    max_episodes: int = 2000,
) -> int:
    """Optimistic tabular Q-learning on one lock; episodes until it first earns the reward 1.

    States are positions ``0, L, 2L, ...`` (``L`` the action length); ``Q`` starts at 1 (the
    maximal return), a failure sets ``Q(s, z) = 0``, a correct step backs up
    ``Q(s, z) = max Q(s', ·)`` (α = 1, deterministic), the greedy action breaks ties at random.
    Each failed episode eliminates one wrong action, so the count is at most
    ``states · (|Ẑ| − 1) + 1``: linear in the size of the action set and in the number of
    decisions ``H / L`` (the effective horizon).
    Returns ``max_episodes + 1`` when the lock is not solved (e.g. its code needs a pruned action).
    """
    check_int(max_episodes, "max_episodes", 1)
    if not actions:
        return max_episodes + 1
    length = len(actions[0])
    horizon = code.numel()
    states = horizon // length
    target = [tuple(code[i * length : (i + 1) * length].tolist()) for i in range(states)]
    index = {a: j for j, a in enumerate(actions)}
    correct = [index.get(t, -1) for t in target]  # -1: the code needs a pruned action
    q = torch.ones(states, len(actions), dtype=torch.float64)

    def greedy(s: int) -> int:
        ties = torch.nonzero(q[s] == q[s].max()).flatten()
        return int(ties[torch.randint(len(ties), (1,), generator=generator)])

    for episode in range(1, max_episodes + 1):
        s, path = 0, []
        while s < states:
            j = greedy(s)
            if j != correct[s]:
                q[s, j] = 0.0  # failure: the episode ends with reward 0
                break
            path.append((s, j))
            s += 1
        if s == states:  # the lock opened: reward 1
            return episode
        for t, j in reversed(path):  # α = 1 backup along the visited path
            q[t, j] = float(q[t + 1].max())
    return max_episodes + 1

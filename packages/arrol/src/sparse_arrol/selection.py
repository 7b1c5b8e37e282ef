"""ARRoL's selection rule: keep the rollouts whose expected positive fraction is closest to p.

Paper: Xu et al., "Prune as You Generate: Online Rollout Pruning for Faster and Better RLVR",
arXiv 2603.24840 (ACL 2026). At the detection length each of a prompt's ``N`` partial rollouts has
a calibrated success estimate ``q_i``; ARRoL keeps ``k = round(K·N)`` of them so that the survivors'
expected positive fraction ``mean_{i∈S} q_i`` is closest to the target ``p`` (0.5 by default),
i.e. the group the update sees is as balanced as possible (GRPO's advantage is zero for an
all-correct or all-wrong group).

Choices (labelled):

* ``round`` is half-up: ``k = floor(K·N + 1/2)``, at least 1 [recon: the paper writes K·N with
  N = 8, K = 0.5, an integer].
* The objective ``|mean_S q − p|`` is the paper's; how the subset is found is not described
  [recon]. `balanced_subset` searches **exhaustively** when ``C(N, k) <= exhaustive_limit``
  (``C(8, 4) = 70``, ``C(16, 8) = 12870``: the paper's group sizes), vectorised over all subsets;
  otherwise a greedy pass from both ends of the sorted ``q`` (each step takes the end that keeps
  the running sum closest to ``p`` times the count so far), then local search with 1-for-1 and
  2-for-2 swaps.
* Ties in ``|mean − p|`` (within ``1e-9``; frequent with bucketed, i.e. discrete, calibrated
  scores) go to the subset with the smallest ``Σ q_i (1 − q_i)`` [recon]: for independent
  rewards ``r_i ~ Bernoulli(q_i)`` the positive fraction ``F`` of the survivors has
  ``E[F(1 − F)] = μ(1 − μ) − Σ q_i(1 − q_i)/k²`` (μ = mean q), so at equal ``μ`` this subset has
  the larger expected reward variance, the balance diagnostic the paper reports. Remaining ties
  are broken by a random order of the candidates drawn from the caller's generator.
"""

from __future__ import annotations

import itertools
import math

import torch

from sparsecore.validation import check_int, check_number

__all__ = ["balanced_subset", "keep_count", "objective", "prune_groups"]


def keep_count(keep_ratio: float, n: int) -> int:
    """``round(keep_ratio · n)`` (half-up), at least 1 and at most ``n``."""
    check_number(keep_ratio, "keep_ratio", 0.0, 1.0, open_low=True)
    check_int(n, "n", 1)
    return min(n, max(1, math.floor(keep_ratio * n + 0.5)))


def objective(scores: torch.Tensor, subset: torch.Tensor, target: float) -> float:
    """``|mean(scores[subset]) − target|``."""
    return abs(float(scores[subset].double().mean()) - target)


def _exhaustive(q: torch.Tensor, k: int, target: float, order: torch.Tensor) -> torch.Tensor:
    combos = torch.tensor(list(itertools.combinations(range(q.numel()), k)), dtype=torch.long)
    qs = q.double()[order][combos]  # candidates in the random order
    gap = (qs.mean(1) - target).abs()
    spread = (qs * (1 - qs)).sum(1)
    best = gap.min()
    tied = gap <= best + 1e-9
    spread = torch.where(tied, spread, torch.full_like(spread, math.inf))
    return order[combos[int(spread.argmin())]]


def _improve(qd: torch.Tensor, inside: torch.Tensor, goal: float, size: int) -> bool:
    """Apply the best ``size``-for-``size`` swap if it brings ``sum`` closer to ``goal``."""
    ins, outs = inside.nonzero().flatten(), (~inside).nonzero().flatten()
    if ins.numel() < size or outs.numel() < size:
        return False
    a = torch.combinations(ins, size) if size > 1 else ins[:, None]
    b = torch.combinations(outs, size) if size > 1 else outs[:, None]
    total = float(qd[inside].sum())
    err = (total - qd[a].sum(1)[:, None] + qd[b].sum(1)[None, :] - goal).abs()
    j = int(err.argmin())
    if float(err.flatten()[j]) >= abs(total - goal) - 1e-12:
        return False
    i_a, i_b = divmod(j, b.shape[0])
    inside[a[i_a]] = False
    inside[b[i_b]] = True
    return True


def _greedy(q: torch.Tensor, k: int, target: float) -> torch.Tensor:
    qd = q.double()
    order = torch.argsort(qd)
    lo, hi = 0, qd.numel() - 1
    chosen: list[int] = []
    total = 0.0
    while len(chosen) < k:
        a, b = float(qd[order[lo]]), float(qd[order[hi]])
        want = target * (len(chosen) + 1)
        if abs(total + a - want) <= abs(total + b - want):
            chosen.append(int(order[lo]))
            total, lo = total + a, lo + 1
        else:
            chosen.append(int(order[hi]))
            total, hi = total + b, hi - 1
    inside = torch.zeros(qd.numel(), dtype=torch.bool)
    inside[chosen] = True
    goal = target * k
    while _improve(qd, inside, goal, 1) or _improve(qd, inside, goal, 2):
        pass
    return inside.nonzero().flatten()


def balanced_subset(
    scores: torch.Tensor,
    k: int,
    target: float = 0.5,
    generator: torch.Generator | None = None,
    exhaustive_limit: int = 20000,
) -> torch.Tensor:
    """Indices of ``k`` of ``scores`` whose mean is closest to ``target`` (module docstring).

    Args:
        scores: ``[n]`` calibrated success estimates in ``[0, 1]``.
        k: Survivors (``1 <= k <= n``).
        target: The target positive fraction ``p``.
        generator: Breaks the remaining ties (random candidate order).
        exhaustive_limit: Largest ``C(n, k)`` searched exhaustively.

    Returns:
        ``[k]`` sorted indices.
    """
    scores = torch.as_tensor(scores).flatten()
    n = scores.numel()
    check_int(k, "k", 1)
    if k > n:
        raise ValueError(f"k must be <= the number of scores ({n}), got {k}")
    check_number(target, "target", 0.0, 1.0)
    check_int(exhaustive_limit, "exhaustive_limit", 0)
    if k == n:
        return torch.arange(n)
    if math.comb(n, k) <= exhaustive_limit:
        order = torch.randperm(n, generator=generator)
        chosen = _exhaustive(scores, k, target, order)
    else:
        chosen = _greedy(scores, k, target)
    return chosen.sort().values


def prune_groups(
    scores: torch.Tensor,
    groups: torch.Tensor,
    keep_ratio: float,
    target: float = 0.5,
    generator: torch.Generator | None = None,
    exhaustive_limit: int = 20000,
) -> torch.Tensor:
    """`balanced_subset` inside every prompt group: global indices of the survivors.

    Each group of ``n_g`` rollouts keeps ``keep_count(keep_ratio, n_g)`` of them.
    """
    scores = torch.as_tensor(scores).flatten()
    groups = torch.as_tensor(groups).flatten()
    keep: list[torch.Tensor] = []
    for g in torch.unique(groups).tolist():
        members = (groups == g).nonzero().flatten()
        k = keep_count(keep_ratio, members.numel())
        local = balanced_subset(scores[members], k, target, generator, exhaustive_limit)
        keep.append(members[local])
    return torch.cat(keep).sort().values if keep else torch.zeros(0, dtype=torch.long)

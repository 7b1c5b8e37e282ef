"""The theory's pruning step, runnable: a bandit family, expert demonstrations, frequency pruning.

Paper: Zhang et al. (Apple), "Learning to Reason as Action Abstractions with Scalable Mid-Training
RL" (RA3), arXiv 2509.25810. No official code.

What the paper states (checked against the arXiv abstract and a third-party review that quotes
Theorem 3.5; the full proof was not read, so the definitions below are [recon]):

* the post-training regret splits into the *pruning error* ``Δ(M, Ẑ) = V*_M − V*_{M|Ẑ}`` of
  restricting the action set ``Z`` to the subset ``Ẑ`` kept by mid-training, plus the RL error
  within ``Ẑ``;
* Theorem 3.5: with ``|D_E| = Θ(|Z| log(|Z|/δ) / σ)`` expert samples, with probability at least
  ``1 − δ`` all ``(ε, σ)``-suboptimal actions are pruned and ``E_{M∼p}[Δ(M, Ẑ)] ≤ ε``.

Choices, labelled [recon]:

* A *task family* ``p(M)`` is a finite set of bandit tasks (one-step MDPs) with rewards
  ``r_M(z) ∈ [0, 1]``; the expert plays ``argmax_z r_M(z)``, so the expert's action distribution
  is ``π_E(z) = P_{M∼p}(z = argmax r_M)``.
* An action is ``(ε, σ)``-suboptimal when the expert plays it with probability below ``σ``
  (``π_E(z) < σ``); ``Z_σ = {z : π_E(z) ≥ σ}`` is the set the theorem keeps and
  ``ε(σ) = E_M[Δ(M, Z_σ)]`` the pruning error it allows (so ``Ẑ ⊇ Z_σ`` implies
  ``E[Δ(M, Ẑ)] ≤ ε(σ)``).
* Pruning rule: keep ``z`` when its empirical frequency in ``D_E`` is at least ``σ / 2``
  (`prune_by_frequency`). Chernoff bounds then keep every action of ``Z_σ`` and drop every action
  with ``π_E < σ/4`` with probability ``≥ 1 − δ`` once ``|D_E| ≳ log(|Z|/δ)/σ``;
  `theorem_sample_size` uses the paper's ``|Z| log(|Z|/δ)/σ`` with constant 1 (the extra ``|Z|``
  makes it conservative, which the tests measure rather than assume).

`sparse_ra3.horizon` holds the second half of the theory (RL convergence against the horizon).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from sparsecore.validation import check_int, check_number

__all__ = [
    "BanditFamily",
    "make_bandit_family",
    "prune_by_frequency",
    "pruning_trials",
    "theorem_sample_size",
]


def theorem_sample_size(n_actions: int, sigma: float, delta: float, constant: float = 1.0) -> int:
    """``⌈c · |Z| log(|Z|/δ) / σ⌉``: the expert sample size of Theorem 3.5 (constant ``c``).

    Raises:
        TypeError / ValueError: naming the parameter (``n_actions`` ≥ 1, ``sigma`` and ``delta``
            in (0, 1], ``constant`` > 0).
    """
    check_int(n_actions, "n_actions", 1)
    check_number(sigma, "sigma", 0.0, 1.0, open_low=True)
    check_number(delta, "delta", 0.0, 1.0, open_low=True)
    check_number(constant, "constant", 0.0, open_low=True)
    return max(1, math.ceil(constant * n_actions * math.log(n_actions / delta) / sigma))


def prune_by_frequency(counts: torch.Tensor, sigma: float) -> torch.Tensor:
    """Keep-mask of the actions whose empirical frequency is at least ``σ / 2``.

    Args:
        counts: ``(|Z|,)`` expert action counts.
        sigma: The theorem's σ in (0, 1].
    """
    check_number(sigma, "sigma", 0.0, 1.0, open_low=True)
    if counts.dim() != 1:
        raise ValueError(f"counts must be 1-D, got shape {tuple(counts.shape)}")
    total = counts.sum()
    if total <= 0:
        return torch.zeros_like(counts, dtype=torch.bool)
    return counts.double() / total.double() >= sigma / 2


@dataclass(frozen=True)
class BanditFamily:
    """A finite family of bandit tasks: rewards ``(tasks, actions)`` and task probabilities."""

    rewards: torch.Tensor
    probs: torch.Tensor

    @property
    def n_actions(self) -> int:
        """``|Z|``."""
        return self.rewards.shape[1]

    def expert_actions(self) -> torch.Tensor:
        """The expert's (optimal) action of every task."""
        return self.rewards.argmax(1)

    def expert_distribution(self) -> torch.Tensor:
        """``π_E(z)``: probability that the expert plays ``z`` under ``p(M)``."""
        out = torch.zeros(self.n_actions, dtype=torch.float64)
        return out.index_add_(0, self.expert_actions(), self.probs.double())

    def sample_demonstrations(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` expert actions, each on a task drawn from ``p(M)``."""
        tasks = torch.multinomial(self.probs.double(), n, replacement=True, generator=generator)
        return self.expert_actions()[tasks]

    def pruning_error(self, keep: torch.Tensor) -> float:
        """``E_{M∼p}[Δ(M, Ẑ)] = E[max_Z r_M − max_Ẑ r_M]`` (an empty ``Ẑ`` scores 0)."""
        best = self.rewards.max(1).values.double()
        if not bool(keep.any()):
            kept = torch.zeros_like(best)
        else:
            kept = self.rewards[:, keep].max(1).values.double()
        return float((self.probs.double() * (best - kept)).sum())

    def kept_by_theorem(self, sigma: float) -> torch.Tensor:
        """``Z_σ = {z : π_E(z) ≥ σ}``."""
        return self.expert_distribution() >= sigma

    def epsilon(self, sigma: float) -> float:
        """``ε(σ) = E[Δ(M, Z_σ)]``: the pruning error the theorem allows at ``σ``."""
        return self.pruning_error(self.kept_by_theorem(sigma))


def make_bandit_family(
    n_actions: int, n_tasks: int = 400, zipf: float = 1.2, seed: int = 0
) -> BanditFamily:
    """A family whose optimal actions follow a Zipf law (a few actions optimal almost always).

    Every task draws its rewards uniformly in ``[0, 0.8]`` and gives reward 1 to one optimal
    action drawn with probability ``∝ rank^-zipf`` (ranks shuffled); tasks are equally likely.
    """
    check_int(n_actions, "n_actions", 2)
    check_int(n_tasks, "n_tasks", 1)
    check_number(zipf, "zipf", 0.0)
    g = torch.Generator().manual_seed(seed)
    weights = torch.arange(1, n_actions + 1, dtype=torch.float64).pow(-zipf)
    weights = weights[torch.randperm(n_actions, generator=g)]
    best = torch.multinomial(weights, n_tasks, replacement=True, generator=g)
    rewards = torch.rand(n_tasks, n_actions, generator=g, dtype=torch.float64) * 0.8
    rewards[torch.arange(n_tasks), best] = 1.0
    return BanditFamily(rewards, torch.full((n_tasks,), 1.0 / n_tasks, dtype=torch.float64))


def pruning_trials(
    family: BanditFamily, n_samples: int, sigma: float, trials: int, seed: int = 0
) -> dict[str, float]:
    """Prune from ``n_samples`` demonstrations, ``trials`` times; the measured guarantees.

    Returns:
        ``mean_delta`` (mean pruning error), ``epsilon`` (``ε(σ)``), ``covered`` (fraction of
        trials with ``Z_σ ⊆ Ẑ``), ``pruned`` (fraction with every action of ``π_E < σ/4``
        dropped), ``within_eps`` (fraction with ``Δ ≤ ε``), ``kept`` (mean ``|Ẑ|``).
    """
    check_int(n_samples, "n_samples", 1)
    check_int(trials, "trials", 1)
    g = torch.Generator().manual_seed(seed)
    z_sigma = family.kept_by_theorem(sigma)
    rare = family.expert_distribution() < sigma / 4
    eps = family.epsilon(sigma)
    deltas, covered, pruned, within, kept = [], 0, 0, 0, 0
    for _ in range(trials):
        demos = family.sample_demonstrations(n_samples, g)
        counts = torch.bincount(demos, minlength=family.n_actions)
        keep = prune_by_frequency(counts, sigma)
        d = family.pruning_error(keep)
        deltas.append(d)
        covered += bool((keep | ~z_sigma).all())
        pruned += bool((~keep | ~rare).all())
        within += d <= eps + 1e-12
        kept += int(keep.sum())
    return {
        "mean_delta": sum(deltas) / trials,
        "epsilon": eps,
        "covered": covered / trials,
        "pruned": pruned / trials,
        "within_eps": within / trials,
        "kept": kept / trials,
    }

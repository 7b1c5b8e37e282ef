"""LD-Pruner on a `TinyLDM` end to end, and the baselines it is compared with.

`ld_prune` scores every candidate modification (`sparse_ldpruner.score`) on ``n_samples``
fixed initial noises (drawn from a generator seeded with ``seed``, a different integer than the
weight seed by construction of the reproduction), sorts ascending and applies the lowest until
the UNet's MACs are at most ``mac_ratio`` of the original. `random_prune` takes the same
candidates in a random order to the same budget; `magnitude_prune` halves nothing and removes
nothing: it keeps the same fraction of every operator's channels / heads by weight L2 norm (the
classic uniform magnitude channel pruning), the fraction found by bisection to meet the budget.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from sparse_ldpruner.cost import count_parameters, unet_macs
from sparse_ldpruner.operators import ACTIONS, Candidate, apply_candidates, enumerate_operators
from sparse_ldpruner.score import score_candidates, select_to_budget
from sparsecore.validation import check_int, check_number

__all__ = ["PruneResult", "candidates_of", "ld_prune", "magnitude_prune", "random_prune"]


@dataclass
class PruneResult:
    """A pruned copy of the model and how it was chosen."""

    ldm: torch.nn.Module
    chosen: list[str]
    macs: int
    dense_macs: int
    params: int
    dense_params: int
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def mac_ratio(self) -> float:
        """Pruned MACs / original MACs."""
        return self.macs / self.dense_macs


def candidates_of(unet: torch.nn.Module, actions: tuple[str, ...] = ACTIONS) -> list[Candidate]:
    """Every (operator, action) pair of ``unet``, operators in module order."""
    return [Candidate(op, a) for op in enumerate_operators(unet) for a in actions]


def _check(mac_ratio: float, keep_ratio: float) -> None:
    check_number(mac_ratio, "mac_ratio", 0.0, 1.0, open_low=True)
    check_number(keep_ratio, "keep_ratio", 0.0, 1.0, open_low=True, open_high=True)


def _result(ldm, pruned, chosen, scores=None) -> PruneResult:
    return PruneResult(
        pruned, chosen, unet_macs(pruned), unet_macs(ldm),
        count_parameters(pruned.unet), count_parameters(ldm.unet), scores or {},
    )  # fmt: skip


def ld_prune(
    ldm: torch.nn.Module,
    mac_ratio: float,
    n_samples: int = 64,
    steps: int = 10,
    keep_ratio: float = 0.5,
    actions: tuple[str, ...] = ACTIONS,
    seed: int = 0,
    score_fn: Callable[..., dict[str, float]] | None = None,
    progress: bool = False,
) -> PruneResult:
    """LD-Pruner: score operators by the latent statistics, modify the lowest to a MAC budget.

    Args:
        ldm: A `sparse_ldpruner.TinyLDM` (not modified; a pruned copy is returned).
        mac_ratio: Target UNet MACs as a fraction of the original, in ``(0, 1]``.
        n_samples: Fixed samples (noise seeds, classes cycling ``0..9``) of the score, ``>= 2``.
        steps: DDIM steps of every sampling run.
        keep_ratio: Fraction kept by ``"halve"``.
        actions: Modifications considered (subset of ``("remove", "halve")``).
        seed: Seeds the fixed initial noises.
        score_fn: Replaces `sparse_ldpruner.score.latent_score` (ablations); ``None``: the paper's.
        progress: Show a progress bar while scoring.

    Returns:
        The `PruneResult` (``scores`` holds every candidate's score).

    Raises:
        ValueError: A bad option (before anything runs).
    """
    _check(mac_ratio, keep_ratio)
    check_int(n_samples, "n_samples", 2)
    check_int(steps, "steps", 1)
    check_int(seed, "seed", 0)
    if not actions or any(a not in ACTIONS for a in actions):
        raise ValueError(f"actions must be a non-empty subset of {ACTIONS}, got {actions!r}")
    labels = torch.arange(n_samples) % int(ldm.class_embedding.num_embeddings)
    noise = ldm.initial_noise(n_samples, seed)
    cands = candidates_of(ldm.unet, tuple(actions))
    if score_fn is None:
        scores = score_candidates(ldm, cands, labels, noise, steps, keep_ratio, progress)
    else:
        scores = score_fn(ldm, cands, labels, noise, steps, keep_ratio)
    order = sorted(cands, key=lambda c: (scores[c.label], c.label))
    target = mac_ratio * unet_macs(ldm)
    sel = select_to_budget(ldm, order, unet_macs, target, keep_ratio)
    pruned = copy.deepcopy(ldm)
    apply_candidates(pruned.unet, list(sel.candidates), keep_ratio)
    return _result(ldm, pruned, [c.label for c in sel.candidates], scores)


def random_prune(
    ldm: torch.nn.Module,
    mac_ratio: float,
    keep_ratio: float = 0.5,
    actions: tuple[str, ...] = ACTIONS,
    seed: int = 0,
) -> PruneResult:
    """The same candidates as `ld_prune`, taken in a random order to the same MAC budget."""
    _check(mac_ratio, keep_ratio)
    cands = candidates_of(ldm.unet, tuple(actions))
    perm = torch.randperm(len(cands), generator=torch.Generator().manual_seed(seed)).tolist()
    target = mac_ratio * unet_macs(ldm)
    sel = select_to_budget(ldm, [cands[i] for i in perm], unet_macs, target, keep_ratio)
    pruned = copy.deepcopy(ldm)
    apply_candidates(pruned.unet, list(sel.candidates), keep_ratio)
    return _result(ldm, pruned, [c.label for c in sel.candidates])


def magnitude_prune(ldm: torch.nn.Module, mac_ratio: float, iters: int = 12) -> PruneResult:
    """Uniform magnitude channel pruning of every operator to the MAC budget (bisection).

    Every ResNet block, attention and FFN keeps the same fraction ``r`` of its channels / heads
    (largest L2 norm first, as ``"halve"`` with ``keep_ratio = r``); ``r`` is the largest value
    found by ``iters`` bisection steps whose MACs are within the budget.
    """
    _check(mac_ratio, 0.5)
    halves = candidates_of(ldm.unet, ("halve",))
    target = mac_ratio * unet_macs(ldm)

    def pruned_at(r: float) -> torch.nn.Module:
        model = copy.deepcopy(ldm)
        apply_candidates(model.unet, halves, r)
        return model

    lo, hi = 1e-3, 0.999
    best = pruned_at(lo)
    for _ in range(iters):
        mid = (lo + hi) / 2
        model = pruned_at(mid)
        if unet_macs(model) <= target:
            lo, best = mid, model
        else:
            hi = mid
    return _result(ldm, best, [f"uniform keep_ratio {lo:.3f}"])

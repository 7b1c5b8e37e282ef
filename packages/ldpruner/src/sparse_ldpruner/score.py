"""LD-Pruner's task-agnostic latent score and its selection of operators to a budget.

Castells, Song, Kim & Choi, "LD-Pruner: Efficient Pruning of Latent Diffusion Models using
Task-Agnostic Insights", CVPRW 2024, arXiv 2404.11936. No official code; the score is the one of
bytedance/Hybrid-SD ``compression/prune_sd/prune_utils.py::calculate_score``:

    score_j = ‖mean(L₀) − mean(L_j)‖₂ + ‖std(L₀) − std(L_j)‖₂

where ``L₀`` / ``L_j`` are the final latents (before the decoder) of the original model and of
the model with only operator ``j`` modified, from the same n initial noises and conditions; means
and standard deviations are over the n samples, elementwise (population std, ``ddof = 0``, as
numpy's ``np.std`` in Hybrid-SD). Operators are sorted by ascending score and the lowest are
modified until the budget is met.

Choices (labelled): the budget is a fraction of the UNet's MACs (`sparse_ldpruner.cost`), which
the paper reports as inference time; a lower-score candidate is taken first, skipping any whose
operator is already modified (so "remove" and "halve" of one operator compete on score), and the
selection stops at the first point where the budget holds.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from sparse_ldpruner.operators import Candidate, apply_candidates

__all__ = ["Selection", "latent_score", "score_candidates", "select_to_budget"]


def latent_score(reference: torch.Tensor, modified: torch.Tensor) -> float:
    """‖Δmean‖₂ + ‖Δstd‖₂ of two batches of latents over their first (sample) dimension.

    Args:
        reference: Latents of the original model, shape ``(n, ...)``, ``n >= 2``.
        modified: Latents of the modified model from the same inputs, same shape.

    Returns:
        The score (≥ 0; exactly 0 when the two are equal).

    Raises:
        ValueError: Shapes differ or fewer than two samples.
    """
    if reference.shape != modified.shape:
        raise ValueError(f"modified: shape {tuple(modified.shape)} != {tuple(reference.shape)}")
    if reference.ndim < 1 or reference.shape[0] < 2:
        raise ValueError("reference: needs at least two samples along dimension 0")
    a, b = reference.double().flatten(1), modified.double().flatten(1)
    d_mean = (a.mean(0) - b.mean(0)).norm()
    d_std = (a.std(0, unbiased=False) - b.std(0, unbiased=False)).norm()
    return float(d_mean + d_std)


def score_candidates(
    ldm: torch.nn.Module,
    candidates: Sequence[Candidate],
    labels: torch.Tensor,
    noise: torch.Tensor,
    steps: int,
    keep_ratio: float = 0.5,
    progress: bool = False,
) -> dict[str, float]:
    """The latent score of every candidate, each applied alone to a copy of ``ldm``.

    Args:
        ldm: A `sparse_ldpruner.TinyLDM` (not modified).
        candidates: The modifications to score.
        labels: Conditions of the n samples.
        noise: Their initial latents (the fixed seeds).
        steps: Sampler steps.
        keep_ratio: Fraction kept by ``"halve"``.
        progress: Show a progress bar.

    Returns:
        ``{candidate.label: score}``.
    """
    from tqdm.auto import tqdm

    reference = ldm.sample_latents(labels, noise, steps)
    scores: dict[str, float] = {}
    for cand in tqdm(candidates, desc="score", disable=not progress, leave=False):
        model = copy.deepcopy(ldm)
        apply_candidates(model.unet, [cand], keep_ratio)
        scores[cand.label] = latent_score(reference, model.sample_latents(labels, noise, steps))
    return scores


@dataclass(frozen=True)
class Selection:
    """The chosen modifications and the cost they reach."""

    candidates: tuple[Candidate, ...]
    cost: float
    target: float


def select_to_budget(
    ldm: torch.nn.Module,
    order: Sequence[Candidate],
    cost: Callable[[torch.nn.Module], float],
    target: float,
    keep_ratio: float = 0.5,
) -> Selection:
    """Take candidates in ``order`` (one per operator) until ``cost(model) <= target``.

    Args:
        ldm: The model (not modified; copies are costed).
        order: Candidates, best first (LD-Pruner: ascending score).
        cost: Cost of a model (e.g. `sparse_ldpruner.cost.unet_macs`).
        target: The budget.
        keep_ratio: Fraction kept by ``"halve"``.

    Returns:
        The `Selection` (``cost`` may stay above ``target`` when every operator is taken).
    """
    chosen: list[Candidate] = []
    used: set[str] = set()
    current = cost(ldm)
    for cand in order:
        if current <= target:
            break
        if cand.operator.name in used:
            continue
        model = copy.deepcopy(ldm)
        apply_candidates(model.unet, [*chosen, cand], keep_ratio)
        chosen.append(cand)
        used.add(cand.operator.name)
        current = cost(model)
    return Selection(tuple(chosen), float(current), float(target))

"""The TraceNAS evolutionary search: score candidates by Φ, breed the elites, return the best.

Loop (official ``main.py`` with ``--influence_type evol_search --max_num_iters 10
--random_init True``): base statistics of the full model on the calibration batches; an
initial population of importance-guided random candidates; then ``iterations`` generations,
each of ``population`` new children bred from the ``elites`` best unique candidates scored so
far. Candidates outside the parameter window are skipped without being scored (as the
official ``calculate_influence*`` returns ``None`` for them); duplicates (same active layers and
widths) are skipped too [choice: the official ``is_duplicate`` compares active layers only,
which on a 4-layer model would allow a handful of candidates]. The best candidate is the one
with the highest Φ. Everything is drawn from one ``random.Random`` seeded by the caller.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from sparse_tracenas.config import TraceNASConfig
from sparse_tracenas.evolution import breed, initial_candidate
from sparse_tracenas.space import Candidate, SearchSpace
from sparse_tracenas.traces import (
    BaseStatistics,
    TraceLoss,
    causal_lm_loss,
    collect_base,
    proxy_score,
)

__all__ = ["Scored", "SearchResult", "evolutionary_search"]


@dataclass(frozen=True)
class Scored:
    """A scored candidate: ``phi`` and the generation it was found in (0 = initial)."""

    candidate: Candidate
    phi: float
    generation: int
    sparsity: float


@dataclass
class SearchResult:
    """What `evolutionary_search` found.

    Attributes:
        best: The highest-Φ candidate. history: Every scored candidate, in order.
        base: The full model's statistics. space: The search space.
        skipped: Children drawn but not scored (outside the window, or duplicates).
        seconds: Wall time of the whole search (base pass included).
    """

    best: Scored
    history: list[Scored]
    base: BaseStatistics
    space: SearchSpace
    skipped: int = 0
    seconds: float = 0.0
    generations: list[float] = field(default_factory=list)


def _draw(make, space: SearchSpace, seen: set, count: int, attempts: int) -> tuple[list, int]:
    found, skipped = [], 0
    for _ in range(attempts):
        if len(found) == count:
            break
        c = make()
        if not space.is_valid(c) or c.key() in seen:
            skipped += 1
            continue
        seen.add(c.key())
        found.append(c)
    return found, skipped


def evolutionary_search(
    model: nn.Module,
    batches: Sequence[torch.Tensor],
    config: TraceNASConfig,
    seed: int,
    loss_fn: TraceLoss = causal_lm_loss,
    progress: bool = False,
) -> SearchResult:
    """Run TraceNAS's search on ``model`` (left unchanged) with ``batches`` of token ids.

    Args:
        model: A dense Llama-style causal LM.
        batches: Calibration batches (token ids, ``(ids, labels)`` pairs or dicts).
        config: The options.
        seed: Seed of the search's own generator.
        loss_fn: ``loss_fn(logits, ids)`` (default: next-token cross-entropy).
        progress: Show a progress bar over generations.

    Raises:
        ValueError: See `SearchSpace.from_model`, or no valid initial candidate was found.
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    space = SearchSpace.from_model(
        model, config.sparsity, config.window, config.max_layer_pruning, config.min_heads,
        config.min_layers, config.mlp_block,
    )  # fmt: skip
    rng = random.Random(seed)
    base = collect_base(model, batches, loss_fn)
    seen: set = set()
    attempts = config.max_attempts * config.population

    def score(cands: list[Candidate], generation: int) -> list[Scored]:
        out = []
        for c in cands:
            phi, _ = proxy_score(model, c, space, base, batches, config.proxy, loss_fn)
            out.append(Scored(c, phi, generation, space.sparsity(c)))
        return out

    def init() -> Candidate:
        return initial_candidate(
            space, base.importance, rng, config.max_layer_pruning, config.protection
        )

    first, skipped = _draw(init, space, seen, config.population, attempts)
    if not first:
        raise ValueError(
            f"sparsity/window: no initial candidate within {config.sparsity} ± {config.window} "
            f"after {attempts} draws; widen the window"
        )
    history = score(first, 0)
    gens = [time.perf_counter() - start]
    for generation in tqdm(
        range(1, config.iterations + 1), desc="tracenas", disable=not progress, leave=False
    ):
        ranked = sorted(history, key=lambda s: -s.phi)[: config.elites]
        elites = [s.candidate for s in ranked]

        def child(elites: list[Candidate] = elites) -> Candidate:
            return breed(
                elites, space, rng,
                crossover_prob=config.crossover_prob, mutation_prob=config.mutation_prob,
                mutation_strength=config.mutation_strength,
                depth_mutation=config.depth_mutation,
                max_layer_pruning=config.max_layer_pruning,
            )  # fmt: skip

        kids, missed = _draw(child, space, seen, config.population, attempts)
        skipped += missed
        history += score(kids, generation)
        gens.append(time.perf_counter() - start)
    best = max(history, key=lambda s: s.phi)
    return SearchResult(best, history, base, space, skipped, time.perf_counter() - start, gens)

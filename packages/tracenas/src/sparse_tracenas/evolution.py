"""TraceNAS's candidate generators: importance-guided initialisation and evolutionary breeding.

Official code: github.com/pmaletti/TraceNAS, ``tracenas_utils/scoring_funcs.py``
(``pruning_ratio_calculator``, ``_generate_evolutionary_candidate``) and
``tracenas_utils/evol_search_utils.py`` (``crossover_layer``, ``mutate_layer``). Written anew
on `sparse_tracenas.space.Candidate` (integer widths on the grid), with these details:

* **Initialisation** (``pruning_ratio_calculator``): each sublayer draws a keep ratio
  ``U(1 - max_layer_pruning, 1)``, rounded to the grid and clipped to the floors; then a budget
  loop removes units from the sublayers of lowest importance first (score ×
  ``1 + protection · index / L``, so later layers are protected) until the kept parameters reach
  the target, or restores units from the most important ones when below it. The active-layer
  vector [choice: the official random initialisation of depth is not in the released search
  files] draws a depth uniformly in ``[min_layers, L]`` and drops layers uniformly from the
  mutable segment (below).
* **Parents**: parent 1 is the best elite with probability 0.4, else a uniform elite; a second
  parent is drawn with ``crossover_prob``.
* **Depth crossover** (``crossover_layer``): one point, only inside the segment
  ``[max(0, L // 2 - 3), L)``; the prefix comes from parent 1. **Depth mutation**
  (``mutate_layer``): each bit of that segment flips with ``depth_mutation``; too few active
  layers are topped up at random inside the segment.
* **Width crossover**: arithmetic blend ``b · s1 + (1 - b) · s2`` of the parents' sparsities,
  ``b ~ U(0.2, 0.8)``; a layer inactive in a parent but active in the child is *revived* at full
  width (sparsity 0). **Width mutation** (probability ``mutation_prob`` per sublayer): half the
  time the keep ratio is multiplied by ``N(1, mutation_strength)``, half the time nudged by
  ``round(N(0, 1.5))`` steps of ``1 / num_heads`` (the official additive branch); then clamped to
  ``[1 - max_layer_pruning, 1]``, snapped to the grid and to the floors.
* **No budget repair** for children (the official budget loop is commented out): a child
  outside the window is skipped by the search.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from sparse_tracenas.space import Candidate, SearchSpace

__all__ = ["breed", "initial_candidate", "mutable_segment"]


def mutable_segment(num_layers: int) -> range:
    """Layers that depth crossover and mutation may change: ``[max(0, L // 2 - 3), L)``."""
    return range(max(0, num_layers // 2 - 3), num_layers)


def _top_up(layers: list[bool], space: SearchSpace, rng: random.Random) -> None:
    """Activate random inactive layers of the segment until ``min_layers`` are active."""
    segment = list(mutable_segment(space.num_layers))
    while sum(layers) < space.min_layers:
        off = [i for i in segment if not layers[i]] or [i for i, on in enumerate(layers) if not on]
        layers[rng.choice(off)] = True


def _snap(keep: float, units: int, floor: int) -> int:
    return max(floor, min(units, round(keep * units)))


def initial_candidate(
    space: SearchSpace,
    importance: dict[str, Sequence[float]],
    rng: random.Random,
    max_layer_pruning: float,
    protection: float,
) -> Candidate:
    """One importance-guided random candidate (see the module docstring).

    Args:
        space: The search space.
        importance: ``{"attn": [score per layer], "mlp": [...]}`` (higher = more important).
        rng: The generator.
        max_layer_pruning: Largest fraction of a sublayer removed by the random draw.
        protection: Depth protection of the scores.
    """
    n = space.num_layers
    depth = rng.randint(space.min_layers, n)
    layers = [True] * n
    segment = list(mutable_segment(n))
    for i in rng.sample(segment, min(len(segment), n - depth)):
        layers[i] = False
    _top_up(layers, space, rng)
    low = 1.0 - max_layer_pruning
    attn = [_snap(rng.uniform(low, 1.0), space.kv_groups, space.min_groups) for _ in range(n)]
    mlp = [_snap(rng.uniform(low, 1.0), space.blocks, space.min_blocks) for _ in range(n)]
    units = []  # (score, kind, layer, cost)
    for i in range(n):
        if layers[i]:
            boost = 1.0 + protection * i / n
            units.append((importance["attn"][i] * boost, "attn", i, space.group_params))
            units.append((importance["mlp"][i] * boost, "mlp", i, space.block_params))
    units.sort(key=lambda u: u[0])
    target = (1.0 - space.target) * space.total_params
    widths = {"attn": attn, "mlp": mlp}
    floors = {"attn": space.min_groups, "mlp": space.min_blocks}
    caps = {"attn": space.kv_groups, "mlp": space.blocks}

    def kept() -> int:
        return space.params(Candidate(tuple(layers), tuple(attn), tuple(mlp)))

    for _ in range(15):  # official: 15 passes of the budget loop
        diff = kept() - target
        if abs(diff) <= 0.5 * space.block_params:
            break
        order = units if diff > 0 else units[::-1]
        for _score, kind, i, cost in order:
            diff = kept() - target
            if diff > 0 and widths[kind][i] > floors[kind]:
                widths[kind][i] -= min(widths[kind][i] - floors[kind], math.ceil(diff / cost))
            elif diff < 0 and widths[kind][i] < caps[kind]:
                widths[kind][i] += min(caps[kind] - widths[kind][i], math.floor(-diff / cost))
    return Candidate(tuple(layers), tuple(attn), tuple(mlp))


def _depth_child(
    p1: Candidate, p2: Candidate | None, space: SearchSpace, rng: random.Random, flip: float
) -> list[bool]:
    layers = list(p1.layers)
    segment = list(mutable_segment(space.num_layers))
    if p2 is not None and len(segment) > 1:
        point = segment[0] + rng.randint(1, len(segment) - 1)
        layers = list(p1.layers[:point]) + list(p2.layers[point:])
    for i in segment:
        if rng.random() < flip:
            layers[i] = not layers[i]
    _top_up(layers, space, rng)
    return layers


def _sparsity_of(c: Candidate, kind: str, i: int, units: int) -> float:
    if not c.layers[i]:
        return 0.0  # revival: a layer dead in the parent restarts at full width
    return 1.0 - (c.attn[i] if kind == "attn" else c.mlp[i]) / units


def breed(
    elites: Sequence[Candidate],
    space: SearchSpace,
    rng: random.Random,
    *,
    crossover_prob: float,
    mutation_prob: float,
    mutation_strength: float,
    depth_mutation: float,
    max_layer_pruning: float,
) -> Candidate:
    """One child of the elites (best first), by the official operators (module docstring)."""
    if not elites:
        raise ValueError("elites must not be empty")
    p1 = elites[0] if rng.random() < 0.4 else rng.choice(list(elites))
    p2 = rng.choice(list(elites)) if len(elites) >= 2 and rng.random() < crossover_prob else None
    layers = _depth_child(p1, p2, space, rng, depth_mutation)
    low = 1.0 - max_layer_pruning
    step = 1.0 / (space.kv_groups * space.group_size)
    widths: dict[str, list[int]] = {"attn": [], "mlp": []}
    for kind, units, floor in (
        ("attn", space.kv_groups, space.min_groups),
        ("mlp", space.blocks, space.min_blocks),
    ):
        for i in range(space.num_layers):
            own = p1.attn[i] if kind == "attn" else p1.mlp[i]
            if not layers[i]:
                widths[kind].append(own)
                continue
            sparsity = _sparsity_of(p1, kind, i, units)
            if p2 is not None:
                bias = rng.uniform(0.2, 0.8)
                sparsity = bias * sparsity + (1.0 - bias) * _sparsity_of(p2, kind, i, units)
            keep = 1.0 - sparsity
            if rng.random() < mutation_prob:
                if rng.random() < 0.5:
                    keep *= rng.gauss(1.0, mutation_strength)
                else:
                    keep += round(rng.gauss(0.0, 1.5)) * step
            keep = max(low, min(keep, 1.0))
            widths[kind].append(_snap(keep, units, floor))
    return Candidate(tuple(layers), tuple(widths["attn"]), tuple(widths["mlp"]))

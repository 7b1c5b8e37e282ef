"""Layer-wise density allocation: uniform, ERK, and global (decided by one ranking).

``uniform`` gives every layer the same density. ``erk`` is the Erdős–Rényi–Kernel allocation of
RigL (Evci et al., "Rigging the Lottery", arXiv 1911.11134): a layer's density is proportional to
``sum(shape) / prod(shape)``, scaled so that the total kept count equals ``density * N``; layers
whose density would exceed 1 are made dense and the scale is solved again for the rest (the
official ``sparse_utils.get_sparsities`` loop). ``global`` returns ``None``: the caller ranks all
layers together (see `sparsecore.select.select_global`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from sparsecore.select import check_density

__all__ = ["DISTRIBUTIONS", "erk", "layer_densities", "uniform"]

Shapes = Mapping[str, torch.Size | tuple[int, ...]]


def uniform(shapes: Shapes, density: float) -> dict[str, float]:
    """The same density for every tensor."""
    check_density(density)
    return dict.fromkeys(shapes, float(density))


def erk(shapes: Shapes, density: float, power_scale: float = 1.0) -> dict[str, float]:
    """Erdős–Rényi–Kernel densities whose kept counts add up to ``density * total``.

    Args:
        shapes: Tensor shapes by name.
        density: Global fraction kept, in ``(0, 1]``.
        power_scale: Exponent on the raw ERK score (1.0 in RigL).
    """
    check_density(density)
    numels = {n: math.prod(s) for n, s in shapes.items()}
    raw = {n: (sum(s) / math.prod(s)) ** power_scale for n, s in shapes.items()}
    dense: set[str] = set()
    while True:
        budget = density * sum(numels.values()) - sum(numels[n] for n in dense)
        sparse_mass = sum(raw[n] * numels[n] for n in numels if n not in dense)
        if sparse_mass <= 0:
            break
        eps = budget / sparse_mass
        overflow = [n for n in numels if n not in dense and eps * raw[n] > 1.0]
        if not overflow:
            break
        dense.update(overflow)
    return {n: 1.0 if n in dense else min(1.0, eps * raw[n]) for n in numels}


DISTRIBUTIONS = ("uniform", "erk", "global")


def layer_densities(kind: str, shapes: Shapes, density: float) -> dict[str, float] | None:
    """Dispatch on ``kind`` (``uniform``, ``erk`` or ``global``; ``global`` returns ``None``)."""
    if kind == "uniform":
        return uniform(shapes, density)
    if kind == "erk":
        return erk(shapes, density)
    if kind == "global":
        check_density(density)
        return None
    raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {kind!r}")

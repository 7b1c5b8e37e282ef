"""Configuration of `sparse_ap.ActivateWhilePruning`.

One frozen dataclass, `APConfig`, on sparsecore's
`sparsecore.method.MethodConfig`. AP (Liu, Ghosh, Tan & Motani, TMLR 2023,
arXiv 2212.06145) is not a pruning criterion of its own: it wraps a *base* method with pruning
rounds, named here by its registry name (``"imp"``, sparse-lth's ``"lth"``, or any installed
method whose class has ``prune_round``), and splits each cycle's budget ``p`` into ``p - p_AP``
for the base and ``p_AP`` for the AP step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sparsecore.method import MethodConfig
from sparsecore.validation import check_bool, check_number

__all__ = ["RESERVED_BASE_OPTIONS", "APConfig", "cycles_to_reach"]

#: Base-method options that `APConfig` sets itself (passing them in ``base_options``
#: is an error: they would contradict the wrapper's own fields).
RESERVED_BASE_OPTIONS = ("fraction", "sparsity", "pattern", "targets", "exclude", "seed")


@dataclass(frozen=True)
class APConfig(MethodConfig):
    """Options of `sparse_ap.ActivateWhilePruning`.

    Attributes:
        sparsity: Sparsity the base prunes to by magnitude at setup (``0``: start dense, the
            paper's setting; a positive value is a one-shot first level).
        base: Registry name of the base method with pruning rounds (``"imp"``: sparsecore's
            IMP; ``"lth"``: sparse-lth's lottery ticket with rewinding).
        base_options: More options of the base's config (e.g. ``{"rewind_step": 50}`` or
            ``{"scope": "layer"}``); the fields in `RESERVED_BASE_OPTIONS` come from this
            config.
        fraction: ``p``, the fraction of the remaining weights removed per cycle in total
            (official code: ``--prune_percent 20``).
        ap_fraction: ``p_AP``, the part of ``p`` given to the AP step (official code:
            ``ap_pruning_rate = 2``, i.e. 2 of the 20 percent); ``0`` runs the base alone.
        negative_only: Restrict the AP step to negative weights (the paper's rule). ``False``
            ranks every remaining weight by ``|w - w_prev|``: an ablation, not the paper.
    """

    sparsity: float = 0.0
    base: str = "imp"
    base_options: Mapping[str, Any] = field(default_factory=dict)
    fraction: float = 0.2
    ap_fraction: float = 0.02
    negative_only: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.base, str) or not self.base.strip():
            raise TypeError(f"base must be a method name (a non-empty string), got {self.base!r}")
        object.__setattr__(self, "base", self.base.strip().lower())
        if not isinstance(self.base_options, Mapping):
            raise TypeError(f"base_options must be a mapping, got {self.base_options!r}")
        options = dict(self.base_options)
        for key in options:
            if not isinstance(key, str):
                raise TypeError(f"base_options: keys must be option names, got {key!r}")
        reserved = sorted(set(options) & set(RESERVED_BASE_OPTIONS))
        if reserved:
            raise ValueError(
                f"base_options: {reserved} are set by the AP config itself "
                f"(use its fields {reserved} instead)"
            )
        object.__setattr__(self, "base_options", options)
        check_number(self.fraction, "fraction", 0.0, 1.0, open_low=True, open_high=True)
        check_number(self.ap_fraction, "ap_fraction", 0.0, 1.0)
        if not self.ap_fraction < self.fraction:
            raise ValueError(
                f"ap_fraction must be smaller than fraction (the base prunes fraction - "
                f"ap_fraction), got ap_fraction={self.ap_fraction}, fraction={self.fraction}"
            )
        check_bool(self.negative_only, "negative_only")

    @property
    def base_fraction(self) -> float:
        """``p - p_AP``: the fraction of the remaining weights the base removes per cycle."""
        return self.fraction - self.ap_fraction


def cycles_to_reach(sparsity: float, fraction: float) -> int:
    """Pruning cycles of ``fraction`` each needed to reach at least ``sparsity`` from dense.

    Args:
        sparsity: Target sparsity in ``[0, 1)``.
        fraction: Fraction of the remaining weights removed per cycle, in ``(0, 1)``.

    Returns:
        The smallest ``c`` with ``1 - (1 - fraction)^c >= sparsity`` (up to rounding).
    """
    check_number(sparsity, "sparsity", 0.0, 1.0, open_high=True)
    check_number(fraction, "fraction", 0.0, 1.0, open_low=True, open_high=True)
    if sparsity == 0.0:
        return 0
    return max(1, math.ceil(math.log(1.0 - sparsity) / math.log(1.0 - fraction) - 1e-9))

"""Configuration of :class:`~sparse_hollownerf.HollowNeRF`."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sparsecore import MethodConfig
from sparsecore.validation import check_bool, check_int, check_number

__all__ = ["HollowNeRFConfig"]


@dataclass(frozen=True)
class HollowNeRFConfig(MethodConfig):
    """HollowNeRF options (on top of sparsity, pattern, targets, exclude, seed).

    ``sparsity`` is the fraction of saliency-grid vertices set to zero (``k = floor((1 -
    sparsity) · numel)`` kept per target). ``targets=None`` means every
    :class:`~sparse_hollownerf.SaliencyGrid`'s ``values`` in the model.

    Attributes:
        rho: ADMM penalty ``ρ`` of ``(ρ/2)‖s − z + u‖²`` (``> 0``).
        rho_growth: ``ρ`` is multiplied by this after every z/u update (``≥ 1``; 1 = fixed).
        admm_start: Optimizer step at which the ADMM term switches on.
        admm_every: Optimizer steps (θ/s steps) between z/u updates.
        prune_step: Step of the final hard prune to ``supp(z)``; ADMM stops there.
        clamp: Keep saliency values in ``[floor, 1]`` after every step before the hard prune,
            and the kept ones in ``[0, 1]`` after it.
        floor: Lower clamp before the prune (``0 ≤ floor < 1``). A point with ``s(x) = 0`` skips
            its hash lookup, so it gives its saliency corners no gradient: zero would be an
            absorbing state. A small positive floor keeps every region revivable until ADMM
            decides; the prune then sets the non-support to exactly 0.
    """

    rho: float = 1e-2
    rho_growth: float = 1.3
    admm_start: int = 0
    admm_every: int = 10
    prune_step: int = 200
    clamp: bool = False
    floor: float = 1e-3

    def __post_init__(self) -> None:
        super().__post_init__()
        rho = check_number(self.rho, "rho")
        if not rho > 0 or math.isinf(rho):
            raise ValueError(f"rho must be a positive finite number, got {self.rho}")
        growth = check_number(self.rho_growth, "rho_growth")
        if not 1.0 <= growth < math.inf:
            raise ValueError(f"rho_growth must be >= 1 and finite, got {self.rho_growth}")
        check_int(self.admm_start, "admm_start", 0)
        check_int(self.admm_every, "admm_every", 1)
        check_int(self.prune_step, "prune_step", 1)
        if self.prune_step <= self.admm_start:
            raise ValueError(
                f"prune_step ({self.prune_step}) must be > admm_start ({self.admm_start})"
            )
        check_number(self.floor, "floor", 0.0, 1.0, open_high=True)
        check_bool(self.clamp, "clamp")

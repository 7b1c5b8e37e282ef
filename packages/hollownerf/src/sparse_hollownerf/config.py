"""Configuration of `sparse_hollownerf.HollowNeRF`."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sparsecore import MethodConfig
from sparsecore.validation import check_int, check_number

__all__ = ["HollowNeRFConfig"]


@dataclass(frozen=True)
class HollowNeRFConfig(MethodConfig):
    """HollowNeRF options (on top of sparsity, pattern, targets, exclude, seed).

    ``sparsity`` sets the L1 budget ``B = (1 - sparsity) · numel`` on the sum of the saliency
    ``m = sigmoid(values)`` per target, and the hard prune keeps ``k = floor(B)`` vertices.
    ``targets=None`` means every `SaliencyGrid`'s ``values`` in the model.

    Attributes:
        rho: ADMM penalty ``ρ`` of ``(ρ/2)‖s − z + u‖²`` (``> 0``).
        rho_growth: ``ρ`` is multiplied by this after every z/u update (``≥ 1``; 1 = fixed).
        admm_start: Optimizer step at which the ADMM term switches on; ``z``/``u`` are created
            then, from the saliency trained so far.
        admm_every: Optimizer steps (θ/s steps) between z/u updates.
        prune_step: Step of the final hard prune (the ``k`` largest ``z``); ADMM stops there.
    """

    rho: float = 1e-2
    rho_growth: float = 1.3
    admm_start: int = 0
    admm_every: int = 10
    prune_step: int = 200

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

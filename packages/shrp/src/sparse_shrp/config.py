"""Configuration of `sparse_shrp.SHRP`.

Schedule (in optimizer steps, reconstructed; the abstracts name the two stages but give no
lengths):

* ``[0, balance_steps)``: stage 1, load balancing: the Switch loss ``aux_coef · Σ_layers L_aux``
  is returned by `SHRP.regularization`.
* ``[balance_steps, prune_step)``: stage 2, specialisation: no balancing term, routing is free to
  concentrate; Top-1 usage is counted over this window (``usage_start`` moves its start).
* at ``prune_step``: usage-driven pruning. With ``sparsity > 0`` exactly
  ``N - floor((1 - sparsity) · N)`` heads (over all layers, ``N`` heads in all) with the lowest
  usage are removed (budget mode, for comparisons at equal head counts); with ``sparsity == 0``
  the heads whose usage fraction in their layer is ``<= usage_threshold`` are removed (the
  paper's threshold mode; ``usage_threshold=0`` removes exactly the never-chosen heads).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sparsecore import MethodConfig
from sparsecore.patterns import Head
from sparsecore.validation import check_int, check_number

__all__ = ["SHRPConfig"]


@dataclass(frozen=True)
class SHRPConfig(MethodConfig):
    """Options of SHRP.

    Attributes:
        sparsity: Fraction of attention heads removed at ``prune_step`` (over all layers); 0
            selects threshold mode (see the module docstring).
        pattern: ``"head"`` (default) or a `sparsecore.patterns.Head`; the head count is
            taken from the model at setup.
        targets: Router weights to prune (default: every ``*.router.weight``).
        balance_steps: Length of stage 1 (load balancing).
        prune_step: Step at which usage-driven pruning happens (must be > ``usage_start``).
        usage_start: First step whose forwards count usage (default ``balance_steps``).
        aux_coef: Coefficient α of the Switch balancing loss (Switch Transformer default 0.01).
        usage_threshold: Threshold mode: heads with usage fraction ``<=`` this are removed.
    """

    sparsity: float = 0.5
    pattern: Head | str = "head"  # type: ignore[assignment]
    balance_steps: int = 100
    prune_step: int = 200
    usage_start: int | None = None
    aux_coef: float = 0.01
    usage_threshold: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.pattern, str) and self.pattern.strip().lower() == "head":
            object.__setattr__(self, "pattern", Head(1))  # resolved from the model at setup
        super().__post_init__()
        if not isinstance(self.pattern, Head):
            raise ValueError(f"pattern: SHRP prunes whole heads ('head'), got {self.pattern}")
        check_int(self.balance_steps, "balance_steps", 0)
        check_int(self.prune_step, "prune_step", 1)
        if self.usage_start is not None:
            check_int(self.usage_start, "usage_start", 0)
        if self.prune_step <= self.first_usage_step:
            raise ValueError(
                f"prune_step ({self.prune_step}) must be > usage_start "
                f"({self.first_usage_step}): usage is counted before pruning"
            )
        check_number(self.aux_coef, "aux_coef", 0.0, math.inf)
        check_number(self.usage_threshold, "usage_threshold", 0.0, 1.0)

    @property
    def first_usage_step(self) -> int:
        """First step of the usage window."""
        return self.balance_steps if self.usage_start is None else self.usage_start

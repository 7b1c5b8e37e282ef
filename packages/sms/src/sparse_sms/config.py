"""Configuration of Sparse Model Soups: one frozen dataclass, validated on construction.

Defaults follow the official code (ZIB-IOL/SMS, ``main.py``) where it has one and the paper's
usual setting otherwise:

* ``n_phases=3`` and ``n_ingredients=3``: the paper mostly uses ``m = 3..5`` and several phases
  (``main.py`` defaults to 1 phase and 2 splits, which is a smoke-test setting);
* ``vary="seed"`` (official ``ensemble_by='pruned_seed'``), ``soup="uniform"``
  (``UniformEnsembling``), ``retrain_schedule="llr"`` (``LLR``), ``weight_decay=1e-4``,
  ``momentum=0.9``, ``bn_recalibration_fraction=0.2``, ``selector="global"``;
* one deliberate deviation: ``bn_cumulative=True`` (exact average over the recalibration
  batches instead of the BN layers' exponential average), see the attribute's note.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sparsecore import MethodConfig
from sparsecore.validation import check_bool, check_choice, check_int, check_number

__all__ = ["SCHEDULES", "SELECTORS", "SOUPS", "VARY", "SMSConfig"]

#: How the per-phase magnitude pruning allocates sparsity (official ``pruning_selector``).
SELECTORS = ("global", "uniform", "random")
#: Which hyperparameter differs between ingredients (official ``ensemble_by``).
VARY = ("seed", "weight_decay", "retrain_length", "lr")
#: How ingredients are merged (official ``ensemble_method``).
SOUPS = ("uniform", "greedy")
#: Retraining learning-rate schedules (official ``retrain_schedule``), see `sparse_sms.lr`.
SCHEDULES = ("llr", "allr", "ft", "lrw", "slr", "clr")


@dataclass(frozen=True)
class SMSConfig(MethodConfig):
    """Options of `sparse_sms.SparseModelSoup` and `sparse_sms.run`.

    Attributes:
        sparsity: Goal sparsity ``s`` reached after ``n_phases`` prune–retrain phases.
        n_phases: Number of phases ``P``; each removes ``q = 1 - (1 - s)^(1/P)`` of the weights
            still active (so phase ``p`` ends at sparsity ``1 - (1 - q)^p``).
        phase: Phase whose sparsity `SparseModelSoup.setup` prunes a dense model to
            (``0``: no pruning, ``None``: the last phase, i.e. the goal sparsity).
        selector: ``"global"`` (one magnitude ranking over all targets, the default),
            ``"uniform"`` (each tensor loses ``q`` of its active weights) or ``"random"``.
        n_ingredients: Number of retrained copies ``m`` per phase (1 gives plain IMP).
        vary: The hyperparameter that differs between ingredients: ``"seed"`` (batch order and
            random state), ``"weight_decay"``, ``"retrain_length"`` (epochs) or ``"lr"``
            (initial LR of the linear schedule).
        values: One value per ingredient of the varied hyperparameter. ``None`` is allowed for
            ``vary="seed"`` only and means offsets ``0, 1, ..., m-1`` added to ``seed``.
        soup: ``"uniform"`` (average of all ingredients) or ``"greedy"`` (ingredients added in
            order of validation accuracy and kept only if the soup does not get worse).
        retrain_epochs: Retraining epochs per phase and ingredient ``E_r``.
        retrain_schedule: ``"llr"`` (default), ``"allr"``, ``"ft"``, ``"lrw"``, ``"slr"``,
            ``"clr"``; see `sparse_sms.lr`.
        max_lr: Peak retraining LR; ``None``: the largest LR of the recorded pretraining
            schedule (``lr_history`` of `sparse_sms.run`), as in the official code.
        warmup_fraction: Fraction of retraining steps with the cosine warm-up (10%).
        weight_decay: SGD weight decay during retraining (``vary="weight_decay"`` overrides).
        momentum: SGD momentum during retraining.
        bn_recalibration_fraction: Fraction of the (unshuffled) recalibration batches run
            through the model in train mode after every merge; 0 disables recalibration.
        bn_cumulative: Recalibrate with an exact average over the recalibration batches
            (``momentum=None``, the default) instead of the layers' own exponential moving
            average (the official behaviour, ``False``). From freshly reset statistics an EMA
            with momentum 0.1 needs well over 10 batches to forget the reset values; the
            official CIFAR runs see ~70 batches, but 20% of a small dataset is a handful of
            batches, which would leave the statistics biased towards mean 0 / variance 1.
        pretrain_epochs: Epochs of the dense pretraining (used only by ``"allr"``).
    """

    n_phases: int = 3
    phase: int | None = None
    selector: str = "global"
    n_ingredients: int = 3
    vary: str = "seed"
    values: tuple[float, ...] | None = None
    soup: str = "uniform"
    retrain_epochs: int = 5
    retrain_schedule: str = "llr"
    max_lr: float | None = None
    warmup_fraction: float = 0.1
    weight_decay: float = 1e-4
    momentum: float = 0.9
    bn_recalibration_fraction: float = 0.2
    bn_cumulative: bool = True
    pretrain_epochs: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int(self.n_phases, "n_phases", 1)
        if self.phase is not None:
            check_int(self.phase, "phase", 0)
            if self.phase > self.n_phases:
                raise ValueError(f"phase must be <= n_phases ({self.n_phases}), got {self.phase}")
        check_choice(self.selector, "selector", SELECTORS)
        check_int(self.n_ingredients, "n_ingredients", 1)
        check_choice(self.vary, "vary", VARY)
        check_choice(self.soup, "soup", SOUPS)
        check_int(self.retrain_epochs, "retrain_epochs", 1)
        check_choice(self.retrain_schedule, "retrain_schedule", SCHEDULES)
        if self.max_lr is not None:
            check_number(self.max_lr, "max_lr", 0.0, math.inf, open_low=True)
        check_number(self.warmup_fraction, "warmup_fraction", 0.0, 1.0, open_low=False)
        if self.warmup_fraction >= 1.0:
            raise ValueError(f"warmup_fraction must be < 1, got {self.warmup_fraction}")
        check_number(self.weight_decay, "weight_decay", 0.0, math.inf, open_low=False)
        check_number(self.momentum, "momentum", 0.0, 1.0, open_low=False)
        check_number(
            self.bn_recalibration_fraction, "bn_recalibration_fraction", 0.0, 1.0, open_low=False
        )
        check_bool(self.bn_cumulative, "bn_cumulative")
        if self.pretrain_epochs is not None:
            check_int(self.pretrain_epochs, "pretrain_epochs", 1)
        self._check_values()

    def _check_values(self) -> None:
        if self.values is None:
            if self.vary != "seed":
                raise ValueError(f"values: vary={self.vary!r} needs one value per ingredient")
            return
        if isinstance(self.values, str) or not hasattr(self.values, "__iter__"):
            raise TypeError(f"values must be a sequence of numbers, got {self.values!r}")
        values = tuple(self.values)
        object.__setattr__(self, "values", values)
        if len(values) != self.n_ingredients:
            raise ValueError(
                f"values must hold n_ingredients={self.n_ingredients} entries, got {len(values)}"
            )
        for value in values:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"values must be numbers, got {value!r}")
            if math.isnan(value) or value < 0:
                raise ValueError(f"values must be finite and >= 0, got {value}")
        if self.vary in ("seed", "retrain_length") and any(int(v) != v for v in values):
            raise ValueError(f"values must be integers for vary={self.vary!r}, got {values}")
        if self.vary == "retrain_length" and min(values) < 1:
            raise ValueError(f"values: retrain lengths must be >= 1 epoch, got {values}")
        if self.vary == "lr" and min(values) <= 0:
            raise ValueError(f"values: learning rates must be > 0, got {values}")

    @property
    def prune_fraction(self) -> float:
        """``q = 1 - (1 - s)^(1/P)``: fraction of the active weights removed per phase."""
        return 1.0 - (1.0 - self.sparsity) ** (1.0 / self.n_phases)

    def phase_sparsity(self, phase: int) -> float:
        """Nominal sparsity after ``phase`` phases, ``1 - (1 - q)^phase``."""
        return 1.0 - (1.0 - self.prune_fraction) ** phase

    @property
    def target_phase(self) -> int:
        """The phase `SparseModelSoup.setup` prunes to (``phase`` or ``n_phases``)."""
        return self.n_phases if self.phase is None else self.phase

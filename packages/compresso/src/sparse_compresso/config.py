"""Configuration of `sparse_compresso.Compresso` (defaults from the official scripts).

Read in github.com/microsoft/Moonlit ``Compresso/scripts/train.sh`` (``target_sparsity 0.3``,
``sparsity_epsilon 0.005``, ``reg_learning_rate 0.1``, ``lagrangian_warmup_epochs 4`` of
``num_train_epochs 8``, ``droprate_init 0.01``, ``pruning_type
structured_heads+structured_mlp+hidden``) and ``models/l0_module.py`` (``temperature 2/3``,
``magical_number 0.8``, ``sparsity_scheduler "linear"``). The optimizers of the gates and of the
multipliers are AdamW with the trainer's defaults (betas 0.9 / 0.999, eps 1e-8, no weight decay).
"""

from __future__ import annotations

from dataclasses import dataclass

from sparse_compresso.l0 import GATE_KINDS
from sparsecore import MethodConfig
from sparsecore.patterns import Pattern, Unstructured
from sparsecore.validation import check_choice, check_int, check_number

__all__ = ["SCHEDULERS", "CompressoConfig"]

#: Target warm-up shapes (``sparsity_scheduler``).
SCHEDULERS = ("linear", "cubic")


@dataclass(frozen=True)
class CompressoConfig(MethodConfig):
    """Options of Compresso.

    Attributes:
        sparsity: Target fraction of the prunable weights removed (``target_sparsity``; the
            prunable weights are the attention and FFN projections, see `sparse_compresso.l0`).
        pattern: ``"unstructured"``, fixed. The hard masks are outer products of a row keep
            and a column keep (a removed hidden dimension cuts a column out of rows that stay),
            for which the core has no pattern class; `sparse_compresso.weights` builds them and
            the package tests check that structure.
        targets: ``None`` (default): the projection weights are found from the model's layout.
        prune: Structure kinds with gates: any of ``"heads"``, ``"ffn"``, ``"hidden"`` (all three,
            the official ``pruning_type``).
        prune_steps: Optimizer steps of the L0 phase (gates and LoRA train together; 8 epochs in
            ``train.sh``). After its last step the deterministic gates are fixed and training
            continues as the fine-tuning phase (the official second run, ``finetune.sh``).
        warmup_steps: Steps over which the target rises from 0 to ``sparsity``
            (``lagrangian_warmup``; ``None``: half of ``prune_steps``, the 4-of-8-epochs ratio).
        reg_lr: Learning rate of the gates (AdamW) and, ascending, of ``λ₁, λ₂``
            (``reg_learning_rate``).
        droprate_init: ``p₀`` of the FFN gates' initialisation.
        temperature: ``β`` of the hard-concrete distribution.
        magical_number: Scale of the deterministic soft gate values.
        scheduler: ``"linear"`` or ``"cubic"`` target warm-up.
        sparsity_epsilon: The L0 phase counts as converged when ``ŝ ≥ t - ε``.
    """

    sparsity: float = 0.3
    pattern: Pattern | str = "unstructured"
    prune: tuple[str, ...] = GATE_KINDS
    prune_steps: int = 1000
    warmup_steps: int | None = None
    reg_lr: float = 0.1
    droprate_init: float = 0.01
    temperature: float = 2.0 / 3.0
    magical_number: float = 0.8
    scheduler: str = "linear"
    sparsity_epsilon: float = 0.005

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.pattern, Unstructured):
            raise ValueError(
                f"pattern: Compresso's masks are fixed by its gates (rows x columns), got "
                f"{self.pattern}; leave pattern at 'unstructured'"
            )
        if isinstance(self.prune, str) or not isinstance(self.prune, tuple | list):
            raise TypeError(f"prune must be a tuple of {list(GATE_KINDS)}, got {self.prune!r}")
        kinds = tuple(check_choice(k, "prune", GATE_KINDS) for k in self.prune)
        if not kinds or len(set(kinds)) != len(kinds):
            raise ValueError(
                f"prune must name each of {list(GATE_KINDS)} at most once, got {kinds}"
            )
        object.__setattr__(self, "prune", kinds)
        check_int(self.prune_steps, "prune_steps", 1)
        if self.warmup_steps is not None:
            check_int(self.warmup_steps, "warmup_steps", 0)
        check_number(self.reg_lr, "reg_lr", 0.0, open_low=True, finite=True)
        check_number(self.droprate_init, "droprate_init", 0.0, 1.0, open_low=True, open_high=True)
        check_number(self.temperature, "temperature", 0.0, open_low=True, finite=True)
        check_number(self.magical_number, "magical_number", 0.0, open_low=True, finite=True)
        check_choice(self.scheduler, "scheduler", SCHEDULERS)
        check_number(self.sparsity_epsilon, "sparsity_epsilon", 0.0, 1.0)

    @property
    def warmup(self) -> int:
        """The target warm-up length in steps."""
        return self.prune_steps // 2 if self.warmup_steps is None else self.warmup_steps

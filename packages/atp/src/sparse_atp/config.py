"""Configuration of `sparse_atp.ATP` (defaults from the official code where it has one)."""

from __future__ import annotations

from dataclasses import dataclass

from sparse_atp.lasso import TARGETS
from sparsecore import MethodConfig
from sparsecore.patterns import Channel, Pattern
from sparsecore.validation import check_bool, check_choice, check_int, check_number

__all__ = ["ATPConfig"]


@dataclass(frozen=True)
class ATPConfig(MethodConfig):
    """Options of ATP.

    Attributes:
        sparsity: Fraction of the prunable parameters (attention and FFN projection weights)
            removed; the paper's "pruning 40% parameters" is ``0.4``.
        pattern: Always whole channels (rows or columns of the projections); fixed.
        targets: ``None`` (default): the projections are found from the model's structure;
            given names must be among them.
        search_steps: Optimizer steps during which the generator is trained and the decisions
            change (the official ``--control-epochs``); the decisions are then fixed.
        alternate: Alternate generator and LoRA updates, one per optimizer step (the paper's
            alternation); ``False`` updates both from every step's loss (an ablation).
        budget_weight: ``λ_p`` of the budget penalty (official ``5``).
        lasso_weight: ``λ_s`` of the group lasso on the pruned groups (0 disables it).
        lasso_target: ``"merged"`` (``W0 + BA``) or ``"lora"`` (``BA``), see `sparse_atp.lasso`.
        generator_lr: Learning rate of the generator's parameter group (Adam-style optimizers
            take it as is).
        temperature: Gumbel-sigmoid temperature (official ``0.4``).
        base: Logit offset (official ``3.0``; every group starts kept).
        embed_dim: Layer-embedding width (official ``64``).
        hidden_dim: GRU width per direction (official ``128``).
    """

    sparsity: float = 0.4
    pattern: Pattern | str = "channel"
    search_steps: int = 200
    alternate: bool = True
    budget_weight: float = 5.0
    lasso_weight: float = 1.0
    lasso_target: str = "merged"
    generator_lr: float = 1e-3
    temperature: float = 0.4
    base: float = 3.0
    embed_dim: int = 64
    hidden_dim: int = 128

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.pattern, Channel):
            raise ValueError(f"pattern: ATP removes whole heads / FFN channels, got {self.pattern}")
        check_int(self.search_steps, "search_steps", 1)
        check_bool(self.alternate, "alternate")
        check_number(self.budget_weight, "budget_weight", 0.0, finite=True)
        check_number(self.lasso_weight, "lasso_weight", 0.0, finite=True)
        check_choice(self.lasso_target, "lasso_target", TARGETS)
        check_number(self.generator_lr, "generator_lr", 0.0, open_low=True, finite=True)
        check_number(self.temperature, "temperature", 0.0, open_low=True, finite=True)
        check_number(self.base, "base", finite=True)
        check_int(self.embed_dim, "embed_dim", 1)
        check_int(self.hidden_dim, "hidden_dim", 1)

"""Configuration of `sparse_lightpeft.LightPEFT` (defaults from the official scripts).

Defaults read in gccnlp/Light-PEFT: ``scripts/estimate.sh`` (``max_steps=800``,
``l1_loss_coef=1e-4``, ``lr=3e-4``, LoRA ``r=8``, ``alpha=16``, dropout 0.05 on ``query key value
output.dense intermediate.dense``), ``scripts/train.sh`` (attention and FFN ratios 1/3, FFN
pruning ``global``, module ratio 0.75, rank ratio 0.5, ``peft_pruning_method global``),
``NLU/nlu_utils.py`` (attention pruning ``layerwise``, the default of ``prune_bert_attn``) and
``NLU/arguments.py`` (``attn_mask_lr_coef = ffn_mask_lr_coef = 1``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sparsecore import MethodConfig
from sparsecore.patterns import Channel, Pattern
from sparsecore.validation import check_choice, check_int, check_number

__all__ = ["SCOPES", "LightPEFTConfig"]

#: Quantile scopes: one threshold per layer (``"layer"``) or over all layers (``"global"``).
SCOPES = ("layer", "global")


@dataclass(frozen=True)
class LightPEFTConfig(MethodConfig):
    """Options of Light-PEFT.

    Attributes:
        sparsity: Fraction of attention heads *and* of FFN neurons removed from the foundation
            model (the paper's ``attn_pruning_ratio`` / ``ffn_pruning_ratio``, 1/3 each).
        ffn_ratio: FFN ratio when it should differ from ``sparsity`` (``None``: ``sparsity``).
        pattern: Always whole channels (rows or columns of the projections); fixed.
        targets: ``None`` (default): the projections are found from the model's structure.
            Given names must be attention / FFN projection weights (checked at setup); every
            projection is masked all the same, since a head spans query, key, value and output.
        attn_scope: Quantile scope of the head masks (``"layer"``, the official default).
        ffn_scope: Quantile scope of the FFN masks (``"global"``, as in ``train.sh``).
        module_ratio: Fraction of LoRA modules with the lowest ``p2`` that are dropped (0.75).
        rank_ratio: Fraction of LoRA rank dimensions with the lowest first-order importance
            that are removed (0.5).
        rank_scope: Quantile scope of the ranks (``"global"``, as in ``train.sh``).
        l1: λ of ``λ (Σ|m_h| + Σ|m_f|)`` during estimation (``l1_loss_coef = 1e-4``).
        mask_lr_coef: Learning-rate multiplier of the mask parameter group (1, the official
            argument default; the trainer class default of 100/50 is overridden by it).
        estimate_steps: Length of the early-estimation stage in optimizer steps (800 in the
            script); pruning happens after its last step, the importances average its second
            half.
    """

    sparsity: float = 1.0 / 3.0
    ffn_ratio: float | None = None
    pattern: Pattern | str = "channel"
    attn_scope: str = "layer"
    ffn_scope: str = "global"
    module_ratio: float = 0.75
    rank_ratio: float = 0.5
    rank_scope: str = "global"
    l1: float = 1e-4
    mask_lr_coef: float = 1.0
    estimate_steps: int = 800

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.pattern, Channel):
            raise ValueError(
                f"pattern: Light-PEFT removes whole heads / neurons, got {self.pattern}"
            )
        if self.ffn_ratio is not None:
            check_number(self.ffn_ratio, "ffn_ratio", 0.0, 1.0, open_high=True)
        check_choice(self.attn_scope, "attn_scope", SCOPES)
        check_choice(self.ffn_scope, "ffn_scope", SCOPES)
        check_choice(self.rank_scope, "rank_scope", SCOPES)
        check_number(self.module_ratio, "module_ratio", 0.0, 1.0, open_high=True)
        check_number(self.rank_ratio, "rank_ratio", 0.0, 1.0, open_high=True)
        check_number(self.l1, "l1", 0.0, finite=True)
        check_number(self.mask_lr_coef, "mask_lr_coef", 0.0, open_low=True, finite=True)
        check_int(self.estimate_steps, "estimate_steps", 1)

    @property
    def attn_ratio(self) -> float:
        """Fraction of heads removed."""
        return self.sparsity

    @property
    def ffn_fraction(self) -> float:
        """Fraction of FFN neurons removed."""
        return self.sparsity if self.ffn_ratio is None else self.ffn_ratio

"""SlimFit's configuration (validated at construction, before any model is touched)."""

from __future__ import annotations

from dataclasses import dataclass

from sparsecore import MethodConfig
from sparsecore.method import _names
from sparsecore.validation import check_bool, check_number

__all__ = ["SlimFitConfig"]


@dataclass(frozen=True)
class SlimFitConfig(MethodConfig):
    """Options of `sparse_slimfit.SlimFit`.

    Attributes:
        freeze_ratio: ρ, the fraction of units frozen at every iteration (⌊ρ·t⌋ of the ``t``
            units), in ``[0, 1)``. Official: 0.9 (small GLUE tasks, CIFAR), 0.8 (MNLI, SQuAD),
            0.95 (ImageNet).
        score_init_scale: Initial training-dynamics scores are ``score_init_scale · U(0, 1)``
            (official 1e10 for BERT, 1e7 for ViT), so that every unit is trained and scored
            before its measured score decides (the initial scores are never the lowest).
        train_always: Names or globs of units never frozen (the official ViT scripts keep
            ``classifier.weight`` trained; BERT scripts schedule it like the others).
        quantize_ffn_output: Cache the FFN output projection's input in 8-bit fixed point.
        prune_frozen_layernorm: Frozen LayerNorms cache only the top-``layernorm_keep`` entries.
        layernorm_keep: Fraction of a frozen LayerNorm's normalised output kept, in ``(0, 1]``.
        slim_activations: Install the activation caches at all (``False``: freezing only, plain
            autograd; the ablation of the memory side).
        sparsity: Must be 0: SlimFit freezes weights, it does not prune them (stack a pruning
            method for sparse weights). The mask buffers stay all-ones.
    """

    sparsity: float = 0.0
    freeze_ratio: float = 0.9
    score_init_scale: float = 1e10
    train_always: tuple[str, ...] = ()
    quantize_ffn_output: bool = True
    prune_frozen_layernorm: bool = True
    layernorm_keep: float = 0.1
    slim_activations: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sparsity != 0.0:
            raise ValueError(
                f"sparsity must be 0.0 for SlimFit (it freezes layers, it does not prune "
                f"weights; stack a pruning method for sparsity), got {self.sparsity!r}"
            )
        check_number(self.freeze_ratio, "freeze_ratio", 0.0, 1.0, open_high=True)
        check_number(self.score_init_scale, "score_init_scale", 0.0, open_low=True, finite=True)
        object.__setattr__(self, "train_always", _names(self.train_always, "train_always"))
        check_bool(self.quantize_ffn_output, "quantize_ffn_output")
        check_bool(self.prune_frozen_layernorm, "prune_frozen_layernorm")
        check_number(self.layernorm_keep, "layernorm_keep", 0.0, 1.0, open_low=True)
        check_bool(self.slim_activations, "slim_activations")

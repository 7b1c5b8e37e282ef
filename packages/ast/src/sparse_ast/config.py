"""Configuration of AST: a frozen dataclass validated when it is built.

Every option maps to an argument of the official code (thu-ml/Adaptive-Sparse-Trainer,
``main.py`` for GPT-2 and ``LLaMA-2-7B/train.py`` for LLaMA); the mapping is given per field.
Defaults follow the README's "reproduce our methods" command for GPT-2 (``--srste_decay 1e-4
--increase_step 10000 --SLoRB True --SLoRB_k 16 --SLoRB_init_type mean --trainable_projection
True --distill_model True --hardness_task 0.33 --hardness_kldiv 0.67 --hardness_squarehead 0.0
--mask_metric magnitude --change_mask True``) except where noted.
"""

from __future__ import annotations

from dataclasses import dataclass

from sparsecore import NM, MethodConfig, Pattern
from sparsecore.validation import check_bool, check_int, check_number

__all__ = ["MASK_METRICS", "SLORB_INITS", "ASTConfig"]

#: Scores a mask can be computed from (official ``--mask_metric``).
MASK_METRICS = ("magnitude", "wanda")
#: SLoRB initialisations (official ``--SLoRB_init_type``; ``zero`` is in the LLaMA code).
SLORB_INITS = ("mean", "sum", "zero", "xavier")


@dataclass(frozen=True)
class ASTConfig(MethodConfig):
    """Options of `sparse_ast.AdaptiveSparseTrainer`.

    Attributes:
        pattern: An N:M pattern along the *input* dimension (default ``"2:4"``; official
            ``--mask_type structured`` is hard-wired to 2:4, the LLaMA code parses
            ``calculate_N:M_mask``). ``sparsity`` is ignored: the pattern fixes it.
        targets: Parameter names or globs. ``None``: the weight of every ``nn.Linear`` and
            Hugging Face ``Conv1D`` except the output embedding (LM head), as in the official
            code, which sparsifies every linear layer of the blocks and keeps ``lm_head`` dense.
        mask_metric: ``"magnitude"`` (``|W|``, the README's choice) or ``"wanda"``
            (``|W| * ||X_j||_2`` from calibration activations; call
            `sparse_ast.AdaptiveSparseTrainer.calibrate` first).
        mask_update_every: k, optimizer steps between mask recomputations from the dense weights
            (official ``--output_flip_every`` = 10). ``None``: the initial mask is kept
            (official ``--change_mask False``).
        srste_decay: λ, the final SR-STE decay on pruned weights (official ``--srste_decay``,
            1e-4 in the README command; 6e-5 in the LLaMA config).
        increase_steps: T_inc, steps over which the decay grows linearly from 0 to λ (official
            ``--increase_step``, 10000 of 40000 iterations). ``0`` applies λ from the first step.
        distill: Distil from a frozen copy of the dense model (official ``--distill_model``).
        temperature: KL temperature T (hard-coded 2 in ``Distill_Model.kl_loss``).
        alpha_task: Weight of the task loss (``--hardness_task``); the method does not see the
            task loss, so apply it yourself or use `sparse_ast.AdaptiveSparseTrainer.loss`.
        alpha_kl: Weight of the KL term returned by ``regularization()`` (``--hardness_kldiv``).
        alpha_squarehead: Weight of the SquareHead hidden-state term (``--hardness_squarehead``).
        slorb: Add the Sparse Low-Rank Boost (official ``--SLoRB``).
        slorb_k: Input group size k of SLoRB (official ``--SLoRB_k``; 16 in the README command,
            64 the code default); must divide every target's input dimension.
        slorb_init: ``"mean"`` (official default), ``"sum"``, ``"zero"`` or ``"xavier"``.
        slorb_trainable_projection: Whether the grouping matrix P is trained (official
            ``--trainable_projection``, True in the README command).
    """

    sparsity: float = 0.5
    pattern: Pattern | str = "2:4"
    mask_metric: str = "magnitude"
    mask_update_every: int | None = 10
    srste_decay: float = 1e-4
    increase_steps: int = 10_000
    distill: bool = True
    temperature: float = 2.0
    alpha_task: float = 0.33
    alpha_kl: float = 0.67
    alpha_squarehead: float = 0.0
    slorb: bool = True
    slorb_k: int = 16
    slorb_init: str = "mean"
    slorb_trainable_projection: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        pattern = self.pattern
        if not isinstance(pattern, NM):
            raise ValueError(f"pattern must be an N:M pattern such as '2:4', got {pattern}")
        if pattern.dim not in (1, -1):
            raise ValueError(
                f"pattern: AST groups along the input dimension (NM dim=1), got dim={pattern.dim}"
            )
        if self.mask_metric not in MASK_METRICS:
            raise ValueError(f"mask_metric must be one of {MASK_METRICS}, got {self.mask_metric!r}")
        if self.mask_update_every is not None:
            check_int(self.mask_update_every, "mask_update_every", 1)
        check_number(self.srste_decay, "srste_decay", 0.0, finite=True)
        check_int(self.increase_steps, "increase_steps", 0)
        check_bool(self.distill, "distill")
        check_number(self.temperature, "temperature", 0.0, open_low=True, finite=True)
        check_number(self.alpha_task, "alpha_task", 0.0, finite=True)
        check_number(self.alpha_kl, "alpha_kl", 0.0, finite=True)
        check_number(self.alpha_squarehead, "alpha_squarehead", 0.0, finite=True)
        check_bool(self.slorb, "slorb")
        check_int(self.slorb_k, "slorb_k", 1)
        if self.slorb_init not in SLORB_INITS:
            raise ValueError(f"slorb_init must be one of {SLORB_INITS}, got {self.slorb_init!r}")
        check_bool(self.slorb_trainable_projection, "slorb_trainable_projection")

    def decay_at(self, step: int) -> float:
        """λ_W(t): the SR-STE decay for the optimizer step whose 0-based index is ``step``.

        Official ``get_decay(iter_num)``: ``λ * t / T_inc`` for ``t < T_inc``, else ``λ``; the
        first step (t = 0) therefore has no decay.
        """
        if step < self.increase_steps:
            return self.srste_decay * step / self.increase_steps
        return float(self.srste_decay)

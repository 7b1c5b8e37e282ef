"""Configuration of TRP (Trained Rank Pruning, Xu et al., IJCAI 2020, arXiv 2004.14566).

Official code: https://github.com/yuhuixu1993/Trained-Rank-Pruning (``cifar-TRP.py`` flags
``--type``, ``-dp/--decouple-period``, ``--trp``, ``--nuclear-weight``).

Choices, with reasons:

* ``sparsity`` must be ``0.0``: TRP removes *rank*, not entries, and never masks a weight. The
  inherited field is kept (every sparsecore method has it) but a non-zero value raises a
  ``ValueError`` naming ``sparsity`` instead of being silently ignored. The masks sparsecore adds
  stay all-ones; the compression is measured by rank and FLOPs after `TRP.decompose`.
* ``pattern`` must be unstructured (the all-ones masks are trivially valid).
* ``energy`` = 0.9: ``EnergyThreshold(0.9)`` is hard-coded in the official ``train`` loop.
* ``nuclear_weight`` = 3e-4: the value of the README's TRP+Nu runs (the official flag defaults
  to off; ``0`` or ``None`` switches the sub-gradient off here too).
* ``period`` = 1: the official ``-dp`` default (``train_TPR.sh`` uses 5 with ND).
* ``substitute`` = True: the official ``--trp`` flag; ``False`` gives the "nuclear norm only"
  baseline (official ``cifar-nuclear-regularization.py``).
* ``include_linear`` = False: the official code acts on convolutions only and reports results
  "without decomposing the final FC"; Linear layers are an opt-in extension.
"""

from __future__ import annotations

from dataclasses import dataclass

from sparse_trp.lowrank import SCHEMES
from sparsecore.method import MethodConfig
from sparsecore.patterns import Unstructured
from sparsecore.validation import check_bool, check_int, check_number

__all__ = ["TRPConfig"]


@dataclass(frozen=True)
class TRPConfig(MethodConfig):
    """Options of `sparse_trp.TRP`.

    Attributes:
        sparsity: Must be ``0.0`` (TRP prunes rank, not entries; masks stay all-ones).
        scheme: Reshape of a convolution weight ``(N, C, kh, kw)`` before the SVD: ``"NC"``
            (channel, ``N × C·kh·kw``), ``"VH"`` (spatial, ``C·kh × N·kw``, Conv2d only) or
            ``"ND"`` (per filter, ``C × kh·kw``). Linear weights always use the matrix itself.
        energy: Energy threshold ``e`` in ``(0, 1]``: the rank kept at a TRP step is the smallest
            ``r`` with ``Σ_{i≤r} σ_i² ≥ e · Σ σ_i²``.
        nuclear_weight: ``λ`` of the nuclear-norm sub-gradient ``λ·U_r V_rᵀ`` added to the
            gradient on TRP steps; ``0`` or ``None`` disables it.
        period: A TRP step every ``period`` optimizer steps (the official ``-dp``).
        substitute: Replace the weights by their rank-``r`` approximation on TRP steps (the
            official ``--trp``); ``False`` keeps only the nuclear-norm sub-gradient.
        include_linear: With ``targets=None``, also act on every Linear layer (exclude the
            classifier with ``exclude=("fc.weight",)`` if wanted).
        skip_first_conv: With ``targets=None``, leave the first non-1×1 convolution dense (the
            official eligibility rule).
    """

    sparsity: float = 0.0
    scheme: str = "NC"
    energy: float = 0.9
    nuclear_weight: float | None = 3e-4
    period: int = 1
    substitute: bool = True
    include_linear: bool = False
    skip_first_conv: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sparsity != 0.0:
            raise ValueError(
                f"sparsity must be 0.0 for TRP (it reduces rank and masks nothing), got "
                f"{self.sparsity}; control compression with energy / nuclear_weight and the "
                "decomposition criterion"
            )
        if not isinstance(self.pattern, Unstructured):
            raise ValueError(f"pattern must be unstructured for TRP, got {self.pattern}")
        if self.scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, got {self.scheme!r}")
        energy = check_number(self.energy, "energy")
        if not 0.0 < energy <= 1.0:
            raise ValueError(f"energy must lie in (0, 1], got {self.energy}")
        if self.nuclear_weight is not None:
            check_number(self.nuclear_weight, "nuclear_weight", 0.0, finite=True)
        check_int(self.period, "period", 1)
        check_bool(self.substitute, "substitute")
        check_bool(self.include_linear, "include_linear")
        check_bool(self.skip_first_conv, "skip_first_conv")
        if not self.substitute and not self.nuclear_weight:
            raise ValueError(
                "substitute=False with nuclear_weight 0/None does nothing: enable at least one"
            )

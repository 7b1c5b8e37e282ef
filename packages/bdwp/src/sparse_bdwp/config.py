"""Configuration of `sparse_bdwp.BDWP`.

One frozen dataclass on sparsecore's `sparsecore.method.MethodConfig`. The pattern is an N:M
pattern (``"2:4"``, ``"2:8"``, `sparsecore.patterns.NM`) written for the forward mask, along
the input dimension (``dim=1``, the convention of ``nn.Linear`` and ``nn.Conv*d`` weights); the
backward mask uses the same ``N:M`` along the output dimension.
"""

from __future__ import annotations

from dataclasses import dataclass

from sparsecore.method import MethodConfig
from sparsecore.patterns import NM, Pattern
from sparsecore.validation import check_choice, check_int, check_number

__all__ = ["BACKWARD_MODES", "KERNELS", "BDWPConfig"]

#: ``"bidirectional"``: BDWP (``dX`` through ``W ⊙ M_B``); ``"forward"``: forward-only N:M
#: (``dX`` through ``W ⊙ M_F``, i.e. SR-STE), the baseline and the ablation of BDWP's mechanism.
BACKWARD_MODES = ("bidirectional", "forward")
#: ``"auto"``: CUDA 2:4 semi-structured kernels for Linear layers where they can run, masked
#: dense products elsewhere; ``"dense"``: always the masked dense products.
KERNELS = ("auto", "dense")


@dataclass(frozen=True)
class BDWPConfig(MethodConfig):
    """Options of `sparse_bdwp.BDWP`.

    Attributes:
        pattern: N:M pattern of the forward mask along the input dimension (default 2:4); the
            backward mask is the same N:M along the output dimension. ``sparsity`` is ignored.
        decay: ``λ_W`` of the SR-STE decay ``dW += λ_W (1 - M_F) ⊙ W`` on the dense weights
            (SR-STE's default 2e-4); ``0`` is plain straight-through training.
        update_every: Optimizer steps between recomputations of both masks from ``|W|`` (1:
            every iteration).
        backward: ``"bidirectional"`` (BDWP) or ``"forward"`` (forward-only N:M, SR-STE).
        kernels: ``"auto"`` or ``"dense"`` (see `KERNELS`).
    """

    pattern: Pattern | str = "2:4"
    decay: float = 2e-4
    update_every: int = 1
    backward: str = "bidirectional"
    kernels: str = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.pattern, NM):
            raise ValueError(
                f"pattern: BDWP needs an N:M pattern such as '2:4', got {self.pattern}"
            )
        if self.pattern.dim != 1:
            raise ValueError(
                f"pattern: give the forward N:M along the input dimension (dim=1), "
                f"got dim={self.pattern.dim}"
            )
        check_number(self.decay, "decay", 0.0, finite=True)
        check_int(self.update_every, "update_every", 1)
        check_choice(self.backward, "backward", BACKWARD_MODES)
        check_choice(self.kernels, "kernels", KERNELS)

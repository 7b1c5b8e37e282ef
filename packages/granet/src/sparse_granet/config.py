"""Configuration of GraNet: a frozen dataclass validated when it is built.

Every option maps to an argument of the official code (Shiweiliuiiiiiii/GraNet,
``CIFAR/sparselearning/core.py`` and ``CIFAR/main.py``); the mapping is given per field. Times
are counted in optimizer steps (the official code counts epochs and multiplies by the number of
batches per epoch), so the same config drives a plain loop, a Hugging Face ``Trainer`` and DDP.
"""

from __future__ import annotations

from dataclasses import dataclass

from sparsecore import MethodConfig
from sparsecore.schedules import Cosine, Polynomial
from sparsecore.validation import check_bool, check_number
from sparsecore.window import PruningWindow

__all__ = ["INIT_DISTRIBUTIONS", "GraNetConfig"]

#: Layer-wise distributions accepted for the sparse initialisation (``init_density < 1``).
INIT_DISTRIBUTIONS = ("erk", "uniform")


@dataclass(frozen=True)
class GraNetConfig(MethodConfig):
    """Options of `sparse_granet.GraNet`.

    Attributes:
        sparsity: Final sparsity ``1 - d_f`` over all targets (official ``--final-density``
            is ``1 - sparsity``).
        init_density: Initial density ``d_i`` (official ``--init-density``). ``1.0`` is the
            dense-to-sparse variant (training starts dense); ``0.5`` (the official default and
            the CIFAR scripts' value) is the sparse-to-sparse variant: a random mask at
            ``init_distribution`` layer densities. Must exceed ``1 - sparsity``.
        init_distribution: Layer densities of the sparse initialisation: ``"erk"`` (official
            ``--sparse-init ERK``) or ``"uniform"``. Ignored when ``init_density == 1``.
        update_every: ΔT, optimizer steps between mask updates (official
            ``--update-frequency``; 100 in the code, 1000 in the CIFAR scripts).
        begin_step: t₀ in steps: no pruning or regeneration before it (official
            ``--init-prune-epoch`` × batches per epoch).
        end_step: t_f in steps: the pruning window's end; the final sparsity is reached at the
            last multiple of ``update_every`` not after it, ``⌊t_f / ΔT⌋ · ΔT`` (official
            ``--final-prune-epoch`` × batches per epoch). The window must hold at least one
            multiple of ``update_every`` after ``begin_step``.
        drop_fraction: p₀, the initial fraction of each layer's active weights replaced by
            neuroregeneration (official ``--prune-rate``, 0.5).
        final_drop_fraction: The floor of the cosine decay of the fraction (official
            ``CosineDecay(..., eta_min=0.005)``).
        total_steps: T_max of the cosine decay of the fraction: the whole training length in
            steps (official ``len(train_loader) * epochs``). ``None``: ``2 * end_step``, the
            official scripts' ratio (pruning ends at epoch 80 of 160). ``end_step`` must not
            exceed it.
        regenerate: ``False`` turns zero-cost neuroregeneration off, leaving GraNet's gradual
            global magnitude pruning alone, for ablations. This equals the official
            ``--method GMP`` only with ``init_density=1.0``; with ``init_density < 1`` it is a
            random sparse start pruned further (no regrowth).
    """

    init_density: float = 0.5
    init_distribution: str = "erk"
    update_every: int = 100
    begin_step: int = 0
    end_step: int = 1000
    drop_fraction: float = 0.5
    final_drop_fraction: float = 0.005
    total_steps: int | None = None
    regenerate: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number(self.init_density, "init_density", 0.0, 1.0, open_low=True)
        if not self.density < self.init_density:
            raise ValueError(
                f"final density 1 - sparsity = {self.density:g} must be below init_density "
                f"= {self.init_density:g} (sparsity={self.sparsity:g}): GraNet prunes from "
                f"d_i down to d_f"
            )
        if self.init_distribution not in INIT_DISTRIBUTIONS:
            raise ValueError(
                f"init_distribution must be one of {INIT_DISTRIBUTIONS}, "
                f"got {self.init_distribution!r}"
            )
        self.window  # noqa: B018 - validates begin_step / end_step / update_every / total_steps
        check_number(self.drop_fraction, "drop_fraction", 0.0, 1.0)
        check_number(self.final_drop_fraction, "final_drop_fraction", 0.0, 1.0)
        check_bool(self.regenerate, "regenerate")

    # ------------------------------------------------------------------ derived schedules
    @property
    def window(self) -> PruningWindow:
        """The pruning window on the official grid (updates at multiples of ΔT; the core's
        ``"multiples"`` grid): raises, naming the fields, when it holds no update after
        ``begin_step`` or ends after ``total_steps``.
        """
        return PruningWindow(
            self.begin_step, self.end_step, self.update_every, self.total_steps, "multiples"
        )

    @property
    def first_update(self) -> int:
        """c₀ = ⌊t₀ / ΔT⌋, the pruning-update index where the cubic schedule starts."""
        return self.window.first_index

    @property
    def last_update(self) -> int:
        """c_f = ⌊t_f / ΔT⌋, the pruning-update index where the final sparsity is reached."""
        return self.window.last_index

    @property
    def sparsity_schedule(self) -> Polynomial:
        """s_c as a function of the update index c (not of the step).

        ``s_c = (1 - d_i) + (d_i - d_f) * (1 - (1 - (c - c0) / (cf - c0))^3)``, which is
        Zhu–Gupta's cubic from ``1 - d_i`` to ``1 - d_f`` over ``[c0, cf]``.
        """
        return Polynomial(
            initial=1.0 - self.init_density,
            final=self.sparsity,
            begin=self.first_update,
            end=self.last_update,
            every=1,
            power=3.0,
        )

    @property
    def fraction_schedule(self) -> Cosine:
        """p_t: cosine annealing of the regeneration fraction over ``total_steps``."""
        total = self.total_steps if self.total_steps is not None else 2 * self.end_step
        return Cosine(self.drop_fraction, max(total, 1), self.final_drop_fraction)

"""Configuration of `sparse_dynst.DynST`.

Every field is validated in ``__post_init__``; errors are ``ValueError`` / ``TypeError`` that
name the field. Defaults and their reasons are listed in `sparse_dynst.method`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sparsecore import MethodConfig
from sparsecore.method import check_sparsity
from sparsecore.schedules import Polynomial
from sparsecore.validation import check_bool, check_int, check_number

__all__ = ["IMPORTANCES", "INITS", "DynSTConfig"]

#: Sensor importance used to pick which active sensors to prune / drop.
IMPORTANCES = ("taylor", "gradient", "magnitude")
#: How the sensor mask starts.
INITS = ("dense", "random")


@dataclass(frozen=True)
class DynSTConfig(MethodConfig):
    """Options of DynST (sensor-level dynamic sparse training).

    Attributes:
        sparsity: Target *sensor* sparsity ``S``: the fraction of sensors (grid cells or graph
            nodes) switched off at the end; ``floor((1 - S) * N)`` sensors stay deployed.
        targets: Glob(s) naming the sensor-gate parameter(s); the default finds the
            ``sensor_gate`` of every `sparse_dynst.SensorGate` in the model (exactly one
            is allowed).
        init: ``"dense"``: start with every sensor on and prune iteratively toward ``sparsity``
            (the paper); ``"random"``: start from a random subset already at ``sparsity``.
        initial_sparsity: Sensor sparsity the pruning schedule starts from (``init="dense"``).
        prune_begin: First step of the iterative-pruning phase.
        prune_end: Step at which the target sparsity is reached; drop/regrow cycles start after
            it.
        update_every: Steps between mask updates (ΔT), in both phases.
        power: Exponent of the pruning schedule (3: Zhu–Gupta cubic, 1: linear).
        drop_fraction: Initial fraction of active sensors replaced per drop/regrow cycle (α);
            cosine-decayed to 0 at ``regrow_end``. ``0`` disables the cycles.
        regrow_end: Last step of the drop/regrow phase; the mask is frozen afterwards.
        importance: Score for pruning/dropping active sensors: ``"taylor"`` (mean over the
            interval of ``|s ⊙ ∂L/∂s|``), ``"gradient"`` (mean ``|∂L/∂s|``) or ``"magnitude"``
            (``|s|``). Regrowth always uses mean ``|∂L/∂s|`` of the inactive sensors.
        learn_gate: Whether the gate values ``s`` of active sensors are trained (the paper's
            differentiable mask). ``False``: a pure 0/1 gate (reset to 1 after every step).
        dynamic: ``False`` freezes the initial (or calibrated) mask: no pruning, no cycles. Used
            for the random-subset and static-importance baselines.
    """

    targets: tuple[str, ...] | None = ("*sensor_gate",)
    init: str = "dense"
    initial_sparsity: float = 0.0
    prune_begin: int = 0
    prune_end: int = 1000
    update_every: int = 100
    power: float = 3.0
    drop_fraction: float = 0.3
    regrow_end: int = 2000
    importance: str = "taylor"
    learn_gate: bool = True
    dynamic: bool = True

    def __post_init__(self) -> None:
        if self.targets is None:
            object.__setattr__(self, "targets", ("*sensor_gate",))
        super().__post_init__()
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if self.importance not in IMPORTANCES:
            raise ValueError(f"importance must be one of {IMPORTANCES}, got {self.importance!r}")
        check_sparsity(self.initial_sparsity, "initial_sparsity")
        if self.initial_sparsity > self.sparsity:
            raise ValueError(
                f"initial_sparsity ({self.initial_sparsity}) must be <= sparsity ({self.sparsity})"
            )
        check_int(self.prune_begin, "prune_begin", 0)
        check_int(self.prune_end, "prune_end", 1)
        check_int(self.update_every, "update_every", 1)
        check_int(self.regrow_end, "regrow_end", 0)
        if self.prune_end <= self.prune_begin:
            raise ValueError(
                f"prune_end ({self.prune_end}) must be > prune_begin ({self.prune_begin})"
            )
        if self.regrow_end < self.prune_end:
            raise ValueError(
                f"regrow_end ({self.regrow_end}) must be >= prune_end ({self.prune_end})"
            )
        check_number(self.power, "power", 0.0, open_low=True)
        check_number(self.drop_fraction, "drop_fraction", 0.0, 1.0)
        check_bool(self.learn_gate, "learn_gate")
        check_bool(self.dynamic, "dynamic")
        if not self.dynamic and self.init == "dense" and self.sparsity > 0:
            raise ValueError(
                "dynamic=False with init='dense' never reaches sparsity > 0: use init='random' "
                "(and optionally calibrate()) for a fixed sensor subset"
            )

    @property
    def schedule(self) -> Polynomial:
        """The iterative-pruning schedule (sensor sparsity as a function of the step)."""
        return Polynomial(
            self.initial_sparsity,
            self.sparsity,
            self.prune_begin,
            self.prune_end,
            self.update_every,
            self.power,
        )

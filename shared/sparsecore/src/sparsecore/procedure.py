"""Procedures: registered methods that make something other than the weights sparse.

`PruningMethod` is the lifecycle of weight sparsity (mask buffers, optimizer step hooks, a target
sparsity). Several papers the project implements prune something else: rollouts during RL
(ARRoL), reasoning steps at inference (ReBalance), the action space in mid-training (RA3), the
bits of a weight residual (NIRVANA), vocabulary rows of a drafter (VocabTrim). They have no mask
over parameters and no target sparsity, so forcing them into `PruningMethod` would fake both.
They share the rest of the contract, which this module states:

* a frozen config dataclass (`ProcedureConfig`, validated in ``__post_init__`` with
  `sparsecore.validation`, every bad value refused with an error naming the field);
* a place in the Sparseland taxonomy (`Procedure.taxonomy`, whose ``sparsifies`` says what is
  made sparse: ``"rollouts"``, ``"reasoning"``, ``"actions"``, ``"tokens"``, ...);
* `Procedure.attach` / `Procedure.detach`: attaching validates the model *before* touching it
  (`Procedure.validate`), then installs hooks (`Procedure.on_attach`, registering each handle
  with `Procedure.register`) inside `sparsecore.transaction.setup_transaction`, so a failure
  leaves the model exactly as it was; detaching removes every hook and leaves a plain model
  (bit-identical to the one attached, unless the procedure's documented purpose is to train it);
* its own random generator, seeded with `sparsecore.method.method_seed` (mixed with the class
  name: never the raw integer that seeded the model);
* `Procedure.state_dict` / `Procedure.load_state_dict` for exact resume, holding only tensors
  and plain values so that ``torch.load(..., weights_only=True)`` reads it back.

Procedures are registered under the same ``sparsecore.methods`` entry-point group as weight
methods (``[project.entry-points."sparsecore.methods"] rebalance = "sparse_rebalance:ReBalance"``);
`sparsecore.registry.available_procedures` lists them, `available_methods` keeps listing only
`PruningMethod` subclasses (the CLI's ``sparse run`` needs a mask), and ``sparse list`` prints
both. `sparsecore.testing.ProcedureConformance` is the suite a procedure package subclasses.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from sparsecore.method import method_seed
from sparsecore.taxonomy import Taxonomy
from sparsecore.transaction import setup_transaction
from sparsecore.validation import check_int

__all__ = ["Procedure", "ProcedureConfig"]


@dataclass(frozen=True)
class ProcedureConfig:
    """Options every procedure has.

    Attributes:
        seed: Seed of the procedure's own generator (`Procedure.generator`), mixed with the class
            name by `sparsecore.method.method_seed`.
    """

    seed: int = 0

    def __post_init__(self) -> None:
        check_int(self.seed, "seed")


class Procedure:
    """Base class of a registered procedure (see the module docstring).

    A subclass sets `name`, `config_class`, `taxonomy` (and `bench_scenario` when it has one) and
    overrides `validate`, `on_attach` (registering every hook handle with `register`) and, when
    it keeps state across calls, `extra_state` / `load_extra_state`.

    Example:
        >>> procedure = MyProcedure(seed=1).attach(model)
        >>> out = model.generate(...)          # the hooks act during the call
        >>> procedure.detach()                 # the plain model again

        or ``with MyProcedure(seed=1).attach(model): ...`` (detached on exit).
    """

    #: Registry name (the entry-point name).
    name: ClassVar[str] = "procedure"
    #: The frozen config dataclass.
    config_class: ClassVar[type[ProcedureConfig]] = ProcedureConfig
    #: The procedure's place in the Sparseland taxonomy (`sparsecore.taxonomy`).
    taxonomy: ClassVar[Taxonomy | None] = None
    #: The ``sparse bench`` scenario it is shown in, if any (`sparsecore.bench.scenarios`).
    bench_scenario: ClassVar[str | None] = None
    #: Model types `attach` accepts.
    model_types: ClassVar[tuple[type, ...]] = (nn.Module,)

    def __init__(self, config: ProcedureConfig | None = None, **overrides: Any) -> None:
        if config is None:
            config = self.config_class(**overrides)
        elif overrides:
            if not isinstance(config, self.config_class):
                raise TypeError(
                    f"config must be a {self.config_class.__name__}, got {type(config).__name__}"
                )
            config = dataclasses.replace(config, **overrides)
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"config must be a {self.config_class.__name__}, got {type(config).__name__}"
            )
        self.config = config
        self.model: nn.Module | None = None
        self.generator = torch.Generator().manual_seed(
            method_seed(config.seed, type(self).__name__)
        )
        self._handles: list[Any] = []

    # ------------------------------------------------------------------ lifecycle
    @property
    def attached(self) -> bool:
        """Whether the procedure is attached to a model."""
        return self.model is not None

    def attach(self, model: nn.Module) -> Procedure:
        """Validate ``model``, then install the procedure's hooks on it (all or nothing).

        Raises:
            TypeError: ``model`` is not one of `model_types`.
            RuntimeError: Already attached.
            ValueError: Whatever `validate` refuses (before the model is touched).
        """
        if not isinstance(model, self.model_types):
            names = " or ".join(t.__name__ for t in self.model_types)
            raise TypeError(f"model must be a {names}, got {type(model).__name__}")
        if self.model is not None:
            raise RuntimeError(f"{type(self).__name__} is already attached; detach() first")
        self.validate(model)
        try:
            with setup_transaction(model):
                self.on_attach(model)
        except BaseException:
            for handle in self._handles:
                handle.remove()
            self._handles = []
            raise
        self.model = model
        return self

    def detach(self) -> nn.Module:
        """Remove every hook the procedure installed and return the model.

        Raises:
            RuntimeError: Not attached.
        """
        if self.model is None:
            raise RuntimeError(f"{type(self).__name__} is not attached")
        for handle in reversed(self._handles):
            handle.remove()
        self._handles = []
        model, self.model = self.model, None
        self.on_detach(model)
        return model

    def __enter__(self) -> Procedure:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.model is not None:
            self.detach()

    def register(self, handle: Any) -> Any:
        """Record a hook handle (anything with ``remove()``) for `detach`; returns it."""
        if not callable(getattr(handle, "remove", None)):
            raise TypeError(f"handle must have a remove() method, got {type(handle).__name__}")
        self._handles.append(handle)
        return handle

    # ------------------------------------------------------------------ hooks to override
    def validate(self, model: nn.Module) -> None:
        """Refuse a model the procedure cannot act on (raise; do not touch the model)."""

    def on_attach(self, model: nn.Module) -> None:
        """Install hooks on ``model`` (register each handle with `register`)."""

    def on_detach(self, model: nn.Module) -> None:
        """Anything to undo after the hooks are removed (nothing by default)."""

    def extra_state(self) -> dict[str, Any]:
        """State kept across calls (tensors and plain values only), for `state_dict`."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what `extra_state` returned."""

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """Config, generator state and `extra_state`: tensors and plain values only."""
        return {
            "name": self.name,
            "config": _plain(dataclasses.asdict(self.config)),
            "generator": self.generator.get_state(),
            "state": self.extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict` of a procedure of the same name and config.

        Raises:
            ValueError: Another procedure's state, or a different config.
        """
        if not isinstance(state, dict) or state.get("name") != self.name:
            raise ValueError(f"state: not a state_dict of {self.name!r}")
        mine = _plain(dataclasses.asdict(self.config))
        if state.get("config") != mine:
            raise ValueError(f"state: saved config {state.get('config')} differs from {mine}")
        self.generator.set_state(state["generator"])
        self.load_extra_state(state.get("state", {}))


def _plain(value: Any) -> Any:
    """Config values as plain Python (tuples to lists) so that state dicts compare and load."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return repr(value)

"""The method lifecycle, the dynamic-sparse base class, and the method registry.

A method is a small class with a frozen dataclass config. The user's loop stays as it was:

```python
method = RigL(sparsity=0.9, update_every=100, total_steps=10_000).setup(model, optimizer)
for x, y in loader:
    loss = loss_fn(model(x), y) + method.regularization()
    optimizer.zero_grad(); loss.backward(); optimizer.step()   # hooks do the rest
method.finalize()
```

Events, in order, for one optimizer step (wired through the optimizer's step hooks by
`MaskSet.attach`):

1. `PruningMethod.on_before_optimizer_step`: dense gradients are still readable; if
   `PruningMethod.wants_dense_grads` says so for this step, they are also copied to
   ``self.dense_grads`` for use after the step;
2. gradients (and, when masks changed, optimizer state) are masked; the optimizer steps; weights
   are masked;
3. ``self.step`` is incremented and `PruningMethod.on_after_optimizer_step` runs: scheduled
   mask updates happen here.

Subclasses override `init_masks` and/or the step hooks; `DynamicSparseMethod`
subclasses override only `DynamicSparseMethod.grow_scores` (and optionally
`DynamicSparseMethod.drop_scores`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from sparsecore.distribution import DISTRIBUTIONS, layer_densities
from sparsecore.layouts import stored_pattern
from sparsecore.masks import MaskMode, MaskSet
from sparsecore.patterns import Pattern, Unstructured, parse_pattern
from sparsecore.schedules import Cosine, Periodic
from sparsecore.select import drop_lowest, grow_highest, keep_count, topk_mask
from sparsecore.targets import Target, resolve_targets
from sparsecore.taxonomy import Taxonomy
from sparsecore.transaction import check_setup_inputs, setup_transaction
from sparsecore.validation import check_int, check_number
from sparsecore.window import ScheduleIncompleteWarning

__all__ = [
    "DynamicSparseConfig",
    "DynamicSparseMethod",
    "MethodConfig",
    "PruningMethod",
    "check_sparsity",
    "method_seed",
]

Batch = tuple[torch.Tensor, torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def method_seed(seed: int, salt: str) -> int:
    """Seed of a method's own generator, mixed from the user's ``seed`` and a per-method ``salt``.

    Benchmarks usually call ``torch.manual_seed(seed)`` for the model and pass the same integer to
    the method. Seeding the method's generator with that raw integer draws the first random mask
    from the very numbers that drew the first layer's weights (e.g. every kept weight positive).
    A hash (BLAKE2b of ``salt`` and ``seed``) decorrelates the two streams while keeping runs
    deterministic and identical on every DDP rank.

    Args:
        seed: The user's integer seed (`MethodConfig.seed`).
        salt: A per-method string; `PruningMethod` uses its class name.

    Returns:
        A non-negative 63-bit integer for `torch.Generator.manual_seed`.
    """
    digest = hashlib.blake2b(f"{salt}:{int(seed)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def check_sparsity(value: float, name: str = "sparsity") -> float:
    """Validate a sparsity in ``[0, 1)`` (``TypeError`` / ``ValueError`` naming ``name``)."""
    return check_number(value, name, 0.0, 1.0, open_high=True)


def _names(value: Any, field: str) -> tuple[str, ...]:
    """Names / globs as a tuple of strings (``TypeError`` naming ``field`` otherwise)."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Iterable) and not isinstance(value, bytes | torch.Tensor):
        names = tuple(value)
        if all(isinstance(n, str) for n in names):
            return names
    raise TypeError(
        f"{field} must be a parameter name or glob, or a sequence of them, got {value!r}"
    )


@dataclass(frozen=True)
class MethodConfig:
    """Options every method has.

    Attributes:
        sparsity: Target fraction of removed entries over the targets, in ``[0, 1)``. For N:M
            patterns the pattern fixes it (``1 - n/m``) and this field is ignored.
        pattern: A `sparsecore.patterns.Pattern` or a short string (``"2:4"``), in
            ``nn.Linear``'s ``(out, in)`` convention (transposed automatically for HF ``Conv1D``).
        targets: Parameter names or globs to prune; ``None``: every Linear/Conv/HF-Conv1D weight.
        exclude: Names or globs left dense (e.g. the classifier).
        seed: Seed of the method's own random generator (random masks, random growth), so that
            every DDP rank draws the same numbers. The generator is seeded with
            `method_seed(seed, class name)`, not the raw integer, so that a model seeded with the
            same integer does not correlate with the method's first random mask.
    """

    sparsity: float = 0.9
    pattern: Pattern | str = "unstructured"
    targets: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        check_sparsity(self.sparsity)
        if not isinstance(self.pattern, Pattern | str | Mapping):
            raise TypeError(
                f"pattern must be a Pattern or a string such as 'unstructured' or '2:4', "
                f"got {self.pattern!r}"
            )
        object.__setattr__(self, "pattern", parse_pattern(self.pattern))
        if self.targets is not None:
            object.__setattr__(self, "targets", _names(self.targets, "targets"))
        object.__setattr__(self, "exclude", _names(self.exclude, "exclude"))
        check_int(self.seed, "seed")

    @property
    def density(self) -> float:
        """Fraction kept, ``1 - sparsity``."""
        return 1.0 - self.sparsity


class PruningMethod:
    """Base class of every method: configuration, masks, lifecycle, resume.

    Args:
        config: A config instance of `config_class`.
        **overrides: Fields to build (or replace in) the config, e.g. ``sparsity=0.8``.
    """

    #: Registry name (the entry-point name).
    name: ClassVar[str] = "method"
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    mask_mode: ClassVar[MaskMode] = "hard"
    #: Whether `setup` runs on FSDP2 (``fully_shard``) models (see `sparsecore.fsdp`).
    fsdp2: ClassVar[bool] = False
    supported_patterns: ClassVar[tuple[type[Pattern], ...]] = (Unstructured,)
    #: Whether `calibrate` must run on data before training (one-shot / SNIP-like methods).
    needs_calibration: ClassVar[bool] = False
    #: ``None`` when the method *is* one training run with it attached. Otherwise the procedure
    #: of several runs that the method needs (iterative rounds, phases of ingredients, ...),
    #: in words: ``sparse bench`` then skips it rather than report a single run under its name.
    procedure: ClassVar[str | None] = None
    #: Where the method sits in the Sparseland taxonomy (`sparsecore.taxonomy`); every
    #: registered method declares one (the conformance suite checks it).
    taxonomy: ClassVar[Taxonomy | None] = None
    #: Whether `setup` refuses NaN / infinite target weights (methods that rank or use
    #: the weights; a random mask does not need them).
    requires_finite_weights: ClassVar[bool] = True

    def __init__(self, config: MethodConfig | None = None, **overrides: Any) -> None:
        if config is None:
            config = self.config_class(**overrides)
        else:
            if not isinstance(config, self.config_class):
                raise TypeError(
                    f"{type(self).__name__}: config must be a {self.config_class.__name__}, "
                    f"got {type(config).__name__}"
                )
            if overrides:
                config = dataclasses.replace(config, **overrides)
        self.config = config
        self.model: nn.Module | None = None
        self._masks: MaskSet | None = None
        self.step = 0
        self.generator = torch.Generator().manual_seed(
            method_seed(config.seed, type(self).__name__)
        )
        self.dense_grads: dict[str, torch.Tensor] | None = None

    # ------------------------------------------------------------------ lifecycle
    def setup(
        self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
    ) -> PruningMethod:
        """Validate everything, then add masks to ``model`` and hook into ``optimizer``.

        All or nothing: inputs are checked first (pattern, targets, the method's
        `validate`, an optimizer that holds the targets, no ``meta`` tensors, finite
        weights when `requires_finite_weights`); then masks, parametrizations and hooks
        are added inside `sparsecore.transaction.setup_transaction`, so an error in
        `init_masks` or later leaves the model and optimizer exactly as they were.

        Returns:
            ``self``, so ``method = Method(...).setup(model, opt)`` reads naturally.

        Raises:
            RuntimeError: The method is already set up.
            TypeError: ``model`` / ``optimizer`` of the wrong type.
            ValueError: Unsupported pattern, bad targets, meta or non-finite target weights, an
                optimizer over other parameters, or the method's own checks.
        """
        if self._masks is not None:
            raise RuntimeError(f"{type(self).__name__} is already set up on a model")
        pattern = self.config.pattern
        if not isinstance(pattern, self.supported_patterns):
            names = ", ".join(p.__name__ for p in self.supported_patterns)
            raise ValueError(f"{type(self).__name__} supports patterns [{names}], got {pattern}")
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        names = resolve_targets(model, self.config.targets, self.config.exclude, Unstructured())
        patterns = {t.name: self.pattern_for(model, t.name) for t in names}
        targets = resolve_targets(model, self.config.targets, self.config.exclude, patterns)
        params = dict(model.named_parameters(remove_duplicate=False))
        check_setup_inputs(
            {t.name: params[t.name] for t in targets},
            optimizer,
            finite=self.requires_finite_weights,
        )
        self.validate(model, targets)
        targets = [*targets, *self.companion_targets(model, targets)]
        from sparsecore.fsdp_setup import check_fsdp2_method, sharded_mask_set

        mask_set = sharded_mask_set if check_fsdp2_method(self, targets, params) else MaskSet
        with self.setup_transaction(model, optimizer):
            self.model = model
            self._masks = mask_set(
                model,
                targets,
                mode=self.mask_mode,
                soft_fn=self.soft_mask if self.mask_mode == "soft" else None,
            )
            self._masks.begin_transaction()
            if optimizer is not None:
                self.attach(optimizer)
            self.init_masks()
            self._masks.apply()
        return self

    @contextlib.contextmanager
    def setup_transaction(
        self, model: nn.Module, optimizer: torch.optim.Optimizer | None
    ) -> Iterator[None]:
        """The commit phase of a setup: on any error, undo it on the model, optimizer and method.

        Packages with their own ``setup`` wrap its model-changing part in this (after their
        checks). On success the mask set's rollback copies are dropped.
        """
        with setup_transaction(model, optimizer):
            try:
                yield
            except BaseException:
                if self._masks is not None:
                    self._masks.rollback()
                self._masks = None
                self.model = None
                self.dense_grads = None
                raise
        if self._masks is not None:
            self._masks.commit()

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Hook into a (new) optimizer, e.g. after rebuilding it for retraining."""
        self.masks.attach(optimizer, before_step=self._before_step, after_step=self._after_step)

    @property
    def masks(self) -> MaskSet:
        """The `sparsecore.masks.MaskSet` (after `setup`)."""
        if self._masks is None:
            raise RuntimeError(f"{type(self).__name__}: call setup(model, optimizer) first")
        return self._masks

    def finalize(self) -> nn.Module:
        """Bake the masks into the weights and remove every hook and buffer.

        Warns (``ScheduleIncompleteWarning``, once, naming the option to change) when
        `schedule_complete` is false.

        Returns:
            The plain model, with exactly the final zeros.
        """
        if self._masks is not None and not self.schedule_complete:
            reason = self.schedule_gap() or f"{type(self).__name__}: schedule not complete"
            warnings.warn(reason, ScheduleIncompleteWarning, stacklevel=2)
        model = self.masks.squash()
        self._masks = None
        return model

    def _before_step(self) -> None:
        upcoming = self.step + 1
        self.dense_grads = None
        if self.wants_dense_grads(upcoming):
            self.dense_grads = {
                name: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
                for name, p in self.masks.params().items()
            }
        self.on_before_optimizer_step()

    def _after_step(self) -> None:
        self.step += 1
        self.on_after_optimizer_step()
        self.dense_grads = None

    def random_masks(self, distribution: str, density: float) -> None:
        """Random masks with exactly ``keep_count`` entries per layer at the layer densities of
        ``distribution`` (``"uniform"`` or ``"erk"``), drawn from the method's own generator so
        every DDP rank draws the same masks.
        """
        if getattr(self.masks, "sharded", False):  # FSDP2
            from sparsecore.fsdp_setup import sharded_random_masks

            sharded_random_masks(self, distribution, density)
            return
        shapes = {n: p.shape for n, p in self.masks.params().items()}
        densities = layer_densities(distribution, shapes, density)
        if densities is None:
            raise ValueError("random masks need per-layer densities: use 'uniform' or 'erk'")
        for name, param in self.masks.params().items():
            scores = torch.rand(param.shape, generator=self.generator).to(param.device)
            self.masks.update(name, topk_mask(scores, keep_count(param.numel(), densities[name])))

    @property
    def schedule_complete(self) -> bool:
        """Whether the method's schedule has run to its end (always true for methods without
        one). Override `schedule_gap` (or this property) in scheduled methods.
        """
        return self.schedule_gap() is None

    def schedule_gap(self) -> str | None:
        """Why the schedule is not complete after ``self.step`` steps, naming the option to
        change, or ``None`` when it is (the default: no schedule).
        """
        return None

    # ------------------------------------------------------------------ hooks to override
    def pattern_for(self, model: nn.Module, name: str) -> Pattern:
        """The pattern of target ``name`` in its stored layout.

        Default: the config's pattern (written in ``nn.Linear``'s ``(out, in)`` convention),
        transposed by `sparsecore.patterns.transpose_pattern` for the ``weight`` of a
        Hugging Face ``Conv1D`` (stored ``(in, out)``), so ``"2:4"`` groups inputs and
        ``Channel()`` removes output features on every layer. The result is
        ``self.masks.targets[name].pattern``; select masks with that, not ``config.pattern``.
        Override for other per-layer patterns.

        Raises:
            ValueError: The config's pattern has no transpose (``Head`` on a ``Conv1D``).
        """
        return stored_pattern(model, name, self.config.pattern)  # type: ignore[arg-type]

    def validate(self, model: nn.Module, targets: list[Target]) -> None:
        """Raise on method-specific bad input, before the model is touched."""

    def companion_targets(self, model: nn.Module, targets: list[Target]) -> list[Target]:
        """Further tensors masked with the targets (default none), after `validate`.

        E.g. the biases and normalisation parameters of channel groups
        (`sparsecore.groups.ChannelGroupsSupport`). Raise here, not later, on bad input.
        """
        return []

    def init_masks(self) -> None:
        """Set the initial masks (default: keep everything)."""

    def wants_dense_grads(self, step: int) -> bool:
        """Whether the dense gradients of the step about to complete are needed after it."""
        return False

    def on_before_optimizer_step(self) -> None:
        """Runs before gradients are masked (dense gradients readable on ``param.grad``)."""

    def on_after_optimizer_step(self) -> None:
        """Runs after the step and weight masking; ``self.step`` already counts this step."""

    def regularization(self) -> torch.Tensor:
        """A loss term to add to the task loss (default zero)."""
        return torch.zeros(())

    def soft_mask(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        """Differentiable mask values in ``[0, 1]`` for ``soft`` mode methods."""
        raise NotImplementedError(f"{type(self).__name__} does not define soft_mask")

    def calibrate(self, batches: Iterable[Batch], loss_fn: LossFn | None = None) -> None:
        """Compute masks from data (one-shot methods). Default: nothing to calibrate."""

    def extra_state(self) -> dict[str, Any]:
        """Method-specific state for exact resume (tensors and plain Python values)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Inverse of `extra_state`."""

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """Step counter, generator state and `extra_state` (masks live in the model)."""
        return {
            "name": self.name,
            "step": self.step,
            "generator": self.generator.get_state(),
            "extra": self.extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from `state_dict` (load the model's state_dict too: it holds the masks)."""
        if state.get("name") != self.name:
            raise ValueError(f"state_dict is for method {state.get('name')!r}, not {self.name!r}")
        self.step = int(state["step"])
        self.generator.set_state(state["generator"])
        self.load_extra_state(state["extra"])
        if self._masks is not None:
            self._masks._state_dirty = True

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"


#: With ``end_step=None`` and a known ``total_steps``, drop-and-grow stops at this fraction of
#: training (RigL, Evci et al. 2020: T_end at 75% of training; the official CIFAR script stops
#: mask updates at step 75,000 of 97,656).
DEFAULT_END_FRACTION = 0.75


@dataclass(frozen=True)
class DynamicSparseConfig(MethodConfig):
    """Options of drop-and-grow methods (SET, RigL and their descendants).

    Attributes:
        distribution: Layer-wise densities: ``"erk"`` or ``"uniform"``.
        update_every: Steps between mask updates (ΔT).
        drop_fraction: Initial fraction of active weights replaced per update (α).
        end_step: Last step at which an update may run (RigL's T_end); the drop fraction is
            cosine-decayed to 0 over ``[0, end]``. ``None``: the end is derived from
            ``total_steps`` (see `update_end`); with neither, updates run with a constant
            fraction until training stops, and ``finalize()`` warns.
        begin_step: First step at which updates may happen.
        total_steps: Training length in steps, when known. With ``end_step=None`` updates stop
            at ``min(floor(0.75 total_steps), total_steps - update_every)``: RigL's 75%, and never
            an update within the last ΔT (weights regrown there would be finalized at exactly
            zero). ``end_step`` must not exceed it.
    """

    distribution: str = "erk"
    update_every: int = 100
    drop_fraction: float = 0.3
    end_step: int | None = None
    begin_step: int = 0
    total_steps: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.distribution not in DISTRIBUTIONS or self.distribution == "global":
            raise ValueError(f"distribution must be 'erk' or 'uniform', got {self.distribution!r}")
        check_int(self.update_every, "update_every", 1)
        check_number(self.drop_fraction, "drop_fraction", 0.0, 1.0)
        check_int(self.begin_step, "begin_step", 0)
        if self.total_steps is not None:
            check_int(self.total_steps, "total_steps", 1)
        if self.end_step is not None:
            check_int(self.end_step, "end_step", 0)
            if self.end_step < self.begin_step:
                raise ValueError(
                    f"end_step ({self.end_step}) must be >= begin_step ({self.begin_step})"
                )
            if self.total_steps is not None and self.end_step > self.total_steps:
                raise ValueError(
                    f"end_step ({self.end_step}) must be <= total_steps ({self.total_steps})"
                )
        end = self.update_end
        if end is not None and end < self.first_update:
            where = (
                f"end_step ({end})"
                if self.end_step is not None
                else f"total_steps ({self.total_steps}): without end_step, updates stop at "
                f"min(floor({DEFAULT_END_FRACTION} total_steps), total_steps - update_every) = "
                f"{end}, which"
            )
            hint = "raise end_step" if self.end_step is not None else "set end_step"
            raise ValueError(
                f"{where} leaves no drop-and-grow update: the first runs at step "
                f"{self.first_update} (begin_step={self.begin_step}, "
                f"update_every={self.update_every}); lower update_every or {hint}"
            )

    @property
    def first_update(self) -> int:
        """The step of the first update (``begin_step``, or ``update_every`` when it is 0)."""
        return self.begin_step if self.begin_step >= 1 else self.update_every

    @property
    def update_end(self) -> int | None:
        """The last step an update may run at: ``end_step``, else derived from ``total_steps``
        (``min(floor(0.75 T), T - update_every)``), else ``None`` (no end).
        """
        if self.end_step is not None:
            return self.end_step
        if self.total_steps is None:
            return None
        total = self.total_steps
        return min(math.floor(DEFAULT_END_FRACTION * total), total - self.update_every)


class DynamicSparseMethod(PruningMethod):
    """Fixed-sparsity drop-and-grow training; subclasses choose the drop and grow scores.

    Initial masks are random at the per-layer densities of ``distribution``. At every update step,
    per layer: ``r = drop_count(nnz, fraction)`` active entries with the lowest drop score are
    removed, and the ``r`` inactive entries (including the ones just dropped) with the highest
    grow score are added. Per-layer nnz is unchanged. Newly grown weights (inactive before the
    update) start at zero with zeroed optimizer state. Updates stop at
    ``config.update_end`` (``end_step``, or 75% of ``total_steps``); with neither set they run
    until training stops and ``finalize()`` warns.
    """

    config_class: ClassVar[type[MethodConfig]] = DynamicSparseConfig
    config: DynamicSparseConfig

    def init_masks(self) -> None:  # noqa: D102
        self.random_masks(self.config.distribution, self.config.density)

    @property
    def schedule(self) -> Periodic:
        """When updates happen."""
        return Periodic(self.config.update_every, self.config.begin_step, self.config.update_end)

    def drop_fraction_at(self, step: int) -> float:
        """The fraction replaced at ``step`` (cosine-decayed when the updates have an end)."""
        end = self.config.update_end
        if end is None:
            return self.config.drop_fraction
        return Cosine(self.config.drop_fraction, max(end, 1))(step)

    def drop_count(self, nnz: int, fraction: float) -> int:
        """How many of ``nnz`` active entries to replace (RigL: ``floor``)."""
        return math.floor(fraction * nnz)

    def wants_dense_grads(self, step: int) -> bool:  # noqa: D102
        return self.schedule.is_update_step(step)

    def on_after_optimizer_step(self) -> None:  # noqa: D102
        if self.schedule.is_update_step(self.step):
            self.update_masks(self.drop_fraction_at(self.step))

    def last_update_step(self, step: int) -> int | None:
        """The step of the last update at or before ``step`` (``None``: none yet)."""
        cfg = self.config
        end = cfg.update_end
        last = step if end is None else min(step, end)
        if last < cfg.first_update:
            return None
        return cfg.begin_step + (last - cfg.begin_step) // cfg.update_every * cfg.update_every

    def schedule_gap(self) -> str | None:  # noqa: D102
        cfg, name = self.config, type(self).__name__
        end = cfg.update_end
        if end is not None:
            if self.step >= end:
                return None
            field = "end_step" if cfg.end_step is not None else "total_steps"
            return (
                f"{name}: finalize() after {self.step} steps, before drop-and-grow ended at step "
                f"{end} (from {field}={getattr(cfg, field)}): set {field} to the training length"
            )
        last = self.last_update_step(self.step)
        if last is None:
            return (
                f"{name}: no drop-and-grow update ran in {self.step} steps (the first is at step "
                f"{cfg.first_update}); lower update_every or begin_step, or set total_steps"
            )
        zeros = ""
        if self._masks is not None:
            count = sum(
                int((p.detach()[self._masks.mask(n)] == 0).sum())
                for n, p in self._masks.params().items()
            )
            zeros = f", and {count} active weights are exactly zero"
        return (
            f"{name}: end_step and total_steps are unset, so drop-and-grow ran until training "
            f"stopped: the last update at step {last}, {self.step - last} steps before "
            f"finalize(){zeros}. Set total_steps (updates then stop at "
            f"{DEFAULT_END_FRACTION:.0%} of training) or end_step"
        )

    def drop_scores(self, name: str, weight: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """Scores for keeping active entries (default ``|w|``)."""
        return weight.detach().abs()

    def grow_scores(self, name: str, weight: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """Scores for growing inactive entries."""
        raise NotImplementedError

    @torch.no_grad()
    def update_masks(self, fraction: float) -> dict[str, int]:
        """One drop-and-grow round over every layer; returns the number replaced per layer."""
        if getattr(self.masks, "sharded", False):  # FSDP2
            from sparsecore.fsdp_setup import sharded_update_masks

            return sharded_update_masks(self, fraction)
        grads = self.dense_grads or {}
        replaced = {}
        for name, weight in self.masks.params().items():
            mask = self.masks.mask(name)
            grad = grads.get(name)
            if grad is None:
                grad = torch.zeros_like(weight)
            nnz = int(mask.sum())
            count = min(self.drop_count(nnz, fraction), nnz)
            if count <= 0:
                replaced[name] = 0
                continue
            after_drop = drop_lowest(self.drop_scores(name, weight, grad), mask, count)
            grown = grow_highest(self.grow_scores(name, weight, grad), after_drop, count)
            # One update: dropped-and-not-regrown entries are zeroed with their state; newly
            # grown entries were masked, so they start at exactly zero; an entry dropped and
            # regrown in the same round keeps its value (as in the RigL and GraNet code).
            self.masks.update(name, grown)
            replaced[name] = count
        return replaced


def __getattr__(name: str) -> object:
    """``sparsecore.method.available_methods`` & co. moved to `sparsecore.registry`."""
    if name in ("available_methods", "get_method", "register_method"):
        from sparsecore import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Masks: one persistent ``bool`` buffer per target tensor, applied in one of three modes.

A `MaskSet` owns the masks of one model. For a target parameter ``layer.weight`` it
registers the buffer ``layer.weight_mask`` (``bool``, persistent, so it is in ``state_dict``, moves
with ``.to()`` and is broadcast by DDP). Masks are never replaced, only updated in place with
``copy_``.

Modes:

``hard`` (default)
    The forward pass is the plain model. Masking happens in the optimizer's step hooks: before the
    step, gradients are masked (and every optimizer-state tensor of the parameter's shape, e.g. SGD
    momentum and Adam moments, whenever the masks changed since the last step); after the step the
    weights are masked. Dense gradients are readable until the pre-step hook runs, which is where
    methods that regrow by gradient read them.

    State masking only when masks changed is exact, not an approximation: once a state entry is
    zero and its gradient is masked to zero, SGD momentum, Adam's moments (and AdamW's decoupled
    decay of a zero weight) keep it at exactly zero, so re-masking it every step would change
    nothing and cost a pass over the state.

Masking never multiplies: pruned entries are set to exactly 0 (a bitwise AND with the cached
mask bits on the per-step paths, ``masked_fill`` elsewhere), so an ``inf`` or NaN in a pruned
weight or gradient becomes 0 instead of NaN (``inf * 0``), in every mode and in
`MaskSet.squash`.

``ste``
    The forward uses ``W * m`` through a parametrization whose backward passes the *dense* gradient
    to ``W`` (straight-through estimator). Weights stay dense underneath; nothing is masked in the
    optimizer. Used by SR-STE / AST style methods.

``soft``
    The forward uses ``f(W) * W`` where ``f`` is a differentiable mask function supplied by the
    method (e.g. PDP's sigmoid); gradients flow through ``f``. The bool buffer holds the current
    *hard* decision (``f(W) >= 0.5`` or whatever the method writes).

`MaskSet.squash` bakes the masks into the weights and removes buffers, parametrizations and
hooks, leaving a plain model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

import torch
from torch import nn
from torch.nn.utils import parametrize

# Defined in sparsecore.targets; re-exported here, where they lived first.
from sparsecore.targets import PRUNABLE_TYPES as PRUNABLE_TYPES
from sparsecore.targets import Target as Target
from sparsecore.targets import default_targets as default_targets
from sparsecore.targets import resolve_targets as resolve_targets
from sparsecore.targets import tied_parameters as tied_parameters

__all__ = ["MaskMode", "MaskSet"]

MaskMode = Literal["hard", "ste", "soft"]
SoftMaskFn = Callable[[str, torch.Tensor], torch.Tensor]

#: Optimizers whose update of an entry with zero weight, zero gradient and zero state is exactly
#: zero (SGD with momentum / weight decay / Nesterov, Adam, AdamW, Adagrad, RMSprop). With them the
#: masked gradients and state already keep pruned weights at exactly 0, so hard mode skips the
#: post-step re-masking of the weights (one pass over every target per step); it still re-masks
#: after any mask change. Subclasses and other optimizers are always re-masked.
ZERO_PRESERVING_OPTIMIZERS: frozenset[type[torch.optim.Optimizer]] = frozenset(
    {torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.Adagrad, torch.optim.RMSprop}
)


#: Integer dtype of the same width as a floating dtype (for bit-level masking).
_INT_VIEW = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


class _MaskedSTE(torch.autograd.Function):
    """Forward: ``W`` with masked entries exactly 0 (``masked_fill``, so ``inf``/NaN there
    become 0, not NaN); backward: the dense gradient, unchanged.
    """

    @staticmethod
    def forward(ctx: object, weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return weight.masked_fill(~mask, 0)

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


class _STEMask(nn.Module):
    """Parametrization ``W -> W * m`` whose backward passes the dense gradient to ``W``."""

    def __init__(self, owner: nn.Module, buffer_name: str) -> None:
        super().__init__()
        # A plain (unregistered) reference: deepcopy maps it to the copied owner through its memo,
        # and the mask is read from the owner at every forward, so .to(device) is followed.
        object.__setattr__(self, "_owner", owner)
        self._buffer_name = buffer_name

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        mask = getattr(self._owner, self._buffer_name)
        return _MaskedSTE.apply(weight, mask)


class _SoftMask(nn.Module):
    """Parametrization ``W -> f(W) * W`` with a method-supplied differentiable ``f``.

    Where ``f(W)`` is exactly 0 the result is exactly 0 (and no NaN flows back), whatever ``W``
    holds there: ``W`` is replaced by 0 at those entries before the product.
    """

    def __init__(self, name: str, fn: SoftMaskFn) -> None:
        super().__init__()
        self._name = name
        self._fn = fn

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        values = self._fn(self._name, weight)
        return values * weight.masked_fill(values == 0, 0)


class MaskSet:
    """The masks of one model, and how they are applied.

    Args:
        model: The model to mask (not wrapped: pass ``ddp.module`` under DDP).
        targets: Resolved targets (see `resolve_targets`).
        mode: ``"hard"``, ``"ste"`` or ``"soft"`` (see the module docstring).
        soft_fn: For ``soft`` mode, ``f(name, weight) -> mask values in [0, 1]``.
    """

    def __init__(
        self,
        model: nn.Module,
        targets: list[Target],
        mode: MaskMode = "hard",
        soft_fn: SoftMaskFn | None = None,
    ) -> None:
        if mode not in ("hard", "ste", "soft"):
            raise ValueError(f"mode must be 'hard', 'ste' or 'soft', got {mode!r}")
        if mode == "soft" and soft_fn is None:
            raise ValueError("mode='soft' needs soft_fn")
        self.model = model
        self.mode: MaskMode = mode
        self.targets = {t.name: t for t in targets}
        self._modules = {t.name: model.get_submodule(t.module_name) for t in targets}
        for t in targets:
            module = self._modules[t.name]
            if hasattr(module, t.buffer_name):
                raise ValueError(f"{t.name!r} is already masked (buffer {t.buffer_name} exists)")
        for t in targets:
            module = self._modules[t.name]
            weight = getattr(module, t.param_name)
            module.register_buffer(t.buffer_name, torch.ones_like(weight, dtype=torch.bool))
            if mode == "ste":
                parametrize.register_parametrization(
                    module, t.param_name, _STEMask(module, t.buffer_name)
                )
            elif mode == "soft":
                assert soft_fn is not None
                parametrize.register_parametrization(
                    module, t.param_name, _SoftMask(t.name, soft_fn)
                )
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._state_dirty = True
        self._factors: list[torch.Tensor] | None = None
        self._weights_dirty = True
        self._factor_versions: list[int] = []
        # Mask versions written by update(), whose optimizer state and weights are already masked.
        self._updated_versions: dict[int, int] = {}
        self._positions = {name: i for i, name in enumerate(self.targets)}
        self.optimizer: torch.optim.Optimizer | None = None
        # During a setup transaction: a copy of each target taken the first time update() zeroes
        # entries of it, so a failed setup can restore the weights (see sparsecore.transaction).
        self._originals: dict[str, torch.Tensor] | None = None

    # ------------------------------------------------------------------ access
    @property
    def names(self) -> list[str]:
        """Qualified names of the masked tensors, in model order."""
        return list(self.targets)

    def mask(self, name: str) -> torch.Tensor:
        """The live mask buffer of ``name`` (update it only through `update`)."""
        return self._modules[name]._buffers[self.targets[name].buffer_name]  # hot path: no getattr

    def param(self, name: str) -> nn.Parameter:
        """The underlying (dense, trainable) parameter of ``name``."""
        t = self.targets[name]
        module = self._modules[name]
        param = module._parameters.get(t.param_name)  # hot path: a dict lookup
        if param is None:  # parametrized (ste / soft): the dense tensor is the original
            param = module.parametrizations[t.param_name].original
        return param

    def masks(self) -> dict[str, torch.Tensor]:
        """All live mask buffers by name."""
        return {name: self.mask(name) for name in self.targets}

    def params(self) -> dict[str, nn.Parameter]:
        """All underlying parameters by name."""
        return {name: self.param(name) for name in self.targets}

    def state_keys(self) -> set[str]:
        """The model ``state_dict`` keys that hold masks (to skip them when loading weights)."""
        return {t.state_key for t in self.targets.values()}

    def nnz(self) -> dict[str, int]:
        """Kept entries per tensor."""
        return {name: int(m.sum()) for name, m in self.masks().items()}

    def sparsity(self) -> float:
        """Global fraction of masked entries over all targets."""
        total = sum(m.numel() for m in self.masks().values())
        return 1.0 - sum(self.nnz().values()) / total

    # ------------------------------------------------------------------ updates
    @torch.no_grad()
    def update(self, name: str, keep: torch.Tensor) -> None:
        """Set the mask of ``name`` to ``keep`` (in place) and zero the newly masked weights."""
        mask = self.mask(name)
        if keep.shape != mask.shape or keep.dtype != torch.bool:
            raise ValueError(
                f"mask for {name!r} must be bool of shape {tuple(mask.shape)}, "
                f"got {keep.dtype} {tuple(keep.shape)}"
            )
        mask.copy_(keep)
        if self.mode != "hard":
            self._state_dirty = True
            return
        param = self.param(name)
        if self._originals is not None:
            if name not in self._originals:
                self._originals[name] = param.detach().clone()
            self._state_dirty = True  # during setup: the state is masked at the first step
        elif self.optimizer is None:
            self._state_dirty = True  # attach() re-masks all state anyway
        else:
            # Only this parameter's state can hold newly masked entries: O(1) per updated layer,
            # so an update of k layers costs O(k), not O(k * layers).
            self._mask_state_of(param, mask)
        param.masked_fill_(~mask, 0)
        # _keep_bits rebuilds only this layer's bits and knows its state is already masked.
        self._updated_versions[self._positions[name]] = mask._version

    def _mask_state_of(self, param: torch.Tensor, mask: torch.Tensor) -> None:
        """Zero (exactly, NaN-safe) masked entries of the optimizer state of one parameter."""
        assert self.optimizer is not None
        pruned = None
        for value in self.optimizer.state.get(param, {}).values():
            if isinstance(value, torch.Tensor) and value.shape == param.shape:
                if pruned is None:
                    pruned = ~mask.to(value.device)
                value.masked_fill_(pruned, 0)

    def update_all(self, keeps: Mapping[str, torch.Tensor]) -> None:
        """`update` several masks."""
        for name, keep in keeps.items():
            self.update(name, keep)

    def _keep_bits(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        """The masks as integer bit patterns (all ones = kept, all zeros = pruned), in each
        parameter's integer view dtype and device, cached until a mask changes.

        Hot-path masking is ``tensor.view(int).bitwise_and_(bits)``, not a multiplication: a
        pruned entry becomes exactly ``+0.0`` whatever it held (``inf * 0`` would be NaN, and
        ``-w * 0`` is ``-0.0``), at the cost of a same-dtype multiply (one pass, no per-element
        cast; ``masked_fill_`` is about 5x slower on CPU, see ``benchmarks/overhead.py``). The
        cache costs one parameter-sized tensor per target. Any in-place change of a mask buffer
        (through `update`, ``load_state_dict`` or a direct ``copy_``) bumps the tensor's
        version counter, which invalidates the cache and marks the optimizer state for
        re-masking.
        """
        masks = list(self.masks().values())
        versions = [m._version for m in masks]
        bits = self._factors
        stale = (
            bits is None
            or versions != self._factor_versions
            or any(
                b.device != p.device or b.dtype != _INT_VIEW[p.element_size()]
                for b, p in zip(bits, params, strict=True)
            )
        )

        def build(m: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
            return m.to(device=p.device, dtype=_INT_VIEW[p.element_size()]).neg_()

        if stale and (
            bits is None
            or len(bits) != len(masks)
            or any(
                b.device != p.device or b.dtype != _INT_VIEW[p.element_size()]
                for b, p in zip(bits, params, strict=True)
            )
        ):
            if bits is not None:
                self._state_dirty = True
                self._weights_dirty = True
            bits = [build(m, p) for m, p in zip(masks, params, strict=True)]
        elif stale:
            # Rebuild only the layers whose mask changed (O(k) for an update of k layers); a
            # change that did not come through update() (load_state_dict, a direct copy_) also
            # re-masks the optimizer state and the weights.
            for i, (version, old) in enumerate(zip(versions, self._factor_versions, strict=True)):
                if version != old:
                    bits[i] = build(masks[i], params[i])
                    if self._updated_versions.get(i) != version:
                        self._state_dirty = True
                        self._weights_dirty = True
        if stale:
            self._factors = bits
            self._factor_versions = versions
            self._updated_versions.clear()
        assert bits is not None
        return bits

    @torch.no_grad()
    def apply(self) -> None:
        """Zero the masked weights (hard mode; a no-op in ste/soft where the forward masks)."""
        if self.mode != "hard":
            return
        params = list(self.params().values())
        for param, bits in zip(params, self._keep_bits(params), strict=True):
            param.detach().view(bits.dtype).bitwise_and_(bits)

    @torch.no_grad()
    def mask_grads(self) -> None:
        """Zero the gradients of masked entries (exactly, even where they are ``inf`` / NaN)."""
        params = list(self.params().values())
        for param, bits in zip(params, self._keep_bits(params), strict=True):
            grad = param.grad
            if grad is None:
                continue
            if grad.dtype == param.dtype and grad.layout == torch.strided:
                grad.view(bits.dtype).bitwise_and_(bits)
            else:  # a gradient of another dtype or layout: the general (slower) path
                grad.masked_fill_(bits == 0, 0)

    @torch.no_grad()
    def mask_optimizer_state(self) -> None:
        """Zero masked entries of every optimizer-state tensor shaped like its parameter."""
        if self.optimizer is None:
            return
        for name, param in self.params().items():
            self._mask_state_of(param, self.mask(name))
        self._state_dirty = False

    # ------------------------------------------------------------------ setup transaction
    def begin_transaction(self) -> None:
        """Start keeping a copy of each target before `update` first zeroes it."""
        self._originals = {}

    def commit(self) -> None:
        """End the transaction: drop the copies."""
        self._originals = None

    @torch.no_grad()
    def rollback(self) -> None:
        """Restore the weights `update` changed since `begin_transaction`, unhook.

        Buffers and parametrizations are removed by the caller's
        `sparsecore.transaction.ModelSnapshot`.
        """
        for name, original in (self._originals or {}).items():
            self.param(name).copy_(original)
        self._originals = None
        self.detach()

    # ------------------------------------------------------------------ hooks
    def attach(
        self,
        optimizer: torch.optim.Optimizer,
        before_step: Callable[[], None] | None = None,
        after_step: Callable[[], None] | None = None,
    ) -> None:
        """Hook into ``optimizer``: masking (hard mode) and the method's step callbacks.

        Order per step: ``before_step()`` (dense gradients still readable), mask gradients and (if
        masks changed) optimizer state, the optimizer's own step, mask weights, ``after_step()``.
        """
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {optimizer!r}")
        owned = {id(p) for group in optimizer.param_groups for p in group["params"]}
        missing = [n for n, p in self.params().items() if id(p) not in owned]
        if missing:
            raise ValueError(f"optimizer does not hold the masked parameters {missing[:3]}")
        self.detach()
        self.optimizer = optimizer
        self._state_dirty = True
        self._weights_dirty = True
        hard = self.mode == "hard"

        def pre_hook(_opt: torch.optim.Optimizer, _args: object, _kwargs: object) -> None:
            if before_step is not None:
                before_step()
            if hard:
                self.mask_grads()
                if self._state_dirty:
                    self.mask_optimizer_state()

        zero_preserving = type(optimizer) in ZERO_PRESERVING_OPTIMIZERS

        def post_hook(_opt: torch.optim.Optimizer, _args: object, _kwargs: object) -> None:
            if hard and (not zero_preserving or self._weights_dirty):
                self.apply()
                self._weights_dirty = False
            if after_step is not None:
                after_step()

        self._handles = [
            optimizer.register_step_pre_hook(pre_hook),
            optimizer.register_step_post_hook(post_hook),
        ]

    def detach(self) -> None:
        """Remove the optimizer hooks (masks stay)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.optimizer = None

    @torch.no_grad()
    def squash(self) -> nn.Module:
        """Bake masks into the weights; remove buffers, parametrizations and hooks.

        In ``ste`` mode the baked weight is ``W * m``; in ``soft`` mode it is ``W * m`` with the
        *hard* mask buffer (methods write their final hard decision there first).
        """
        self.detach()
        for name, t in self.targets.items():
            module = self._modules[name]
            mask = self.mask(name)
            if parametrize.is_parametrized(module, t.param_name):
                parametrize.remove_parametrizations(module, t.param_name, leave_parametrized=False)
            getattr(module, t.param_name).masked_fill_(~mask, 0)
            delattr(module, t.buffer_name)
        self._factors = None
        self.targets = {}
        self._modules = {}
        self._positions = {}
        return self.model

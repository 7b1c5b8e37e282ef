"""All-or-nothing `setup()`: input checks, and a snapshot that undoes a failed setup.

`PruningMethod.setup` (and any package that builds its own setup) runs in two phases:

1. **Validate** everything that can be known from the inputs, before the model is touched:
   `check_setup_inputs` refuses an optimizer that does not hold the target parameters, targets on
   the `meta` device, and (for methods that rank or use weights) NaN / infinite weights, each with
   a `ValueError` / `TypeError` naming the parameter.
2. **Build and commit** inside `setup_transaction`: mask buffers, parametrizations (`ste` /
   `soft` modes), optimizer step hooks and any hook a method registers are added to the live
   model, but a `ModelSnapshot` taken before records the model's structure, so that if anything
   raises before the end the additions are removed again and the weights the masks already
   zeroed are restored (`MaskSet` keeps a copy of a target the first time it zeroes entries of it
   during setup; the copies are freed when setup returns). The exception is re-raised unchanged.

What the snapshot restores: per module, the sets of parameters, buffers, submodules, forward /
backward / state-dict hooks and parametrizations (and the module's class, which a parametrization
swaps); per optimizer, its step hooks. What it does not restore: values changed in place by code
other than `MaskSet.update` (methods should not write weights during setup; those that must do it
after the masks are committed).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

__all__ = ["ModelSnapshot", "check_setup_inputs", "setup_transaction"]

#: Module attributes holding hook dictionaries (keyed by handle id).
_MODULE_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)
#: Optimizer attributes holding hook dictionaries.
_OPTIMIZER_HOOK_DICTS = (
    "_optimizer_step_pre_hooks",
    "_optimizer_step_post_hooks",
    "_optimizer_state_dict_pre_hooks",
    "_optimizer_state_dict_post_hooks",
    "_optimizer_load_state_dict_pre_hooks",
    "_optimizer_load_state_dict_post_hooks",
)


def check_setup_inputs(
    params: Mapping[str, torch.Tensor],
    optimizer: torch.optim.Optimizer | None,
    *,
    finite: bool = True,
) -> None:
    """Refuse inputs a setup would fail on later (call before the model is touched).

    Args:
        params: The target parameters by qualified name.
        optimizer: The optimizer to hook into, or `None`.
        finite: Also refuse NaN / infinite target weights (methods that rank or use weights).

    Raises:
        TypeError: `optimizer` is not a `torch.optim.Optimizer`.
        ValueError: A target is on the `meta` device, the optimizer does not hold a target
            parameter, or (with `finite`) a target has NaN / infinite entries.
    """
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {optimizer!r}")
    meta = [n for n, p in params.items() if p.is_meta]
    if meta:
        raise ValueError(
            f"model: targets {meta[:3]} are on the meta device (no values to prune); "
            "materialise the model first (model.to_empty(device=...) then initialise or load "
            "the weights) and call setup on it"
        )
    if optimizer is not None:
        owned = {id(p) for group in optimizer.param_groups for p in group["params"]}
        missing = [n for n, p in params.items() if id(p) not in owned]
        if missing:
            raise ValueError(
                f"optimizer does not hold the target parameters {missing[:3]} (was it built "
                "over another model's parameters?)"
            )
    if finite:
        for name, param in params.items():
            if not bool(torch.isfinite(param.detach()).all()):
                raise ValueError(
                    f"model: target {name!r} has NaN or infinite weights; fix the model (or the "
                    "checkpoint it was loaded from) before pruning it"
                )


def _module_state(module: nn.Module) -> dict[str, Any]:
    state: dict[str, Any] = {
        "class": module.__class__,
        "parameters": dict(module._parameters),
        "buffers": set(module._buffers),
        "modules": set(module._modules),
        "parametrized": set(module.parametrizations)
        if parametrize.is_parametrized(module)
        else set(),
    }
    for attr in _MODULE_HOOK_DICTS:
        hooks = getattr(module, attr, None)
        if hooks is not None:
            state[attr] = set(hooks)
    return state


class ModelSnapshot:
    """The structure of a model (and optimizer) at one moment, to undo later additions.

    Args:
        model: The model.
        optimizer: The optimizer, or `None`.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
        self.model = model
        self.optimizer = optimizer
        self._modules = [(m, _module_state(m)) for m in model.modules()]
        self._optimizer_hooks = {
            attr: set(getattr(optimizer, attr))
            for attr in _OPTIMIZER_HOOK_DICTS
            if optimizer is not None and hasattr(optimizer, attr)
        }

    def restore(self) -> None:
        """Remove every parametrization, buffer, submodule, parameter and hook added since."""
        for module, state in self._modules:
            if parametrize.is_parametrized(module):
                for name in list(module.parametrizations):
                    if name not in state["parametrized"]:
                        parametrize.remove_parametrizations(module, name, leave_parametrized=False)
            for name in set(module._buffers) - state["buffers"]:
                del module._buffers[name]
            for name in set(module._modules) - state["modules"]:
                del module._modules[name]
            for name in list(module._parameters):
                if name not in state["parameters"]:
                    del module._parameters[name]
            if list(module._parameters.items()) != list(state["parameters"].items()):
                # same objects, same order (removing a parametrization re-registers the
                # parameter last, which would reorder the state_dict)
                module._parameters.clear()
                module._parameters.update(state["parameters"])
            for attr in _MODULE_HOOK_DICTS:
                hooks = getattr(module, attr, None)
                if hooks is not None and attr in state:
                    for key in set(hooks) - state[attr]:
                        del hooks[key]
            if module.__class__ is not state["class"]:
                module.__class__ = state["class"]
        if self.optimizer is not None:
            for attr, keys in self._optimizer_hooks.items():
                hooks = getattr(self.optimizer, attr)
                for key in set(hooks) - keys:
                    del hooks[key]


@contextlib.contextmanager
def setup_transaction(
    model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> Iterator[ModelSnapshot]:
    """Run a setup body; if it raises, undo its changes to `model` and `optimizer` and re-raise.

    Weights zeroed by `MaskSet.update` are restored by the mask set itself
    (`MaskSet.rollback`); call it in the `except` path before this context exits, or let
    `PruningMethod.setup` do both.
    """
    snapshot = ModelSnapshot(model, optimizer)
    try:
        yield snapshot
    except BaseException:
        snapshot.restore()
        raise

"""Setting up a structure-gating method on a (LoRA) Hugging Face model: the shared plumbing.

Compresso (arXiv 2310.05015), ATP (arXiv 2412.14426) and Light-PEFT (arXiv 2406.03792) all
train LoRA adapters (`sparsecore.adapters`) on a frozen base while gates over heads and FFN
channels (`sparsecore.structures.GroupMasker`) decide what is removed; each hard-masks the
projection weights a removal deletes. Their setups and endings share these steps, kept here once:

* `unwrap_for_setup`: refuse a non-module, unwrap DDP, refuse a model that already holds the
  method's submodule (gates / generator: set up twice);
* `check_target_names`: refuse ``targets`` that are not the projections found from the model;
* `check_trainable_inputs`: the optimizer holds every trainable parameter (the LoRA factors),
  which, like the target projections, must be finite and materialised;
* `add_frozen_targets`: frozen target projections (a peft base) join the optimizer in a
  ``lr = 0`` group so that the core's hard masks (`sparsecore.masks.MaskSet`), which mask every
  target after each step, can hook in; the optimizer never changes them;
* `add_own_group`: move the method's own parameters (gates, a generator) into a group of their
  own, the other options copied from the first group;
* `zero_lora_slices`: zero a LoRA wrapper's factors so that its delta ``B A`` writes no
  removed output row and reads no removed input column (an exact removal that survives merging);
* `remove_parts`: remove hooks / maskers / recorders and the method's submodule;
* `finalize_fixed`: warn about an incomplete schedule *before* the structure is fixed (fixing
  completes it, so a warning after it would never fire), fix, tear down, bake the masks.

Choices:

* [choice] Every check raises before the model is touched, with the same messages the three
  packages raised before this module existed (their tests match on them).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from sparsecore.transaction import check_setup_inputs
from sparsecore.window import ScheduleIncompleteWarning

if TYPE_CHECKING:
    from sparsecore.method import PruningMethod

__all__ = [
    "add_frozen_targets",
    "add_own_group",
    "check_target_names",
    "check_trainable_inputs",
    "finalize_fixed",
    "remove_parts",
    "unwrap_for_setup",
    "zero_lora_slices",
]


def unwrap_for_setup(model: Any, submodule: str) -> nn.Module:
    """The model a method sets up on: checked, DDP unwrapped, without ``submodule`` yet.

    Args:
        model: What `setup` was given.
        submodule: The name of the submodule the method adds (its gates or generator).

    Returns:
        ``model``, or the module a ``DistributedDataParallel`` wraps.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: The model already has ``submodule`` (set up twice?).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    if hasattr(model, submodule):
        raise ValueError(f"model already has a {submodule!r} submodule (set up twice?)")
    return model


def check_target_names(targets: Sequence[str] | None, available: Iterable[str]) -> None:
    """Refuse ``targets`` naming anything but the attention / FFN projections found.

    Args:
        targets: The config's ``targets`` (``None``: use every projection found).
        available: The projection weight names found from the model's structure.

    Raises:
        ValueError: A target is not among ``available`` (the message names the first).
    """
    if targets is None:
        return
    known = set(available)
    unknown = [t for t in targets if t not in known]
    if unknown:
        raise ValueError(
            f"targets: {unknown[0]!r} is not an attention / FFN projection weight of the "
            "model (leave targets=None: they are found from the model's structure)"
        )


def check_trainable_inputs(
    model: nn.Module, optimizer: torch.optim.Optimizer | None, weights: Iterable[str]
) -> None:
    """Refuse an optimizer or weights a LoRA-style setup would fail on (before touching them).

    The optimizer must hold every trainable parameter (with a peft model, the LoRA factors), and
    those and the target projection ``weights`` (often frozen) must be materialised and finite.

    Args:
        model: The (unwrapped) model.
        optimizer: The optimizer given to `setup`, or ``None``.
        weights: Qualified names of the target projection weights.

    Raises:
        TypeError: ``optimizer`` is not a ``torch.optim.Optimizer``.
        ValueError: A trainable parameter missing from ``optimizer``, meta tensors, or NaN /
            infinite values (see `sparsecore.transaction.check_setup_inputs`).
    """
    params = dict(model.named_parameters(remove_duplicate=False))
    trainable = {n: p for n, p in params.items() if p.requires_grad}
    check_setup_inputs(trainable, optimizer, finite=True)
    check_setup_inputs({n: params[n] for n in weights}, None, finite=True)


def add_frozen_targets(
    optimizer: torch.optim.Optimizer, targets: Mapping[str, nn.Parameter]
) -> list[nn.Parameter]:
    """Add the target parameters ``optimizer`` lacks as a ``lr = 0`` group (frozen ones only).

    The core's hard masks hook into the optimizer and mask every target after each step; a
    peft model's frozen projections are not in the user's optimizer, so they join it in a group
    with ``lr = 0`` and no weight decay that never changes them (they have no gradient).

    Args:
        optimizer: The optimizer the method hooks into.
        targets: The mask set's target parameters by name (``method.masks.params()``).

    Returns:
        The parameters added (empty when the optimizer already held every target).

    Raises:
        ValueError: A target the optimizer lacks is trainable (the message names up to three
            trainable targets).
    """
    owned = {id(p) for group in optimizer.param_groups for p in group["params"]}
    frozen = [p for p in targets.values() if id(p) not in owned]
    if any(p.requires_grad for p in frozen):
        names = [n for n, p in targets.items() if p.requires_grad]
        raise ValueError(f"optimizer does not hold the trainable targets {names[:3]}")
    if frozen:
        optimizer.add_param_group({"params": frozen, "lr": 0.0, "weight_decay": 0.0})
    return frozen


def add_own_group(
    optimizer: torch.optim.Optimizer,
    params: Iterable[nn.Parameter],
    flag: str,
    lr: float,
    **options: Any,
) -> bool:
    """Move ``params`` into a parameter group of their own, marked ``{flag: True}`` (idempotent).

    The parameters are taken out of every group that holds them; the new group copies the
    options of the first group, then sets ``lr`` (and ``initial_lr`` when the first group has
    one, as an LR scheduler adds it) and ``options``. Call it before building an LR scheduler,
    which counts the groups.

    Args:
        optimizer: The optimizer.
        params: The method's own parameters (gates, a generator).
        flag: The key marking the group (a group with it already present: nothing is done).
        lr: The group's learning rate.
        **options: More options to set (e.g. ``weight_decay=0.0``).

    Returns:
        Whether a group was added.
    """
    if any(group.get(flag) for group in optimizer.param_groups):
        return False
    params = list(params)
    ids = {id(p) for p in params}
    for group in optimizer.param_groups:
        group["params"] = [p for p in group["params"] if id(p) not in ids]
    settings = {k: v for k, v in optimizer.param_groups[0].items() if k != "params"}
    settings.update(lr=lr, **options)
    if "initial_lr" in settings:
        settings["initial_lr"] = lr
    optimizer.add_param_group({**settings, "params": params, flag: True})
    return True


@torch.no_grad()
def zero_lora_slices(
    module: nn.Module,
    rows: torch.Tensor | None = None,
    cols: torch.Tensor | None = None,
    adapter: str | None = None,
) -> None:
    """Zero the LoRA factors of one peft wrapper where its base rows / columns are removed.

    ``B[~rows] = 0`` (no delta on a removed output feature) and ``A[:, ~cols] = 0`` (no delta
    read from a removed input feature), in place; the delta ``s · B A`` then vanishes exactly
    on the removed rows and columns, so merging keeps them removed.

    Args:
        module: A peft ``LoraLayer`` (with ``lora_A`` / ``lora_B``).
        rows: Bool keep-mask over the output features (``None``: none removed).
        cols: Bool keep-mask over the input features (``None``: none removed).
        adapter: The adapter's name (``None``: the first active adapter).
    """
    name = module.active_adapters[0] if adapter is None else adapter
    if rows is not None:
        b = module.lora_B[name].weight
        b[~rows.to(b.device)] = 0
    if cols is not None:
        a = module.lora_A[name].weight
        a[:, ~cols.to(a.device)] = 0


def remove_parts(model: nn.Module | None, submodule: str, *parts: Any) -> None:
    """Remove hook handles / maskers / recorders (anything with ``remove()``) and ``submodule``.

    Args:
        model: The method's model (``None``: only the parts are removed).
        submodule: The name of the submodule the method added, deleted when present.
        *parts: Objects with a ``remove()`` method; ``None`` entries are skipped.
    """
    for part in parts:
        if part is not None:
            part.remove()
    if model is not None and hasattr(model, submodule):
        delattr(model, submodule)


def finalize_fixed(method: PruningMethod, settle: Callable[[], None]) -> nn.Module:
    """A gating method's `finalize`: warn if incomplete, fix and tear down, bake the masks.

    The ``ScheduleIncompleteWarning`` (with the method's `schedule_gap`) is raised before
    ``settle`` runs, since fixing the structure completes the schedule; it points at the caller
    of ``method.finalize``.

    Args:
        method: The method being finalized.
        settle: Fixes the structure if it is not fixed yet and removes the method's hooks and
            submodules (the method's own part of the ending).

    Returns:
        The model with the masks baked in (exact zeros) and no mask buffers; the method is no
        longer set up.
    """
    if method._masks is not None and not method.schedule_complete:
        warnings.warn(method.schedule_gap() or "", ScheduleIncompleteWarning, stacklevel=3)
    settle()
    model = method.masks.squash()
    method._masks = None
    return model

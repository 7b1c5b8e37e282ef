"""Physical shrinking of a SuperTickets run, and the ticket it leaves (architecture + mask).

From GATECH-EIC/SuperTickets `train.py` (`shrink_model`) and `models/compress_utils.py`
(`compress_conv` / `compress_bn`, ``reuse_mask``): when the atomic blocks masked so far cost at
least ``model_shrink_delta_flops`` MACs (and at the last epoch), the network is rebuilt without
them; with ``reuse_mask`` the weight masks of the surviving weights are carried into the
smaller network, without it they restart at all ones.

Here the removal is the core's (`sparsecore.export.remove_channels`, exact and checked against
the masked model), after `SuperNet.drop_empty_branches` drops ops with no channel left (the
official `output_searched_network` drops them too).

The carried masks are exact: during the removal every weight-pruned entry outside the masked
channels holds a sentinel (the smallest normal float, far below the removal check's tolerance)
instead of 0, so `remove_channels` sees only the searched-away channels as dead rows (a row
emptied by weight pruning alone is not a channel to remove: its BN shift still reaches the
next layer), and the surviving sentinels are the pruned entries of the shrunk model.
CHOICE: the optimizer is rebuilt on the shrunk model (its state restarts); the official code
slices the optimizer state along.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from sparse_supertickets.method import SuperTickets
from sparsecore.export import remove_channels
from sparsecore.groups import group_masks
from sparsecore.window import ScheduleIncompleteWarning

__all__ = ["Ticket", "pruned_macs", "shrink", "weight_masks"]


@dataclass
class Ticket:
    """A SuperTicket: the searched architecture with its weights, and the weight masks.

    Attributes:
        model: The shrunk model (masked weights are exactly 0).
        masks: Keep-masks of its Conv / Linear weights by parameter name.
        architecture: The searched architecture (`SuperNet.architecture`), when available.
    """

    model: nn.Module
    masks: dict[str, torch.Tensor]
    architecture: list[dict[str, object]] | None = None

    def sparsity(self) -> float:
        """Masked fraction of the Conv / Linear weights."""
        total = sum(m.numel() for m in self.masks.values())
        return 1.0 - sum(int(m.sum()) for m in self.masks.values()) / total

    def copy(self) -> Ticket:
        """A deep copy (to retrain or transfer without touching this one)."""
        return Ticket(
            copy.deepcopy(self.model),
            {n: m.clone() for n, m in self.masks.items()},
            copy.deepcopy(self.architecture),
        )


_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
#: A tiny normal float32 value: its products are far below any tolerance of the removal check.
_SENTINEL = float(torch.finfo(torch.float32).tiny)


def method_weights(method: SuperTickets) -> list[str]:
    """The Conv / Linear weights the method prunes."""
    return list(method._weights)


def method_alive_after_finalize(
    keeps: dict[str, torch.Tensor], method: SuperTickets
) -> dict[str, torch.Tensor]:
    """Entries outside masked channels, from the masks taken before finalize."""
    ones = {n: torch.ones_like(m) for n, m in keeps.items()}
    channel = group_masks(method._groups, method.channel_keeps_from(keeps), ones)
    return {n: channel.get(n, ones[n]) for n in method_weights(method)}


def weight_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """The non-zero pattern of every Conv / Linear weight (the carried masks)."""
    return {
        f"{name}.weight": module.weight.detach().ne(0)
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d)
    }


def pruned_macs(method: SuperTickets) -> float:
    """MACs (one example) of the atomic blocks masked so far (official `cal_pruned_flops`)."""
    keeps = method.channel_keeps()
    return float(sum((~keeps[g.name]).sum().item() * g.macs_per_channel for g in method.searched))


@torch.no_grad()
def shrink(
    method: SuperTickets,
    *,
    reuse_mask: bool = True,
    optimizer_factory: Callable[[nn.Module], torch.optim.Optimizer] | None = None,
) -> tuple[Ticket, SuperTickets | None, torch.optim.Optimizer | None]:
    """Finalize ``method``, remove its masked channels, and optionally continue on the result.

    Args:
        method: A set-up `SuperTickets` method (it is finalized: its model loses its masks).
        reuse_mask: Carry the weight masks into the shrunk model (official ``reuse_mask``);
            ``False``: the continued method starts from all-ones masks.
        optimizer_factory: Builds the optimizer of the shrunk model. When given, a new
            `SuperTickets` method (same config, the supernet's penalty normaliser, the same
            step and history) is set up on the shrunk model and returned with the optimizer.

    Returns:
        ``(ticket, continued method or None, its optimizer or None)``.
    """
    config = method.config
    normalizer = method.normalizer
    step, history = method.step, [dict(h) for h in method.history]
    if config.penalty != "none":
        method.mask_channels()
    keeps = {n: m.clone() for n, m in method.masks.masks().items()}
    with warnings.catch_warnings():
        if optimizer_factory is not None:  # a shrink mid-run: the schedule continues after it
            warnings.simplefilter("ignore", ScheduleIncompleteWarning)
        model = method.finalize()
    example = torch.zeros((1, *config.input_shape), dtype=next(model.parameters()).dtype)
    model.eval()
    params = dict(model.named_parameters())
    channel = method_alive_after_finalize(keeps, method)
    # Weight-pruned entries outside masked channels hold a sentinel during the removal, so that
    # only the searched-away channels are dead rows (see the module docstring).
    for name in method_weights(method):
        params[name].masked_fill_(~keeps[name] & channel[name], _SENTINEL)
    if hasattr(model, "drop_empty_branches"):
        model.drop_empty_branches()
    remove_channels(model, example)
    masks = {}
    for name, module in model.named_modules():
        if isinstance(module, _LAYERS):
            weight = module.weight
            masks[f"{name}.weight"] = weight.ne(_SENTINEL)
            weight.masked_fill_(weight.eq(_SENTINEL), 0.0)
    arch = model.architecture() if hasattr(model, "architecture") else None
    ticket = Ticket(model, masks, arch)
    if optimizer_factory is None:
        return ticket, None, None
    model.train()
    optimizer = optimizer_factory(model)
    again = SuperTickets(dataclasses.replace(config, penalty_normalizer=normalizer))
    again.setup(model, optimizer)
    again.step = step
    again.history = history
    if reuse_mask:
        again.masks.update_all({n: m for n, m in masks.items() if n in again.masks.targets})
    return ticket, again, optimizer

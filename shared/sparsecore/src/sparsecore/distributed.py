"""Sparsity across processes: identical masks on every rank, and averaging state dicts (soups).

Why masks agree under DDP without any communication of their own: every rank builds the same
model from the same seed, each method draws its random numbers from its own generator seeded by
``config.seed`` (the same on every rank), and DDP all-reduces gradients during ``backward``, so the
weights and the dense gradients that drop-and-grow methods (RigL, GraNet) rank are bitwise equal
on every rank, and so are the masks they choose. `masks_identical` checks this cheaply (one
all-gather of a 256-bit digest); `broadcast_masks` repairs a divergence (e.g. after loading
different checkpoints).

Wrapping order: ``method.setup(model, optimizer)`` then ``DistributedDataParallel(model)``, or the
other way round (``setup`` unwraps DDP). With DDP's default ``broadcast_buffers=True`` the mask
buffers are also re-broadcast from rank 0 at every forward, which is harmless when they agree.

Averaging: `average_state_dicts` is the pure, local function model soups use;
`average_state_dicts_across_ranks` does the same over the ranks of a process group, in
place. Both average floating tensors only, keep ``bool`` / integer buffers (masks,
``num_batches_tracked``), and re-apply the masks so pruned entries stay exactly zero.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from sparsecore.masks import MaskSet

__all__ = [
    "average_state_dicts",
    "average_state_dicts_across_ranks",
    "broadcast_masks",
    "masks_digest",
    "masks_identical",
]

MaskLike = MaskSet | Mapping[str, torch.Tensor]


def _as_dict(masks: MaskLike) -> dict[str, torch.Tensor]:
    return masks.masks() if isinstance(masks, MaskSet) else dict(masks)


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _comm_device(group: dist.ProcessGroup | None) -> torch.device:
    """Where collective buffers must live: the current GPU for NCCL, the CPU otherwise."""
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def masks_digest(masks: MaskLike) -> bytes:
    """SHA-256 of the names, shapes and bits of ``masks`` (order-independent in the names)."""
    digest = hashlib.sha256()
    for name, mask in sorted(_as_dict(masks).items()):
        digest.update(f"{name}{tuple(mask.shape)};".encode())
        digest.update(np.packbits(mask.detach().reshape(-1).cpu().numpy()).tobytes())
    return digest.digest()


def masks_identical(masks: MaskLike, group: dist.ProcessGroup | None = None) -> bool:
    """Whether every rank holds exactly the same masks (a collective: call it on all ranks).

    Returns ``True`` when ``torch.distributed`` is not initialised or has a single rank.
    """
    if not _active():
        return True
    digest = np.frombuffer(masks_digest(masks), dtype=np.int64).copy()
    local = torch.from_numpy(digest).to(_comm_device(group))
    gathered = [torch.empty_like(local) for _ in range(dist.get_world_size(group))]
    dist.all_gather(gathered, local, group=group)
    return all(torch.equal(g, gathered[0]) for g in gathered)


@torch.no_grad()
def broadcast_masks(masks: MaskLike, src: int = 0, group: dist.ProcessGroup | None = None) -> None:
    """Overwrite every rank's masks with those of rank ``src`` (in place; a collective).

    For a `sparsecore.masks.MaskSet` the update goes through
    `sparsecore.masks.MaskSet.update`, so newly masked weights (and optimizer state) are
    zeroed too. Masks are sent as one ``uint8`` buffer (gloo has no ``bool``).
    """
    if not _active():
        return
    named = sorted(_as_dict(masks).items())
    if not named:
        return
    device = _comm_device(group)
    flat = torch.cat([m.reshape(-1).to(device=device, dtype=torch.uint8) for _, m in named])
    dist.broadcast(flat, src=src, group=group)
    offset = 0
    for name, mask in named:
        keep = flat[offset : offset + mask.numel()].reshape(mask.shape).to(mask.device).bool()
        offset += mask.numel()
        if isinstance(masks, MaskSet):
            masks.update(name, keep)
        else:
            mask.copy_(keep)


def _mask_keys(state: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """``{param_key: mask_key}`` for every ``<param>_mask`` bool buffer shaped like its param."""
    found = {}
    for key, value in state.items():
        owner = key.removesuffix("_mask")
        if (
            key.endswith("_mask")
            and value.dtype == torch.bool
            and owner in state
            and state[owner].shape == value.shape
        ):
            found[owner] = key
    return found


def average_state_dicts(
    state_dicts: Sequence[Mapping[str, torch.Tensor]],
    weights: Sequence[float] | None = None,
) -> dict[str, torch.Tensor]:
    """Weighted average of state dicts with identical keys, shapes and masks (a model soup).

    Floating tensors are averaged (accumulated in float64, returned in their own dtype);
    ``bool`` and integer tensors (masks, ``num_batches_tracked``) are copied from the first state
    dict. A parameter with a mask buffer ``<param>_mask`` is multiplied by it afterwards, so its
    pruned entries are exactly zero.

    Args:
        state_dicts: Two or more state dicts (one is allowed and returned as a copy).
        weights: Non-negative weights, one per state dict (normalised to sum 1). Default: uniform.

    Returns:
        A new state dict; the inputs are not modified.

    Raises:
        ValueError: No state dicts, different keys, shapes, dtypes or masks (the message names the
            tensor), or bad weights.
    """
    if not state_dicts:
        raise ValueError("average_state_dicts: no state dicts given")
    first = state_dicts[0]
    if weights is None:
        weights = [1.0] * len(state_dicts)
    weights = [float(w) for w in weights]
    if len(weights) != len(state_dicts) or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(
            f"weights must be {len(state_dicts)} non-negative numbers with a positive sum, "
            f"got {weights}"
        )
    total = sum(weights)
    for i, other in enumerate(state_dicts[1:], start=1):
        if set(other) != set(first):
            diff = sorted(set(other) ^ set(first))
            raise ValueError(f"state dict {i} has different keys than state dict 0: {diff[:5]}")
        for key, value in first.items():
            theirs = other[key]
            if theirs.shape != value.shape or theirs.dtype != value.dtype:
                raise ValueError(
                    f"tensor {key!r}: state dict {i} has {theirs.dtype} {tuple(theirs.shape)}, "
                    f"state dict 0 has {value.dtype} {tuple(value.shape)}"
                )
            if value.dtype == torch.bool and not torch.equal(theirs, value):
                raise ValueError(
                    f"tensor {key!r} differs between state dict 0 and {i}; averaging models with "
                    "different masks would un-prune weights"
                )
    out: dict[str, torch.Tensor] = {}
    for key, value in first.items():
        if not value.is_floating_point():
            out[key] = value.detach().clone()
            continue
        acc = torch.zeros(value.shape, dtype=torch.float64, device=value.device)
        for w, sd in zip(weights, state_dicts, strict=True):
            acc.add_(sd[key].detach().to(torch.float64), alpha=w / total)
        out[key] = acc.to(value.dtype)
    for owner, mask_key in _mask_keys(out).items():
        if out[owner].is_floating_point():
            out[owner].masked_fill_(~out[mask_key].to(torch.bool), 0)
    return out


@torch.no_grad()
def average_state_dicts_across_ranks(
    model: nn.Module,
    masks: MaskLike | None = None,
    group: dist.ProcessGroup | None = None,
    check_masks: bool = True,
) -> None:
    """Replace every floating parameter and buffer of ``model`` by its mean over the ranks.

    In place and a collective. ``bool`` / integer buffers are left as each rank has them. Masks
    (``masks``, or the model's ``<param>_mask`` buffers) are re-applied afterwards so pruned
    entries stay exactly zero.

    Args:
        model: The model (DDP is unwrapped).
        masks: A `sparsecore.masks.MaskSet` or ``{param name: mask}``; ``None``: the
            model's own mask buffers.
        group: Process group (default: the world).
        check_masks: First verify with `masks_identical` that all ranks share the masks.

    Raises:
        RuntimeError: ``check_masks`` and the ranks' masks differ.
    """
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    state = model.state_dict()
    if masks is None:
        pairs = {owner: state[key] for owner, key in _mask_keys(state).items()}
    else:
        pairs = _as_dict(masks)
    if check_masks and not masks_identical(pairs, group):
        raise RuntimeError("masks differ across ranks; call broadcast_masks first")
    if not _active():
        return
    world = dist.get_world_size(group)
    for _key, value in state.items():
        if value.is_floating_point():
            dist.all_reduce(value, op=dist.ReduceOp.SUM, group=group)
            value.div_(world)
    for name, mask in pairs.items():
        if name in state:
            state[name].masked_fill_(~mask.to(torch.bool), 0)

"""FSDP2: masks sharded like their parameters, and exact distributed top-k without gathering.

Under ``torch.distributed.fsdp.fully_shard`` (FSDP2) every parameter is a ``DTensor`` sharded on
dim 0 (``Shard(0)``, ``torch.chunk`` rows: rank ``r`` holds the ``r``-th chunk). A mask that
lives next to such a parameter must be sharded the same way, and a *global* selection (global
magnitude, GraNet's global prune) must not all-gather the weights. This module provides both:

* `shard_like` / `shard_masks`: a full bool mask as a ``DTensor`` with the parameter's mesh and
  placements (``shard_masks`` registers them as ``<param>_mask`` buffers, the names `MaskSet`
  uses); `apply_sharded_masks` multiplies each local shard in place.
* `distributed_topk`: the keep-masks of the ``k`` highest scores over the concatenation of many
  sharded tensors, **bit for bit** the result of `sparsecore.select.topk_mask` on the gathered
  concatenation (ties: lower global flat index first). The ``k``-th largest value is found by a
  binary search over the order-preserving 64-bit integer image of the float64 scores, one
  ``all_reduce`` of a single count per bit (64 in all); ties at the threshold are assigned in
  global order from one ``all_gather`` of per-tensor tie counts. Communication: O(64 + ranks ·
  tensors) integers, independent of the model size.
* `global_magnitude_masks`, `sharded_drop_lowest`, `sharded_grow_highest`: the selections
  `sparsecore.select` makes (``select_global``, ``drop_lowest``, ``grow_highest``: what global
  magnitude pruning, RigL and GraNet use), on sharded tensors.
* `ShardedMasking`: hard masking of an FSDP2 model in an optimizer's step hooks (gradients masked
  before the step, weights after), the core's default mode, on local shards only.
* `PruningMethod.setup` on an FSDP2 model is in `sparsecore.fsdp_setup`: sharded mask sets and
  the selections of OneShotMagnitude, GMP and RigL on these helpers, bit for bit the
  single-process masks; other methods are refused at setup, naming the method (their
  selections need full tensors: plain ``select`` on a ``DTensor`` fails with ``Sharding
  propagation failed for aten.nonzero``, torch 2.15).

Checked with torch 2.15: ``fully_shard`` runs on CPU with the gloo backend (the tests train a
sharded model with two gloo processes). DDP is unchanged (`sparsecore.distributed`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.distributed as dist
from torch import nn

from sparsecore.select import check_density, check_scores, keep_count

__all__ = [
    "ShardedMasking",
    "apply_sharded_masks",
    "distributed_topk",
    "global_magnitude_masks",
    "local",
    "shard_like",
    "shard_masks",
    "sharded_drop_lowest",
    "sharded_grow_highest",
]

_SIGN = 0x7FFF_FFFF_FFFF_FFFF


def _dtensor_type() -> type | None:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - old torch
        return None
    return DTensor


def local(tensor: torch.Tensor) -> torch.Tensor:
    """The local shard of a ``DTensor`` (the tensor itself otherwise)."""
    dtensor = _dtensor_type()
    return tensor.to_local() if dtensor is not None and isinstance(tensor, dtensor) else tensor


def _check_sharding(name: str, tensor: torch.Tensor) -> None:
    dtensor = _dtensor_type()
    if dtensor is None or not isinstance(tensor, dtensor):
        return
    placements = tensor.placements
    if tensor.device_mesh.ndim != 1 or getattr(placements[0], "dim", None) != 0:
        raise ValueError(
            f"{name}: only 1-D meshes with Shard(0) (FSDP2's placement) are supported, got "
            f"{placements}"
        )


def _keys(scores: torch.Tensor) -> torch.Tensor:
    """Order-preserving int64 image of float64 scores (``-0.0`` counted as ``+0.0``)."""
    bits = (scores.detach().to(torch.float64).reshape(-1) + 0.0).view(torch.int64)
    return torch.where(bits < 0, bits ^ _SIGN, bits)


def _all_sum(value: int, group: dist.ProcessGroup | None) -> int:
    t = torch.tensor([value], dtype=torch.int64)
    if dist.is_initialized():
        dist.all_reduce(t, group=group)
    return int(t.item())


def distributed_topk(
    local_scores: Sequence[torch.Tensor], k: int, group: dist.ProcessGroup | None = None
) -> list[torch.Tensor]:
    """Keep-masks of the ``k`` globally highest scores, for this rank's shards.

    Args:
        local_scores: This rank's part of each tensor, in the same tensor order on every rank;
            the global order is tensor-major, then rank-major (``Shard(0)`` chunks), then flat.
        k: Entries kept in all, ``0 <= k <= global numel``.
        group: Process group (default: the world). Without a process group this is
            `sparsecore.select.topk_mask` on the concatenation.

    Returns:
        One bool mask per local tensor (its shape).

    Raises:
        ValueError: NaN scores, or ``k`` out of range.
    """
    for i, s in enumerate(local_scores):
        check_scores(s, f"local_scores[{i}]")
    keys = [_keys(s) for s in local_scores]
    total = _all_sum(sum(int(x.numel()) for x in keys), group)
    if not 0 <= k <= total:
        raise ValueError(f"k must lie in [0, {total}], got {k}")
    if k in (0, total):
        return [torch.full(s.shape, k > 0, dtype=torch.bool) for s in local_scores]
    flat = torch.cat(keys) if keys else torch.zeros(0, dtype=torch.int64)
    lo, hi = -(2**63), 2**63 - 1  # invariant: count(>= lo) >= k > count(>= hi + 1)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _all_sum(int((flat >= mid).sum()), group) >= k:
            lo = mid
        else:
            hi = mid - 1
    threshold = lo
    above = [x > threshold for x in keys]
    missing = k - _all_sum(sum(int(a.sum()) for a in above), group)
    ties = torch.tensor([int((x == threshold).sum()) for x in keys], dtype=torch.int64)
    world = dist.get_world_size(group) if dist.is_initialized() else 1
    rank = dist.get_rank(group) if dist.is_initialized() else 0
    table = [torch.zeros_like(ties) for _ in range(world)]
    if dist.is_initialized():
        dist.all_gather(table, ties, group=group)
    else:
        table = [ties]
    counts = torch.stack(table)  # (world, tensors)
    masks = []
    before = 0
    for t, (x, a) in enumerate(zip(keys, above, strict=True)):
        before_here = before + int(counts[:rank, t].sum())
        take = max(0, min(int(ties[t]), missing - before_here))
        keep = a.clone()
        if take:
            keep[(x == threshold).nonzero().squeeze(1)[:take]] = True
        masks.append(keep.reshape(local_scores[t].shape))
        before += int(counts[:, t].sum())
    return masks


def global_magnitude_masks(
    params: Mapping[str, torch.Tensor], density: float, group: dist.ProcessGroup | None = None
) -> dict[str, torch.Tensor]:
    """Global magnitude keep-masks (local shards) of sharded parameters at ``density``.

    Equal, gathered, to ``select_global({n: p.abs()}, density)`` on the full parameters. Plain
    tensors are taken as this rank's shards.
    """
    density = check_density(density)
    for name, p in params.items():
        _check_sharding(name, p)
    owned = [local(p).detach().abs() for p in params.values()]
    total = _all_sum(sum(int(o.numel()) for o in owned), group)
    masks = distributed_topk(owned, keep_count(total, density), group)
    return dict(zip(params, masks, strict=True))


def _active_topk(
    scores: torch.Tensor, where: torch.Tensor, k: int, group: dist.ProcessGroup | None
) -> torch.Tensor:
    values = local(scores).detach().reshape(where.shape).masked_select(where)
    chosen = distributed_topk([values], k, group)[0]
    return torch.zeros_like(where).masked_scatter_(where, chosen)


def sharded_drop_lowest(
    scores: torch.Tensor, mask: torch.Tensor, count: int, group: dist.ProcessGroup | None = None
) -> torch.Tensor:
    """`sparsecore.select.drop_lowest` on one ``Shard(0)`` tensor (local shards in and out)."""
    mask = local(mask).to(torch.bool)
    active = _all_sum(int(mask.sum()), group)
    if not 0 <= count <= active:
        raise ValueError(f"count must lie in [0, {active}] (active entries), got {count}")
    return _active_topk(scores, mask, active - count, group)


def sharded_grow_highest(
    scores: torch.Tensor, mask: torch.Tensor, count: int, group: dist.ProcessGroup | None = None
) -> torch.Tensor:
    """`sparsecore.select.grow_highest` on one ``Shard(0)`` tensor (local shards in and out)."""
    mask = local(mask).to(torch.bool)
    available = _all_sum(int((~mask).sum()), group)
    if not 0 <= count <= available:
        raise ValueError(f"count must lie in [0, {available}] (inactive entries), got {count}")
    return _active_topk(scores, ~mask, count, group) | mask


def shard_like(param: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``mask`` (full shape, the same on every rank, or already local) sharded like ``param``.

    Raises:
        ValueError: The shapes do not fit ``param``.
    """
    dtensor = _dtensor_type()
    if dtensor is None or not isinstance(param, dtensor):
        if mask.shape != param.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} != parameter {tuple(param.shape)}")
        return mask.to(torch.bool)
    _check_sharding("param", param)
    if tuple(mask.shape) == tuple(param.to_local().shape) and mask.shape != param.shape:
        return dtensor.from_local(
            mask.to(torch.bool),
            param.device_mesh,
            param.placements,
            shape=param.shape,
            stride=param.stride(),
        )
    if tuple(mask.shape) != tuple(param.shape):
        raise ValueError(f"mask shape {tuple(mask.shape)} != parameter {tuple(param.shape)}")
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(mask.to(torch.bool), param.device_mesh, param.placements)


def shard_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Register ``masks`` as ``<param>_mask`` DTensor buffers sharded like their parameters.

    Raises:
        ValueError: A mask names no parameter or does not fit it (checked before registering).
    """
    params = dict(model.named_parameters())
    missing = [n for n in masks if n not in params]
    if missing:
        raise ValueError(f"masks name no parameter of the model: {missing[:3]}")
    sharded = {n: shard_like(params[n], m) for n, m in masks.items()}
    for name, mask in sharded.items():
        module_name, _, pname = name.rpartition(".")
        module = model.get_submodule(module_name) if module_name else model
        module.register_buffer(f"{pname}_mask", mask)
    return sharded


@torch.no_grad()
def apply_sharded_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Zero the masked entries of every parameter's local shard (and of its gradient)."""
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        p = params[name]
        keep = local(mask).to(local(p).dtype)
        local(p).mul_(keep)
        if p.grad is not None:
            local(p.grad).mul_(keep)


class ShardedMasking:
    """Hard masking of a sharded model through optimizer step hooks (no gathering).

    Before each ``optimizer.step()`` the local gradient shards are masked, after it the local
    weight shards (what `MaskSet`'s default "hard" mode does for plain models). The masks are the
    ``DTensor`` buffers of `shard_masks`; update them in place (``local(mask).copy_(...)``).

    Args:
        model: The FSDP2 model.
        optimizer: Its optimizer.
        masks: Keep-masks by parameter name (full shape or local shards), see `shard_masks`.
    """

    def __init__(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, masks: Mapping[str, torch.Tensor]
    ) -> None:
        self.model = model
        self.masks = shard_masks(model, masks)
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, mask in self.masks.items():
                local(params[name]).mul_(local(mask).to(local(params[name]).dtype))
        self._handles = [
            optimizer.register_step_pre_hook(lambda *_: self._grads()),
            optimizer.register_step_post_hook(lambda *_: apply_sharded_masks(model, self.masks)),
        ]

    @torch.no_grad()
    def _grads(self) -> None:
        params = dict(self.model.named_parameters())
        for name, mask in self.masks.items():
            grad = params[name].grad
            if grad is not None:
                local(grad).mul_(local(mask).to(local(grad).dtype))

    def remove(self) -> None:
        """Remove the optimizer hooks (the mask buffers stay on the model)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

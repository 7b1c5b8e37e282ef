"""`PruningMethod.setup` on FSDP2 (``fully_shard``) models: sharded mask sets and selections.

When a method's targets are ``DTensor`` s, `PruningMethod.setup` builds the mask set with
`sharded_mask_set` (``DTensor`` mask buffers sharded like their parameters, every operation on
local shards, counts all-reduced), and the selections of the methods in `FSDP2_METHODS` go
through `sharded_prune_by_scores`, `sharded_random_masks` and `sharded_update_masks`, which
use `sparsecore.fsdp.distributed_topk`: bit for bit the single-process masks, without gathering
weights, scores or gradients. Other methods are refused at setup (`check_fsdp2_method`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from sparsecore.fsdp import (
    _check_sharding,
    _dtensor_type,
    distributed_topk,
    local,
    shard_like,
    sharded_drop_lowest,
    sharded_grow_highest,
)
from sparsecore.select import keep_count

__all__ = [
    "FSDP2_METHODS",
    "check_fsdp2_method",
    "is_sharded",
    "sharded_mask_set",
    "sharded_prune_by_scores",
    "sharded_random_masks",
    "sharded_update_masks",
]


def is_sharded(tensor: torch.Tensor | None) -> bool:
    """Whether ``tensor`` is a ``DTensor`` (an FSDP2 parameter)."""
    dtensor = _dtensor_type()
    return dtensor is not None and isinstance(tensor, dtensor)


#: Methods whose `PruningMethod.setup` runs on FSDP2 models (unstructured, hard masks).
FSDP2_METHODS = ("OneShotMagnitude", "GMP", "RigL")


def check_fsdp2_method(method: Any, targets: Sequence[Any], params: Mapping[str, Any]) -> bool:
    """Whether the targets are FSDP2 ``DTensor`` s; raise if ``method`` cannot run on them.

    Raises:
        ValueError: Sharded targets and a method outside `FSDP2_METHODS` (by class, so a
            subclass that changes the selection must opt in with ``fsdp2 = True``), a non-hard
            mask mode, a pattern other than unstructured, channel groups, or a mix of sharded and
            plain targets. Raised before the model is touched.
    """
    sharded = [is_sharded(params.get(t.name)) for t in targets]
    if not any(sharded):
        return False
    name = type(method).__name__
    if not all(sharded):
        raise ValueError(f"{name}: some targets are FSDP2 DTensors and some are not")
    if not vars(type(method)).get("fsdp2", False):
        raise ValueError(
            f"{name} does not support FSDP2 (fully_shard) models: its selection needs full "
            f"tensors. Supported on FSDP2: {', '.join(FSDP2_METHODS)} (unstructured, hard masks)"
        )
    from sparsecore.patterns import Unstructured

    bad = [t.name for t in targets if not isinstance(t.pattern, Unstructured)]
    if bad or getattr(method.config, "input_shape", None) is not None:
        raise ValueError(f"{name} on FSDP2: only the unstructured pattern is supported, got {bad}")
    if method.mask_mode != "hard":
        raise ValueError(f"{name} on FSDP2: only hard masks are supported ({method.mask_mode})")
    for t in targets:
        _check_sharding(t.name, params[t.name])
    return True


def _sharded_mask_set_class() -> type:
    from sparsecore.masks import MaskSet

    class ShardedMaskSet(MaskSet):
        """`MaskSet` whose masks are ``DTensor`` buffers sharded like their FSDP2 parameters.

        Every operation (updates, masking of weights, gradients and optimizer state, squash)
        acts on the local shards only; counts are all-reduced. Updates take local shards (or
        ``DTensor`` s) of the keep-masks.
        """

        sharded = True

        def __init__(self, model: nn.Module, targets: list, mode: str = "hard", soft_fn=None):
            super().__init__(model, targets, mode, soft_fn)
            for t in targets:
                module = self._modules[t.name]
                weight = module._parameters[t.param_name]
                ones = torch.ones(
                    local(weight).shape, dtype=torch.bool, device=local(weight).device
                )
                module._buffers[t.buffer_name] = shard_like(weight, ones)

        def nnz(self) -> dict[str, int]:
            counts = torch.tensor([int(local(m).sum()) for m in self.masks().values()])
            if dist.is_initialized():
                dist.all_reduce(counts)
            return dict(zip(self.targets, (int(c) for c in counts), strict=True))

        @torch.no_grad()
        def update(self, name: str, keep: torch.Tensor) -> None:
            mask = local(self.mask(name))
            keep = local(keep)
            if keep.shape != mask.shape or keep.dtype != torch.bool:
                raise ValueError(
                    f"mask for {name!r} must be a bool local shard of shape {tuple(mask.shape)}, "
                    f"got {keep.dtype} {tuple(keep.shape)}"
                )
            mask.copy_(keep)
            param = self.param(name)
            if self._originals is not None and name not in self._originals:
                self._originals[name] = local(param).detach().clone()
            if self.optimizer is not None:
                self._mask_state_of(param, mask)
            local(param).masked_fill_(~mask, 0)

        def _mask_state_of(self, param: torch.Tensor, mask: torch.Tensor) -> None:
            assert self.optimizer is not None
            keep = local(mask)
            for value in self.optimizer.state.get(param, {}).values():
                if isinstance(value, torch.Tensor) and local(value).shape == keep.shape:
                    local(value).masked_fill_(~keep, 0)

        @torch.no_grad()
        def apply(self) -> None:
            for name, param in self.params().items():
                local(param).masked_fill_(~local(self.mask(name)), 0)

        @torch.no_grad()
        def mask_grads(self) -> None:
            for name, param in self.params().items():
                if param.grad is not None:
                    local(param.grad).masked_fill_(~local(self.mask(name)), 0)

        @torch.no_grad()
        def rollback(self) -> None:
            for name, original in (self._originals or {}).items():
                local(self.param(name)).copy_(original)
            self._originals = None
            self.detach()

        @torch.no_grad()
        def squash(self) -> nn.Module:
            self.detach()
            for name, t in self.targets.items():
                local(self.param(name)).masked_fill_(~local(self.mask(name)), 0)
                delattr(self._modules[name], t.buffer_name)
            self.targets, self._modules, self._positions = {}, {}, {}
            return self.model

    return ShardedMaskSet


def sharded_mask_set(model: nn.Module, targets: list, mode: str = "hard", soft_fn=None) -> Any:
    """A `MaskSet` for an FSDP2 model (masks as ``DTensor`` buffers, local-shard operations)."""
    return _sharded_mask_set_class()(model, targets, mode, soft_fn)


def _numel(mask: torch.Tensor) -> int:
    return int(mask.numel())  # a DTensor's numel is the global one


def sharded_prune_by_scores(
    method: Any, scores: Mapping[str, torch.Tensor], sparsity: float, scope: str, only_active: bool
) -> None:
    """`sparsecore.baselines.prune_by_scores` (unstructured) on an FSDP2 model, bit for bit.

    Raises:
        ValueError: ``scope="global"`` where the layer floor (``min_per_layer``) would bind: the
            floor's re-ranking is not implemented on shards (the plain ranking, which the floor
            leaves unchanged when every layer keeps its floor, is).
    """
    masks = method.masks
    locals_ = {}
    for name, s in scores.items():
        s = local(s).to(torch.float64)
        locals_[name] = torch.where(local(masks.mask(name)), s, -torch.inf) if only_active else s
    density = 1.0 - sparsity
    if scope == "global":
        total = sum(_numel(masks.mask(n)) for n in scores)
        chosen = distributed_topk(list(locals_.values()), keep_count(total, density))
        keeps = dict(zip(locals_, chosen, strict=True))
        floor = getattr(method.config, "min_per_layer", 1)
        if floor:
            stats = torch.tensor(
                [[int(k.sum()), int((locals_[n] > -torch.inf).sum())] for n, k in keeps.items()]
            )
            if dist.is_initialized():
                dist.all_reduce(stats)
            short = [
                n for n, (c, a) in zip(keeps, stats.tolist(), strict=True) if c < min(floor, a)
            ]
            if short:
                raise ValueError(
                    f"{type(method).__name__} on FSDP2: the global ranking leaves {short[:3]} "
                    f"below min_per_layer={floor}; the floor is not implemented on shards "
                    "(lower the sparsity or set min_per_layer=0)"
                )
    else:
        keeps = {
            n: distributed_topk([s], keep_count(_numel(masks.mask(n)), density))[0]
            for n, s in locals_.items()
        }
    masks.update_all(keeps)


def _local_rows(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """This rank's ``Shard(0)`` chunk of ``full`` (``torch.chunk`` rows, as FSDP2)."""
    world = dist.get_world_size() if dist.is_initialized() else 1
    rank = dist.get_rank() if dist.is_initialized() else 0
    chunks = torch.chunk(full, world, dim=0)
    part = chunks[rank] if rank < len(chunks) else full[:0]
    return part.reshape(local(like).shape)


def sharded_random_masks(method: Any, distribution: str, density: float) -> None:
    """`PruningMethod.random_masks` on an FSDP2 model: the same draw, bit for bit.

    Every rank draws the full score tensor of one layer at a time from the method's generator
    (the same on every rank, as under DDP) and keeps its own rows: O(largest layer) transient
    memory, no communication beyond the top-k counts.
    """
    from sparsecore.distribution import layer_densities

    params = method.masks.params()
    densities = layer_densities(distribution, {n: p.shape for n, p in params.items()}, density)
    if densities is None:
        raise ValueError("random masks need per-layer densities: use 'uniform' or 'erk'")
    for name, param in params.items():
        scores = _local_rows(torch.rand(param.shape, generator=method.generator), param)
        k = keep_count(param.numel(), densities[name])
        method.masks.update(name, distributed_topk([scores], k)[0])


@torch.no_grad()
def sharded_update_masks(method: Any, fraction: float) -> dict[str, int]:
    """`DynamicSparseMethod.update_masks` on an FSDP2 model (drop lowest, grow highest)."""
    grads = method.dense_grads or {}
    nnz = method.masks.nnz()
    replaced = {}
    for name, weight in method.masks.params().items():
        mask = local(method.masks.mask(name))
        grad = grads.get(name)
        if grad is None:
            grad = torch.zeros_like(weight)
        count = min(method.drop_count(nnz[name], fraction), nnz[name])
        if count <= 0:
            replaced[name] = 0
            continue
        after_drop = sharded_drop_lowest(method.drop_scores(name, weight, grad), mask, count)
        grown = sharded_grow_highest(method.grow_scores(name, weight, grad), after_drop, count)
        method.masks.update(name, grown)
        replaced[name] = count
    return replaced

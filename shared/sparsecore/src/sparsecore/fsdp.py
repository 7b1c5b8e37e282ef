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

* `PruningMethod.setup` on an FSDP2 model: when the targets are ``DTensor`` s, setup builds a
  ``ShardedMaskSet`` (`sharded_mask_set`: ``DTensor`` mask buffers, every operation on local
  shards) and the selections of `FSDP2_METHODS` (``OneShotMagnitude`` and ``GMP``, layer-wise
  and global; ``RigL``'s random initial masks and drop/grow updates) go through
  `sharded_prune_by_scores`, `sharded_random_masks` and `sharded_update_masks`, bit for bit the
  single-process masks. Other methods are refused at setup with an error naming the method
  (`check_fsdp2_method`), before the model is touched: their selections (N:M, channel groups,
  the global layer floor when it binds, methods with their own scores) need full tensors
  (plain ``select`` on a ``DTensor`` fails with ``Sharding propagation failed for
  aten.nonzero``, torch 2.15).

Checked with torch 2.15: ``fully_shard`` runs on CPU with the gloo backend (the tests train a
sharded model with two gloo processes). DDP is unchanged (`sparsecore.distributed`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

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


# ---------------------------------------------------------------------- PruningMethod on FSDP2


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

"""One rank of the FSDP2 test (two processes started by test_fsdp.py, gloo on CPU).

Usage: ``fsdp_worker.py RANK WORLD STORE_FILE OUT_DIR`` (a file store, no port to race for).

Shards a small MLP with ``fully_shard`` (uneven row counts, quantised weights so that magnitude
ties abound), then checks against the same computation on the full tensors (gathered here only
to compare): global magnitude masks from the distributed threshold, masks sharded like their
parameters, a RigL-style drop/grow update on sharded weights and gradients, and that masked
training keeps pruned weights at zero. Prints ``stage:`` markers; writes OUT_DIR/rank{RANK}.json.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn


def stage(name: str) -> None:
    """Print a progress marker that survives an abort of the process."""
    print(f"stage: {name}", flush=True)


def main() -> None:
    torch.set_num_threads(1)
    rank, world, store, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    stage("init_process_group")
    dist.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=world,
        timeout=timedelta(seconds=90),
    )  # fmt: skip
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor, Shard

    from sparsecore.fsdp import (
        apply_sharded_masks,
        global_magnitude_masks,
        local,
        shard_masks,
        sharded_drop_lowest,
        sharded_grow_highest,
    )
    from sparsecore.select import drop_lowest, grow_highest, keep_count, select_global

    stage("shard")
    mesh = init_device_mesh("cpu", (world,))
    torch.manual_seed(0)  # same model on every rank
    model = nn.Sequential(
        nn.Linear(16, 13), nn.ReLU(), nn.Linear(13, 7), nn.ReLU(), nn.Linear(7, 4)
    )
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.round(p * 8) / 8)  # few distinct magnitudes: many ties
    full = copy.deepcopy(model)
    for layer in (model[0], model[2], model[4]):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    weights = {n: p for n, p in model.named_parameters() if n.endswith("weight")}
    ref_weights = {n: p for n, p in full.named_parameters() if n.endswith("weight")}

    def gather(local_mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        # uneven Shard(0) chunks: the global shape must be given
        return DTensor.from_local(
            local_mask, mesh, [Shard(0)], shape=like.shape, stride=like.stride()
        ).full_tensor()

    stage("global_magnitude")
    sharded = global_magnitude_masks(weights, 0.3)
    reference = select_global({n: p.abs() for n, p in ref_weights.items()}, 0.3)
    global_equal = all(torch.equal(gather(sharded[n], weights[n]), reference[n]) for n in weights)
    flat = torch.cat([p.detach().abs().flatten() for p in ref_weights.values()]).double()
    threshold = flat.sort(descending=True).values[keep_count(flat.numel(), 0.3) - 1]
    ties = int((flat == threshold).sum())  # entries at the threshold: some kept, some not
    kept_ties = sum(
        int(reference[n][p.detach().abs() == threshold].sum()) for n, p in ref_weights.items()
    )

    stage("shard_masks")
    masks = shard_masks(model, reference)
    layout_ok = all(
        isinstance(masks[n], DTensor)
        and masks[n].placements == weights[n].placements
        and local(masks[n]).shape == local(weights[n]).shape
        and torch.equal(local(masks[n]), sharded[n])
        for n in weights
    )
    buffers_ok = all(isinstance(model.get_buffer(f"{n}_mask"), DTensor) for n in weights)
    apply_sharded_masks(model, masks)

    stage("train")
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    data = torch.Generator().manual_seed(100 + rank)  # different data per rank
    rigl_equal, pruned_zero, changed = [], [], []
    for _ in range(3):
        x = torch.randn(8, 16, generator=data)
        y = torch.randint(0, 4, (8,), generator=data)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        for name, w in weights.items():
            mask_local = local(masks[name])
            active = int(gather(mask_local, w).sum())
            count = int(0.3 * active)
            dropped = sharded_drop_lowest(w.abs(), mask_local, count)
            score = local(w.grad).abs().masked_fill(mask_local & ~dropped, float("-inf"))
            grown = sharded_grow_highest(score, dropped, count)
            # the same update on the full tensors
            fw, fg, fm = w.full_tensor(), w.grad.full_tensor(), gather(mask_local, w)
            ref_drop = drop_lowest(fw.abs(), fm, count)
            ref_score = fg.abs().masked_fill(fm & ~ref_drop, float("-inf"))
            ref_new = grow_highest(ref_score, ref_drop, count)
            rigl_equal.append(torch.equal(gather(grown, w), ref_new))
            changed.append(not torch.equal(ref_new, fm))
            local(masks[name]).copy_(grown)
        apply_sharded_masks(model, masks)
        opt.step()
        apply_sharded_masks(model, masks)
        pruned_zero.append(
            all(bool((local(w)[~local(masks[n])] == 0).all()) for n, w in weights.items())
        )
    stage("sharded_masking")
    from sparsecore.fsdp import ShardedMasking

    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(16, 9), nn.ReLU(), nn.Linear(9, 4))
    fully_shard(net, mesh=mesh)
    net_weights = {n: p for n, p in net.named_parameters() if n.endswith("weight")}
    keep = {n: DTensor.from_local(m, mesh, [Shard(0)], shape=net_weights[n].shape,
                                  stride=net_weights[n].stride()).full_tensor()
            for n, m in global_magnitude_masks(net_weights, 0.5).items()}  # fmt: skip
    net_opt = torch.optim.Adam(net.parameters(), lr=0.01)
    hooks = ShardedMasking(net, net_opt, keep)
    for _ in range(3):
        x = torch.randn(8, 16, generator=data)
        net_opt.zero_grad()
        net(x).pow(2).mean().backward()
        net_opt.step()
    hooked_zero = all(
        bool((local(w)[~local(hooks.masks[n])] == 0).all()) for n, w in net_weights.items()
    )
    hooked_kept = sum(int(gather(local(hooks.masks[n]), w).sum()) for n, w in net_weights.items())
    hooks.remove()
    result = {
        "hooked_zero": hooked_zero,
        "hooked_kept": hooked_kept,
        "global_equal": global_equal,
        "ties": ties,
        "kept_ties": kept_ties,
        "layout_ok": layout_ok,
        "buffers_ok": buffers_ok,
        "rigl_equal": rigl_equal,
        "changed": changed,
        "pruned_zero": pruned_zero,
        "local_rows": [int(local(w).shape[0]) for w in weights.values()],
    }
    Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    stage("written")
    dist.barrier()
    dist.destroy_process_group()
    stage("done")


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)

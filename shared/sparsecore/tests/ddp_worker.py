"""One rank of the DDP test (run by test_distributed.py as a plain script, two at once).

Usage: ``torchrun --standalone --nproc-per-node 2 ddp_worker.py OUT_DIR``, or one process per
rank: ``ddp_worker.py RANK WORLD STORE_FILE OUT_DIR``.

Trains a small MLP with RigL under DistributedDataParallel (gloo, CPU) on rank-specific data,
records a digest of the masks after every mask update, then exercises the distributed helpers.
Writes OUT_DIR/rank{RANK}.json.

Started by hand, the ranks meet through a file store (no port to race for). Each stage prints
a ``stage:`` line so that a crash inside the C++ backend, which prints no Python traceback, still
shows where it happened. After the result is written and both ranks have passed a final barrier,
the process leaves with ``os._exit(0)``: the result is on disk, and the interpreter's teardown of
gloo's threads is not what this test is about.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

import sparsecore as sc
from sparsecore.distributed import (
    average_state_dicts_across_ranks,
    broadcast_masks,
    masks_digest,
    masks_identical,
)


def stage(name: str) -> None:
    """Print a progress marker that survives an abort of the process."""
    print(f"stage: {name}", flush=True)


def main() -> None:
    torch.set_num_threads(1)
    stage("init_process_group")
    if len(sys.argv) == 2:  # under torchrun: rank, world size and rendezvous come from the env
        out = sys.argv[1]
        dist.init_process_group("gloo", timeout=timedelta(seconds=90))
    else:
        rank, world, store, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
        dist.init_process_group(
            "gloo",
            init_method=f"file://{store}",
            rank=rank,
            world_size=world,
            timeout=timedelta(seconds=90),
        )
    rank, world = dist.get_rank(), dist.get_world_size()
    stage("ddp")
    torch.manual_seed(0)  # same model on every rank
    model = nn.Sequential(
        nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4)
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ddp = nn.parallel.DistributedDataParallel(model)
    # setup after wrapping: setup unwraps DDP. DDP copies rank 0's buffers (the masks) to every
    # rank at the start of each forward, so the digests are taken right after the optimizer
    # step that updated the masks, before the next forward: agreement there comes from the
    # method itself (identical all-reduced gradients, seeded choices), not from DDP.
    method = sc.RigL(sparsity=0.8, update_every=3, drop_fraction=0.3).setup(ddp, opt)
    stage("train")
    data = torch.Generator().manual_seed(100 + rank)  # different data per rank
    digests, changed = [], []
    previous = {k: v.clone() for k, v in method.masks.masks().items()}
    for _ in range(24):
        x = torch.randn(16, 32, generator=data)
        y = torch.randint(0, 4, (16,), generator=data)
        loss = nn.functional.cross_entropy(ddp(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if method.step % 3 == 0:
            digests.append(masks_digest(method.masks).hex())
            changed.append(
                any(not torch.equal(previous[k], m) for k, m in method.masks.masks().items())
            )
            previous = {k: v.clone() for k, v in method.masks.masks().items()}
    identical_after_training = masks_identical(method.masks)

    # cross-rank averaging: rank-specific perturbation of the kept weights, then the mean
    stage("average")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=data))
        method.masks.apply()
    local = {k: v.clone() for k, v in model.state_dict().items()}
    gathered = {}
    for key, value in local.items():
        parts = [torch.empty_like(value) for _ in range(world)]
        dist.all_gather(parts, value)
        gathered[key] = parts
    average_state_dicts_across_ranks(ddp, method.masks)
    state = model.state_dict()
    mean_ok = all(
        torch.allclose(state[k], torch.stack(gathered[k]).mean(0), atol=1e-6)
        for k in local
        if local[k].is_floating_point()
    )
    masks_kept = all(torch.equal(state[k], local[k]) for k in local if k.endswith("_mask"))
    pruned_zero = all(
        bool((state[n][~m] == 0).all())
        for n, m in ((k.removesuffix("_mask"), state[k]) for k in state if k.endswith("_mask"))
    )

    # divergence is detected, and broadcast_masks repairs it
    stage("repair")
    if rank == 1:
        mask = method.masks.mask("0.weight")
        flipped = mask.clone()
        flipped[0, 0] = ~flipped[0, 0]
        method.masks.update("0.weight", flipped)
    detected = not masks_identical(method.masks)
    broadcast_masks(method.masks, src=0)
    repaired = masks_identical(method.masks)
    zero_after_repair = bool((model[0].weight[~method.masks.mask("0.weight")] == 0).all())
    try:
        average_state_dicts_across_ranks(model)
        refused = False
    except RuntimeError:
        refused = True
    result = {
        "digests": digests,
        "changed": changed,
        "identical_after_training": identical_after_training,
        "sparsity": method.masks.sparsity(),
        "mean_ok": mean_ok,
        "masks_kept": masks_kept,
        "pruned_zero": pruned_zero,
        "detected": detected,
        "repaired": repaired,
        "zero_after_repair": zero_after_repair,
        "refused_when_identical": refused,
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

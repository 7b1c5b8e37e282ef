"""Under DDP (2 CPU ranks, gloo) every rank ends with identical masks and weights.

The ranks are forked from the test process (no re-import of torch, so the test stays fast);
each trains on its own data, so identical masks come from the all-reduced gradients and the
seeded initial mask, not from identical inputs.
"""

import importlib
import os
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from sparse_granet import GraNet

torch.set_num_threads(1)

STEPS = 40


def _worker(rank: int, world: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{os.path.join(out, 'rendezvous')}", rank=rank, world_size=world
    )
    try:
        torch.manual_seed(rank)  # different initial weights: DDP must broadcast rank 0's
        model = nn.Sequential(
            nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4)
        )
        ddp = nn.parallel.DistributedDataParallel(model)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        method = GraNet(
            sparsity=0.9, init_density=0.5, update_every=5, end_step=30, total_steps=STEPS, seed=7
        ).setup(ddp, opt)
        gen = torch.Generator().manual_seed(100 + rank)  # different data on each rank
        losses = []
        for _ in range(STEPS):
            x, y = torch.randn(8, 16, generator=gen), torch.randint(0, 4, (8,), generator=gen)
            loss = nn.functional.cross_entropy(ddp(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        torch.save(
            {
                "masks": {n: m.clone() for n, m in method.masks.masks().items()},
                "weights": {n: p.detach().clone() for n, p in method.masks.params().items()},
                "history": method.history,
                "losses": losses,
            },
            os.path.join(out, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(
    not dist.is_available() or sys.platform != "linux", reason="needs torch.distributed + fork"
)
def test_ddp_ranks_have_identical_masks(tmp_path: Path) -> None:
    # DDP's constructor imports torch._dynamo lazily; import it once here, before forking, rather
    # than once per rank.
    importlib.import_module("torch._dynamo")
    mp.start_processes(_worker, args=(2, str(tmp_path)), nprocs=2, start_method="fork")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert ranks[0]["losses"] != ranks[1]["losses"]  # the ranks saw different data
    assert [h["step"] for h in ranks[0]["history"]] == list(range(5, STEPS + 1, 5))
    for name, mask in ranks[0]["masks"].items():
        assert torch.equal(mask, ranks[1]["masks"][name]), name
        assert torch.equal(ranks[0]["weights"][name], ranks[1]["weights"][name]), name
    nnz = sum(int(m.sum()) for m in ranks[0]["masks"].values())
    total = sum(m.numel() for m in ranks[0]["masks"].values())
    assert nnz == int(total * 0.1 + 1e-6)
    assert sum(sum(h["regrown"].values()) for h in ranks[0]["history"]) > 0

"""One rank of the two-rank gloo run of ``test_ddp.py`` (run as a script, not collected)."""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from torch.nn import functional as F

from sparse_lapp import LAPP, PlainCNN, add_bypasses

SHAPE = (1, 8, 8)


def run(rank: int, mode: str) -> dict:
    """Train 12 steps on this rank's data; ``mode`` "ddp" or "bare" (LAPP on the bare module)."""
    torch.manual_seed(0)
    model = PlainCNN(SHAPE, 4, widths=(8, 16, 16))
    add_bypasses(model, LAPP.prunable_convs(model, SHAPE), torch.Generator().manual_seed(1))
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9)
    method = LAPP(sparsity=0.5, input_shape=SHAPE, prune_steps=10, ramp_delay=0.0)
    method.setup(ddp if mode == "ddp" else model, opt)  # "bare": the replica's own thresholds
    gen = torch.Generator().manual_seed(100 + rank)  # every rank sees different data
    local_grads = []
    for _ in range(12):
        x, y = torch.randn(16, *SHAPE, generator=gen), torch.randint(0, 4, (16,), generator=gen)
        loss = F.cross_entropy(ddp(x), y) + method.regularization()
        opt.zero_grad()
        loss.backward()
        if method.thresholds.grad is not None:
            local_grads.append(method.thresholds.grad.clone())
        opt.step()
    return {
        "thresholds": method.thresholds.detach().clone(),
        "keeps": [k.clone() for k in method.current_keep()],
        "local_grads": local_grads,
        "weights": {k: v.detach().clone() for k, v in model.named_parameters()},
    }


def main(rank: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    torch.save({mode: run(rank, mode) for mode in ("ddp", "bare")}, out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3])

"""Worker for test_distributed.py: one rank of a 2-process gloo run of sparse_sms.run.

Usage: python dist_worker.py RANK WORLD PORT OUT
"""

import sys

import torch
import torch.distributed as dist
from torch import nn

import sparse_sms as sms

torch.set_num_threads(1)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(64, 3)

    def forward(self, x):
        return self.fc(self.bn(self.conv(x)).relu().flatten(1))


def build_and_run(soup: str = "greedy"):
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (60,), generator=gen)
    x = torch.randn(60, 1, 4, 4, generator=gen) + y.view(-1, 1, 1, 1).float()
    torch.manual_seed(0)
    model = Net()

    def evaluate(m):
        m.eval()
        with torch.no_grad():
            acc = float((m(x[40:]).argmax(1) == y[40:]).float().mean())
        m.train()
        return acc

    cfg = sms.SMSConfig(
        sparsity=0.8, n_phases=2, n_ingredients=3, retrain_epochs=1, max_lr=0.1, soup=soup
    )
    loop = sms.make_train_fn(x[:40], y[:40], batch_size=10)
    trained = []

    def train_fn(m, method, ingredient):
        trained.append((ingredient.phase, ingredient.index))
        loop(m, method, ingredient)

    batches = [x[i : i + 10] for i in range(0, 40, 10)]
    return sms.run(model, train_fn, evaluate, cfg, bn_batches=batches), trained


def main(rank: int, world: int, port: int, out: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        result, trained = build_and_run()
        torch.save(
            {
                "state": result.model.state_dict(),
                "trained": trained,
                "scores": [p.ingredient_scores for p in result.phases],
                "selected": [p.selected for p in result.phases],
            },
            f"{out}.{rank}",
        )
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])

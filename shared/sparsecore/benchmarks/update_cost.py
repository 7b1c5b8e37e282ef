"""Cost of one RigL mask update vs the number of layers (16 ... 256).

An MLP of `L` square Linear layers (width 128, 80% sparse, ERK), Adam with its state populated by
one step, then one `RigL.update_masks` (drop-and-grow on every layer). Two variants are timed
interleaved in the same run (round-robin over repeats, medians):

`per-layer` (sparsecore today)
    `MaskSet.update` re-masks only the optimizer state of the layer it updates: O(k) for k layers.
`full re-mask` (the previous behaviour, reproduced here as the baseline)
    After each layer's update the optimizer state of *every* layer is re-masked: O(k * L).

The table reports the median milliseconds per update and the ratio; with `--json PATH` the
numbers are written too. Per-layer cost should stay flat as `L` grows.

Run: `uv run python shared/sparsecore/benchmarks/update_cost.py [--repeats 5] [--threads 2]`
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from sparsecore import RigL
from sparsecore.masks import MaskSet

WIDTH = 128


def make_model(layers: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(*[nn.Linear(WIDTH, WIDTH) for _ in range(layers)])


@contextmanager
def full_remask():
    """Patch `MaskSet.update` to re-mask every layer's state after each update (old cost)."""
    original = MaskSet.update

    def update(self: MaskSet, name: str, keep: torch.Tensor) -> None:
        original(self, name, keep)
        if self.mode == "hard" and self.optimizer is not None:
            self.mask_optimizer_state()

    MaskSet.update = update  # type: ignore[method-assign]
    try:
        yield
    finally:
        MaskSet.update = original  # type: ignore[method-assign]


def prepared(layers: int) -> RigL:
    model = make_model(layers)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    method = RigL(sparsity=0.8, update_every=10**9)
    method.setup(model, opt)
    x = torch.randn(32, WIDTH)
    model(x).square().mean().backward()
    opt.step()  # populates Adam's state
    method.dense_grads = {n: p.grad.detach().clone() for n, p in method.masks.params().items()}
    return method


def time_update(method: RigL, legacy: bool) -> float:
    start = time.perf_counter()
    if legacy:
        with full_remask():
            method.update_masks(0.3)
    else:
        method.update_masks(0.3)
    return (time.perf_counter() - start) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    print(f"{'layers':>6} {'per-layer ms':>13} {'full re-mask ms':>16} {'ratio':>7}")
    for layers in args.layers:
        method = prepared(layers)
        fast: list[float] = []
        slow: list[float] = []
        for _ in range(args.repeats):  # interleaved
            fast.append(time_update(method, legacy=False))
            slow.append(time_update(method, legacy=True))
        row = {
            "layers": layers,
            "per_layer_ms": statistics.median(fast),
            "full_remask_ms": statistics.median(slow),
        }
        row["ratio"] = row["full_remask_ms"] / row["per_layer_ms"]
        rows.append(row)
        print(
            f"{layers:>6} {row['per_layer_ms']:>13.1f} {row['full_remask_ms']:>16.1f} "
            f"{row['ratio']:>6.1f}x"
        )
    if args.json is not None:
        args.json.write_text(json.dumps({"threads": args.threads, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Masking overhead of a training step: dense vs sparsecore ``hard`` vs torch.ao.pruning.

A 4-layer MLP (width 1024, batch 256) with a fixed 90% mask, SGD with momentum, CPU, 2 threads.
The three variants are timed interleaved in the same run (round-robin over repeats), and the table
reports the median step time of each and its ratio to dense.

Run: ``uv run python shared/sparsecore/benchmarks/overhead.py [--repeats 7] [--steps 20]``
(``--clock cpu --threads 1`` times process CPU time instead of wall time: steadier on a shared
machine, where other processes' load inflates wall time unevenly).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from sparsecore import OneShotMagnitude

WIDTH, DEPTH, BATCH = 1024, 4, 256


def make_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for _ in range(DEPTH - 1):
        layers += [nn.Linear(WIDTH, WIDTH), nn.ReLU()]
    layers.append(nn.Linear(WIDTH, WIDTH))
    return nn.Sequential(*layers)


def dense_variant() -> tuple[nn.Module, torch.optim.Optimizer]:
    model = make_mlp()
    return model, torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)


def sparsecore_variant() -> tuple[nn.Module, torch.optim.Optimizer]:
    model = make_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    OneShotMagnitude(sparsity=0.9).setup(model, opt)
    return model, opt


def torch_ao_variant() -> tuple[nn.Module, torch.optim.Optimizer]:
    from torch.ao.pruning import WeightNormSparsifier

    model = make_mlp()
    sparsifier = WeightNormSparsifier(
        sparsity_level=0.9, sparse_block_shape=(1, 1), zeros_per_block=1
    )
    config = [{"tensor_fqn": f"{i}.weight"} for i in range(0, 2 * DEPTH, 2)]
    sparsifier.prepare(model, config)
    sparsifier.step()
    return model, torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def step_timer(
    model: nn.Module, opt: torch.optim.Optimizer, clock: Callable[[], float] = time.perf_counter
) -> Callable[[int], float]:
    x = torch.randn(BATCH, WIDTH)
    y = torch.randn(BATCH, WIDTH)

    def run(steps: int) -> float:
        start = clock()
        for _ in range(steps):
            loss = nn.functional.mse_loss(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return (clock() - start) / steps

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="wall")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    variants = {
        "dense": dense_variant(),
        "sparsecore hard": sparsecore_variant(),
        "torch.ao.pruning": torch_ao_variant(),
    }
    timers = {name: step_timer(*pair, CLOCKS[args.clock]) for name, pair in variants.items()}
    for timer in timers.values():  # warm-up
        timer(3)
    times: dict[str, list[float]] = {name: [] for name in timers}
    for _ in range(args.repeats):
        for name, timer in timers.items():
            times[name].append(timer(args.steps))
    dense = statistics.median(times["dense"])
    print(
        f"MLP {DEPTH}x{WIDTH}, batch {BATCH}, 90% mask, {args.threads} threads, "
        f"{args.clock} clock, median of {args.repeats} x {args.steps} steps"
    )
    print(f"{'variant':<18} {'ms/step':>9} {'vs dense':>9}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<18} {median * 1e3:>9.2f} {median / dense:>8.3f}x")


if __name__ == "__main__":
    main()

"""Channel pruning that shrinks a trained-like CIFAR ResNet: sparsecore's groups vs Torch-Pruning.

Run:  python shared/sparsecore/benchmarks/channel_pruning.py [--threads 2] [--repeats 7]
      [--iters 3] [--ratios 0.3,0.5,0.7] [--out r.json]

The model is ``sparsecore.bench.models.ResNet`` (3×32×32 inputs, width 64, stages of 64 / 128 /
256 channels with BatchNorm and residual blocks, global pooling, Linear), with BatchNorm affine
parameters and running statistics set as in a trained network (``γ ~ U(0.5, 1.5)``,
``β ~ N(0, 0.2²)``, ``μ ~ N(0, 0.2²)``, ``σ² ~ U(0.5, 1.5)``). At each channel ratio:

* **sparsecore**: ``OneShotMagnitude(pattern="channel", sparsity=r, input_shape=(3, 32, 32))``
  (channel groups, layer-wise, the classifier excluded) → ``finalize()`` →
  ``export.remove_channels``. The shrunk model is checked against the masked one (1e-4 on the
  batch; ``remove_channels`` itself checks 1e-5 on its example).
* **torch-pruning**: ``tp.pruner.MagnitudePruner`` with ``MagnitudeImportance(p=1)`` (the L1
  criterion sparsecore's magnitude uses), the same ratio, the classifier ignored, one step.
* **sparsecore per-tensor** (MACs and parameters only): the same call without ``input_shape``,
  which is what issue 40 measured: every masked channel still emits its BatchNorm shift and
  residual partners are masked independently, so ``remove_channels`` can remove almost nothing.

Latency: batch 32, CPU, ``torch.inference_mode``; every model is timed once per repeat, the order
rotating between repeats (interleaved, so machine noise hits all of them), ``--iters`` forwards per
timing; the median over repeats is used. ``--clock cpu`` (with ``--threads 1``) times the calling
thread's CPU time instead of wall time: on a shared, oversubscribed machine that measures the work
of the forward pass without the time spent waiting for a core. ``latency ratio`` = dense median /
model median, ``efficiency`` = latency ratio / MACs ratio (1.0: time falls exactly as fast as MACs).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import platform
import statistics
import sys
import time

import torch
from torch import nn

import sparsecore as sc
from sparsecore.bench.models import ResNet
from sparsecore.evaluation import count_flops, count_params
from sparsecore.export import remove_channels

SHAPE = (3, 32, 32)


def build(width: int, blocks: tuple[int, int, int], seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = ResNet(SHAPE, 10, width=width, blocks=blocks)
    g = torch.Generator().manual_seed(seed + 1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=g) + 0.5
            m.bias.data = torch.randn(n, generator=g) * 0.2
            m.running_mean = torch.randn(n, generator=g) * 0.2
            m.running_var = torch.rand(n, generator=g) + 0.5
    return model.eval()


def sparsecore_pruned(
    model: nn.Module, ratio: float, groups: bool, round_to: int | None = None
) -> tuple[nn.Module, float]:
    model = copy.deepcopy(model)
    shape = SHAPE if groups else None
    method = sc.OneShotMagnitude(
        pattern="channel",
        sparsity=ratio,
        input_shape=shape,
        round_to=round_to,
        exclude=("fc.weight",),
    ).setup(model)
    start = time.perf_counter()
    model.eval()
    x = torch.randn(8, *SHAPE, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want = model(x)
    method.finalize()
    surgery = logging.getLogger("sparsecore.export.surgery")
    level = surgery.level
    surgery.setLevel(logging.WARNING if groups else logging.ERROR)  # per-tensor: kept, known
    try:
        remove_channels(model, x[:4])
    finally:
        surgery.setLevel(level)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        err = float((model(x) - want).abs().max())
    if err > 1e-4:
        raise AssertionError(f"shrunk model differs from the masked one by {err}")
    return model.eval(), seconds


def tp_pruned(
    model: nn.Module, ratio: float, round_to: int | None = None
) -> tuple[nn.Module, float]:
    import torch_pruning as tp

    model = copy.deepcopy(model)
    start = time.perf_counter()
    pruner = tp.pruner.MagnitudePruner(
        model,
        torch.zeros(1, *SHAPE),
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=ratio,
        ignored_layers=[model.fc],
        round_to=round_to,
    )
    pruner.step()
    return model.eval(), time.perf_counter() - start


def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {n: tuple(p.shape) for n, p in model.named_parameters()}


@torch.inference_mode()
def time_all(
    models: dict[str, nn.Module], x: torch.Tensor, repeats: int, iters: int, clock
) -> dict[str, list[float]]:
    for model in models.values():  # warm-up
        model(x)
    names = list(models)
    times: dict[str, list[float]] = {n: [] for n in names}
    for rep in range(repeats):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            start = clock()
            for _ in range(iters):
                models[name](x)
            times[name].append((clock() - start) / iters)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--blocks", default="1,1,1", help="basic blocks per stage")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--ratios", default="0.3,0.5,0.7")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--round-to",
        type=int,
        default=None,
        help="also run both with kept widths rounded down to multiples of this (e.g. 16)",
    )
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="cpu: the calling thread's CPU time (needs --threads 1; robust on a shared machine)",
    )
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    if args.clock == "cpu" and args.threads != 1:
        parser.error("--clock cpu needs --threads 1 (other threads' work would not be counted)")
    torch.set_num_threads(args.threads)
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    blocks = tuple(int(b) for b in args.blocks.split(","))
    ratios = [float(r) for r in args.ratios.split(",")]
    dense = build(args.width, blocks, args.seed)  # type: ignore[arg-type]
    x = torch.randn(args.batch, *SHAPE, generator=torch.Generator().manual_seed(1))
    base_macs, base_params = count_flops(dense, x).dense, count_params(dense)[0]
    models: dict[str, nn.Module] = {"dense": dense}
    rows = []
    for ratio in ratios:
        ours, ours_s = sparsecore_pruned(dense, ratio, groups=True)
        theirs, theirs_s = tp_pruned(dense, ratio)
        legacy, _ = sparsecore_pruned(dense, ratio, groups=False)
        same = shapes(ours) == shapes(theirs)
        variants = [("sparsecore", ours, ours_s, same), ("torch-pruning", theirs, theirs_s, None)]
        if args.round_to:
            r_ours, r_ours_s = sparsecore_pruned(dense, ratio, True, args.round_to)
            r_theirs, r_theirs_s = tp_pruned(dense, ratio, args.round_to)
            r_same = shapes(r_ours) == shapes(r_theirs)
            variants += [
                (f"sparsecore round_to={args.round_to}", r_ours, r_ours_s, r_same),
                (f"torch-pruning round_to={args.round_to}", r_theirs, r_theirs_s, None),
            ]
        for name, model, _, _ in variants:
            models[f"{name}@{ratio}"] = model
        variants.append(("sparsecore per-tensor", legacy, None, None))
        for name, model, seconds, same_shapes in variants:
            rows.append(
                {
                    "variant": name,
                    "ratio": ratio,
                    "macs_ratio": base_macs / count_flops(model, x).dense,
                    "params_ratio": base_params / count_params(model)[0],
                    "prune_s": seconds,
                    "same_shapes_as_torch_pruning": same_shapes,
                }
            )
        print(f"ratio {ratio}: pruned (same shapes as Torch-Pruning: {same})", flush=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    times = time_all(models, x, args.repeats, args.iters, clock)
    print(f"load average {load:.1f} before timing, clock: {args.clock}")
    dense_ms = statistics.median(times["dense"]) * 1e3
    print(
        f"\ndense: {base_macs / 1e9:.2f} GMACs, {base_params / 1e6:.2f} M params, {dense_ms:.1f} ms"
    )
    header = (
        f"{'variant':<28} {'ratio':>5} {'MACs ÷':>7} {'params ÷':>8} {'ms':>7} {'latency ÷':>9}"
    )
    print(header + f" {'efficiency':>10}")
    for row in rows:
        key = f"{row['variant']}@{row['ratio']}"
        if key in times:
            ms = statistics.median(times[key]) * 1e3
            row["latency_ms"] = ms
            row["latency_ratio"] = dense_ms / ms
            row["efficiency"] = row["latency_ratio"] / row["macs_ratio"]
            timing = f"{ms:7.1f} {row['latency_ratio']:9.2f} {row['efficiency']:10.2f}"
        else:
            timing = f"{'-':>7} {'-':>9} {'-':>10}"
        print(
            f"{row['variant']:<28} {row['ratio']:5.2f} {row['macs_ratio']:7.2f} "
            f"{row['params_ratio']:8.2f} {timing}"
        )
    result = {
        "benchmark": "channel_pruning",
        "command": " ".join(["python", *sys.argv]),
        "model": f"ResNet(3x32x32, width {args.width}, blocks {blocks}), trained-like BatchNorm",
        "batch": args.batch,
        "threads": args.threads,
        "clock": args.clock,
        "load_average": load,
        "repeats": args.repeats,
        "iters": args.iters,
        "dense": {"macs": base_macs, "params": base_params, "latency_ms": dense_ms},
        "rows": rows,
        "times_ms": {k: [t * 1e3 for t in v] for k, v in times.items()},
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Reproduce LAPP's central claim at CPU scale: ResNet (BatchNorm) on digits, 50% / 70% FLOPs cut.

Variants, all trained from scratch with the same optimizer, schedule and epoch budget, ≥ 3 seeds:

* ``dense``: the full ResNet;
* ``scratch-E`` / ``scratch-B``: the uniform-width network of (at most) the target FLOPs (every
  prunable layer at the same keep ratio, as wide as the budget allows; no bypass), freshly
  initialised and trained for the same epochs (E) or the same computation (B, capped at 2×,
  `sparsecore.evaluation.scratch_budgets`);
* ``l1-filter``: GMP-style channel pruning: the L1 norm of each filter ranks the channels, the
  per-layer keep count follows the cubic ramp over the same pruning window as LAPP down to the
  uniform widths above, then training continues (fine-tuning) with frozen masks;
* ``lapp``: LAPP (bypasses, learnable thresholds, FLOPs constraint, freeze, compaction).

Every pruned model is physically compacted with `sparsecore.export.remove_channels`; the
table's FLOPs ratio is `sparsecore.evaluation.count_flops` of the compacted model over the
dense one (bypasses included for LAPP); params and CPU latency (batch 256, median of interleaved
repeats against the dense model) are in the notes and the JSON.

Claim tested, per target: mean accuracy of LAPP ≥ mean accuracy of scratch-E, of scratch-B and of
l1-filter (all at FLOPs ≤ the target's budget). It holds only if all six comparisons hold.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparse_lapp import LAPP, add_bypasses, analyze, compact
from sparsecore import PruningMethod
from sparsecore.bench import Task, evaluate, load_task, make_model, train
from sparsecore.evaluation import (
    Row,
    compare_latency,
    count_flops,
    count_params,
    format_table,
    over_seeds,
    scratch_budgets,
    write_results,
)
from sparsecore.export import remove_channels
from sparsecore.patterns import Channel
from sparsecore.select import topk_mask

HERE = Path(__file__).resolve().parent
CLAIM = (
    "at 50% and 70% FLOPs reduction (ResNet with BatchNorm on digits), LAPP's mean accuracy is "
    ">= that of the uniform-width network of equal FLOPs trained from scratch (Scratch-E and "
    "Scratch-B) and of L1-norm filter pruning with fine-tuning"
)


class L1FilterPruning(PruningMethod):
    """Gradual L1-norm filter pruning (hard channel masks) to fixed per-layer widths."""

    name = "l1-filter"
    mask_mode = "hard"
    supported_patterns = (Channel,)

    def __init__(self, units: list, widths: list[int], prune_steps: int) -> None:
        params = tuple(p for u in units for p in u.params)
        super().__init__(sparsity=0.5, pattern="channel", targets=params)
        self.units, self.widths, self.prune_steps = units, widths, prune_steps

    def on_after_optimizer_step(self) -> None:  # noqa: D102
        if self.step > self.prune_steps:
            return
        progress = 1.0 - (1.0 - min(self.step / self.prune_steps, 1.0)) ** 3  # cubic ramp
        params = self.masks.params()
        for unit, width in zip(self.units, self.widths, strict=True):
            keep_n = round(unit.channels - (unit.channels - width) * progress)
            norms = params[unit.params[0]].detach().abs().flatten(1).sum(1)
            keep = topk_mask(norms, keep_n)
            for name in unit.params:
                shape = self.masks.mask(name).shape
                self.masks.update(name, Channel().expand(keep, shape).contiguous())


def uniform_widths(task: Task, budget_ratio: float) -> tuple[list[Any], list[int]]:
    """Units of the plain ResNet and the widest uniform widths with FLOPs <= the budget."""
    fm = analyze(make_model("resnet", task), task.input_shape)
    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        widths = [max(1, math.floor(mid * u.channels)) for u in fm.units]
        if float(fm.macs([float(w) for w in widths])) <= budget_ratio * fm.original_macs:
            lo = mid
        else:
            hi = mid
    return fm.units, [max(1, math.floor(lo * u.channels)) for u in fm.units]


def narrow_model(task: Task, units: list, widths: list[int], seed: int) -> nn.Module:
    """The uniform-width ResNet, freshly initialised (seeded)."""
    model = make_model("resnet", task, seed=seed)
    masks = {}
    params = dict(model.named_parameters())
    for unit, width in zip(units, widths, strict=True):
        keep = torch.arange(unit.channels) < width
        for name in unit.params:
            masks[name] = Channel().expand(keep, params[name].shape).contiguous()
    remove_channels(model, torch.zeros(2, *task.input_shape), masks)
    torch.manual_seed(seed)
    for module in model.modules():
        if hasattr(module, "reset_parameters") and module is not model:
            module.reset_parameters()
    return model


def measure(model: nn.Module, dense: nn.Module, task: Task, x1: torch.Tensor) -> dict[str, Any]:
    """FLOPs ratio, params and latency ratio of a compacted ``model`` against ``dense``."""
    model.eval()
    dense.eval()
    xb = task.x_test[:256]
    with torch.no_grad():
        lat = compare_latency(lambda: model(xb), lambda: dense(xb), warmup=2, repeats=10)
    return {
        "flops_ratio": count_flops(model, x1).dense / count_flops(dense, x1).dense,
        "params": count_params(model)[0],
        "latency_ratio": float(lat),
    }


@dataclass
class Context:
    """What every run shares."""

    task: Task
    fit: dict[str, Any]
    x1: torch.Tensor
    dense_params: int
    prune_steps: int


def average(info: list[dict[str, Any]]) -> dict[str, float]:
    """Mean of every measurement over seeds."""
    return {k: statistics.fmean(d[k] for d in info) for k in info[0]}


def _finish(ctx: Context, model: nn.Module, info_list: list, acc: float, **more: float) -> Any:
    info = measure(model, make_model("resnet", ctx.task), ctx.task, ctx.x1)
    info.update(more)
    info_list.append(info)
    return acc, {"sparsity": 1 - info["params"] / ctx.dense_params, **info}


def run_dense(ctx: Context, info_list: list, seed: int) -> Any:
    """Dense ResNet."""
    model = make_model("resnet", ctx.task, seed=seed)
    result = train(model, ctx.task, seed=seed, **ctx.fit)
    return _finish(ctx, model, info_list, result.accuracy)


def run_scratch(
    ctx: Context, info_list: list, units: list, widths: list[int], budget: int, seed: int
) -> Any:
    """Uniform-width network of equal FLOPs, from scratch, for ``budget`` epochs."""
    model = narrow_model(ctx.task, units, widths, seed)
    result = train(model, ctx.task, seed=seed, **{**ctx.fit, "epochs": budget})
    return _finish(ctx, model, info_list, result.accuracy)


def run_l1(ctx: Context, info_list: list, units: list, widths: list[int], seed: int) -> Any:
    """Gradual L1 filter pruning to the uniform widths, fine-tuned, compacted."""
    model = make_model("resnet", ctx.task, seed=seed)
    method = L1FilterPruning(units, widths, ctx.prune_steps)
    train(model, ctx.task, method, seed=seed, **ctx.fit)
    method.finalize()
    remove_channels(model, ctx.task.x_test[:16])
    return _finish(ctx, model, info_list, evaluate(model, ctx.task.x_test, ctx.task.y_test))


def run_lapp(ctx: Context, info_list: list, target: float, seed: int) -> Any:
    """LAPP: bypasses, learnable thresholds under the FLOPs constraint, freeze, compaction."""
    model = make_model("resnet", ctx.task, seed=seed)
    convs = LAPP.prunable_convs(model, ctx.task.input_shape)
    add_bypasses(model, convs, torch.Generator().manual_seed(seed))
    method = LAPP(
        sparsity=target,
        input_shape=ctx.task.input_shape,
        prune_steps=ctx.prune_steps,
        seed=seed,
    )
    train(model, ctx.task, method, seed=seed, **ctx.fit)
    learned = method.learned_ratio
    moved = method.projection_removed + method.projection_added
    small = compact(method, ctx.task.x_test[:16])
    acc = evaluate(small, ctx.task.x_test, ctx.task.y_test)
    return _finish(ctx, small, info_list, acc, learned_ratio=learned, projection_moved=moved)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings (CI)")
    from sparsecore.evaluation.paths import default_results_path  # quick: tmp

    parser.add_argument("--out", default=default_results_path(__file__, argv))
    parser.add_argument("--epochs", type=int, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    task = load_task("digits")
    epochs = args.epochs or (1 if args.quick else 12)
    prune_epochs = max(1, epochs // 4)
    seeds = [0] if args.quick else [0, 1, 2, 3, 4]
    targets = [0.5] if args.quick else [0.5, 0.7]
    if args.quick:
        task = task.subset(num_train=256)
    steps_per_epoch = math.ceil(task.num_train / 128)
    prune_steps = prune_epochs * steps_per_epoch
    x1 = task.x_test[:1]
    fit = {"epochs": epochs, "progress": not args.quick}
    rows: list[Row] = []
    extras: dict[str, dict[str, float]] = {}
    info: list[dict[str, Any]]

    ctx = Context(task, fit, x1, count_params(make_model("resnet", task))[0], prune_steps)
    rows.append(over_seeds("dense", seeds, partial(run_dense, ctx, info := [])))
    extras["dense"] = average(info)
    dense_flops = count_flops(make_model("resnet", task), x1).dense
    for target in targets:
        tag = f"{round(target * 100)}%"
        units, widths = uniform_widths(task, 1.0 - target)
        pruned_flops = count_flops(narrow_model(task, units, widths, 0), x1).dense
        e_epochs, b_epochs = scratch_budgets(epochs, pruned_flops, dense_flops)
        for name, budget in ((f"scratch-E {tag}", e_epochs), (f"scratch-B {tag}", b_epochs)):
            run = partial(run_scratch, ctx, info := [], units, widths, budget)
            rows.append(over_seeds(name, seeds, run))
            rows[-1].note = f"{budget} epochs"
            extras[name] = average(info)
        run = partial(run_l1, ctx, info := [], units, widths)
        rows.append(over_seeds(f"l1-filter {tag}", seeds, run))
        extras[f"l1-filter {tag}"] = average(info)
        rows.append(over_seeds(f"lapp {tag}", seeds, partial(run_lapp, ctx, info := [], target)))
        extras[f"lapp {tag}"] = average(info)
    for row in rows:
        e = extras[row.variant]
        note = f"params {e['params']:.0f}, latency x{e['latency_ratio']:.2f}"
        if "learned_ratio" in e:
            note += f", learned FLOPs {e['learned_ratio']:.3f}"
            note += f", projected {e['projection_moved']:.1f} ch"
        row.note = f"{row.note}; {note}" if row.note else note
    by = {r.variant: r.mean for r in rows}
    checks = []
    for target in targets:
        tag = f"{round(target * 100)}%"
        for base in ("scratch-E", "scratch-B", "l1-filter"):
            ok = by[f"lapp {tag}"] >= by[f"{base} {tag}"]
            checks.append((f"lapp {tag} >= {base} {tag}", ok))
    holds = all(ok for _, ok in checks)
    print(format_table(rows))
    for text, ok in checks:
        print(f"  {'yes' if ok else 'NO '}  {text}")
    gap = 100 * (by.get("lapp 50%", math.nan) - by["dense"])
    print(f"  info: lapp 50% - dense = {gap:+.2f} points")
    command = "python benchmarks/reproduce.py" + (" --quick" if args.quick else "")
    write_results(
        args.out,
        "lapp",
        "digits",
        CLAIM,
        holds,
        rows,
        command,
        epochs=epochs,
        prune_epochs=prune_epochs,
        seeds=seeds,
        targets=targets,
        checks=[{"check": t, "holds": ok} for t, ok in checks],
        measurements=extras,
    )
    print(f"claim: {'holds' if holds else 'does not hold'}: {CLAIM}")
    return 0


if __name__ == "__main__":
    start = time.perf_counter()
    code = main()
    print(f"wall time {time.perf_counter() - start:.0f} s", file=sys.stderr)
    sys.exit(code)

"""The comparison protocol every result in this project follows.

From Liu et al., "Rethinking the Value of Network Pruning" (ICLR 2019, arXiv 1810.05270) and
Shiwei Liu and Zhangyang Wang, "Ten Lessons We Have Learned in the New 'Sparseland': A Short
Handbook for Sparse Neural Network Researchers" (arXiv 2302.02596), whose reporting rules are
checked by `sparsecore.evaluation.sparseland`:

* every variant runs over ≥ 3 seeds and is reported as mean ± std (`over_seeds`);
* the dense baseline is in the same table, trained with the same epoch budget;
* sparsity, effective FLOPs (relative to the dense model) and wall time are reported next to the
  metric, not only the metric;
* structured methods are compared with Scratch-E and Scratch-B: the pruned architecture trained
  from scratch for the same epochs, and for the same FLOPs (`scratch_budgets`).

Results are written as JSON by `write_results` in the format of the reproduction contract:
``{"method", "task", "claim", "holds", "rows": [...], "command", "python", "torch", "machine"}``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

__all__ = [
    "MIN_SEEDS",
    "SCRATCH_B_MAX_FACTOR",
    "Evaluator",
    "Row",
    "check_protocol",
    "failed_row",
    "format_table",
    "machine_info",
    "over_seeds",
    "plot_rows",
    "scratch_budgets",
    "write_results",
]

#: Fewest seeds a reported comparison may use.
MIN_SEEDS = 3
#: Cap on Scratch-B's epoch multiplier (the paper doubles the epochs at most on ImageNet).
SCRATCH_B_MAX_FACTOR = 2.0

RunResult = float | tuple[float, Mapping[str, Any]]


class Evaluator(Protocol):
    """Anything that scores a model (higher is better), e.g. test accuracy on a task."""

    def __call__(self, model: nn.Module) -> float:
        """The metric of ``model``."""
        ...


@dataclass
class Row:
    """One line of a comparison table: a variant summarised over seeds.

    Attributes:
        variant: Name of the variant (``"dense"``, ``"rigl"``, ``"granet"``, ...).
        sparsity: Parameter sparsity over the pruned tensors (mean over seeds; NaN if unknown).
        flops_ratio: Effective inference FLOPs relative to the dense model (NaN if unknown).
        metric: Name of the metric (``"accuracy"``).
        mean: Mean of the metric over seeds (NaN for a failed row).
        std: Sample standard deviation over seeds (0 for one seed).
        seeds: Per-seed metric values, in seed order.
        wall_s: Mean wall-clock seconds per seed.
        note: Free text; ``"failed: <reason>"`` or ``"skipped: <reason>"`` for rows that did
            not run.
    """

    variant: str
    sparsity: float
    flops_ratio: float
    metric: str
    mean: float
    std: float
    seeds: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    note: str = ""

    @property
    def ok(self) -> bool:
        """Whether the row holds a result (not failed or skipped)."""
        return not self.note.startswith(("failed", "skipped")) and math.isfinite(self.mean)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (non-finite numbers become ``None``; ``note`` only when set)."""
        out: dict[str, Any] = {
            "variant": self.variant,
            "sparsity": _finite(self.sparsity),
            "flops_ratio": _finite(self.flops_ratio),
            "metric": self.metric,
            "mean": _finite(self.mean),
            "std": _finite(self.std),
            "seeds": [_finite(v) for v in self.seeds],
            "wall_s": _finite(self.wall_s),
        }
        if self.note:
            out["note"] = self.note
        return out


def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def failed_row(
    variant: str, reason: str, sparsity: float = math.nan, metric: str = "accuracy"
) -> Row:
    """A row for a variant that could not run (``note = "failed: <reason>"``).

    Args:
        variant: Variant name.
        reason: Why (one line).
        sparsity: The requested sparsity, if any.
        metric: Metric name.
    """
    reason = " ".join(str(reason).split()) or "error"
    note = reason if reason.startswith(("failed", "skipped")) else f"failed: {reason}"
    return Row(variant, sparsity, math.nan, metric, math.nan, math.nan, [], 0.0, note)


def _mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else math.nan


def over_seeds(
    variant: str,
    seeds: Iterable[int],
    run: Callable[[int], RunResult],
    metric: str = "accuracy",
    sparsity: float | None = None,
    flops_ratio: float | None = None,
) -> Row:
    """Run ``run(seed)`` for every seed and summarise as a `Row`.

    Args:
        variant: Variant name.
        seeds: Seeds to run (≥ `MIN_SEEDS` for a reported comparison).
        run: Returns the metric, or ``(metric, extras)`` where ``extras`` may hold
            ``"sparsity"``, ``"flops_ratio"`` and ``"wall_s"`` for that seed (averaged over
            seeds; ``wall_s`` defaults to the measured duration of the call).
        metric: Metric name.
        sparsity: Sparsity to report when ``run`` gives none.
        flops_ratio: FLOPs ratio to report when ``run`` gives none.

    Returns:
        The row: mean and sample standard deviation of the metric over seeds.
    """
    seeds = list(seeds)
    if not seeds:
        raise ValueError("over_seeds needs at least one seed")
    values: list[float] = []
    sparsities: list[float] = []
    ratios: list[float] = []
    walls: list[float] = []
    for seed in seeds:
        start = time.perf_counter()
        result = run(seed)
        elapsed = time.perf_counter() - start
        value, extras = result if isinstance(result, tuple) else (result, {})
        values.append(float(value))
        if "sparsity" in extras:
            sparsities.append(float(extras["sparsity"]))
        if "flops_ratio" in extras:
            ratios.append(float(extras["flops_ratio"]))
        walls.append(float(extras.get("wall_s", elapsed)))
    return Row(
        variant=variant,
        sparsity=_mean(sparsities) if sparsities else _or_nan(sparsity),
        flops_ratio=_mean(ratios) if ratios else _or_nan(flops_ratio),
        metric=metric,
        mean=statistics.fmean(values),
        std=statistics.stdev(values) if len(values) > 1 else 0.0,
        seeds=values,
        wall_s=_mean(walls),
    )


def _or_nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _num(value: float, spec: str) -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, spec)


def format_table(rows: Sequence[Row], note_width: int = 72) -> str:
    """A plain-text table: variant, sparsity, FLOPs ratio, metric mean ± std, seeds, wall time.

    Args:
        rows: The rows (failed/skipped rows show their note in place of the metric).
        note_width: Notes longer than this are cut (the JSON keeps them whole).
    """
    metric = rows[0].metric if rows else "metric"
    header = ("variant", "sparsity", "flops", f"{metric} (mean ± std)", "seeds", "wall s")
    lines = [header]
    for row in rows:
        value = f"{row.mean:.4f} ± {row.std:.4f}" if row.ok else (row.note or "failed")
        if len(value) > note_width:
            value = value[: note_width - 3] + "..."
        lines.append(
            (
                row.variant,
                _num(row.sparsity, ".3f"),
                _num(row.flops_ratio, ".3f"),
                value,
                str(len(row.seeds)),
                _num(row.wall_s, ".1f") if row.ok else "-",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for k, line in enumerate(lines):
        cells = [
            c.ljust(w) if i in (0, 3) else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def plot_rows(
    rows: Sequence[Row], path: str | os.PathLike[str], title: str = "", dense_variant: str = "dense"
) -> Path:
    """Plot the metric against sparsity, one line per variant, dense as a dashed band (PNG).

    Uses matplotlib's Agg canvas directly (no pyplot, no global backend change).

    Args:
        rows: The table (failed rows and rows without a sparsity are left out).
        path: Output file (parent folders are created).
        title: Plot title.
        dense_variant: Name of the dense baseline's row.

    Returns:
        The path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    metric = rows[0].metric if rows else "metric"
    for row in rows:
        if row.variant == dense_variant and row.ok:
            ax.axhline(row.mean, color="black", linestyle="--", label=dense_variant)
            ax.axhspan(row.mean - row.std, row.mean + row.std, color="black", alpha=0.08)
    for variant in dict.fromkeys(r.variant for r in rows if r.variant != dense_variant):
        points = sorted(
            (r.sparsity, r.mean, r.std)
            for r in rows
            if r.variant == variant and r.ok and math.isfinite(r.sparsity)
        )
        if points:
            xs, ys, es = zip(*points, strict=True)
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=variant)
    ax.set(xlabel="sparsity", ylabel=metric, title=title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=120)
    return target


def machine_info() -> dict[str, Any]:
    """Where a result was measured: platform, CPU count, torch threads, accelerator."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["cuda"] = torch.cuda.get_device_name(0)
    return info


def write_results(
    path: str | os.PathLike[str],
    method: str,
    task: str,
    claim: str,
    holds: bool | None,
    rows: Sequence[Row],
    command: str,
    **extra: Any,
) -> dict[str, Any]:
    """Write a comparison as JSON (the reproduction contract's format); returns the dict.

    Args:
        path: Output file (parent folders are created).
        method: The method the comparison is about.
        task: The task.
        claim: The claim in words.
        holds: Whether the claim holds on this run (``None``: no claim tested, e.g. a bench).
        rows: The table.
        command: The exact command that produced it.
        **extra: More top-level fields (e.g. ``epochs``, ``settings``).
    """
    data: dict[str, Any] = {
        "method": method,
        "task": task,
        "claim": claim,
        "holds": None if holds is None else bool(holds),
        "rows": [row.to_dict() for row in rows],
        "command": command,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "machine": machine_info(),
    }
    data.update(extra)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(data, indent=2) + "\n")
    return data


def scratch_budgets(
    epochs: int,
    pruned_flops: float,
    dense_flops: float,
    max_factor: float = SCRATCH_B_MAX_FACTOR,
    rounding: str = "ceil",
) -> tuple[int, int]:
    """Epoch budgets of the Scratch-E and Scratch-B baselines of "Rethinking the Value".

    Scratch-E trains the pruned architecture from scratch for the same ``epochs``. Scratch-B
    trains it for the same *computation*: ``epochs × dense_flops / pruned_flops`` (rounded up,
    or down with ``rounding="floor"`` as the official code's ``int(...)``), capped at
    ``max_factor × epochs`` (the paper caps ImageNet runs at twice the epochs; pass
    ``math.inf`` for the uncapped CIFAR rule) and never fewer than ``epochs``.

    Args:
        epochs: Epochs of the dense / pruned training run.
        pruned_flops: Per-example FLOPs (or MACs) of the pruned model.
        dense_flops: Per-example FLOPs of the dense model, in the same unit.
        max_factor: Cap on the epoch multiplier (≥ 1; `math.inf`: uncapped).
        rounding: ``"ceil"`` (default) or ``"floor"`` (the official code of the paper).

    Returns:
        ``(scratch_e_epochs, scratch_b_epochs)``.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if not (pruned_flops > 0 and dense_flops > 0):
        raise ValueError(f"FLOPs must be positive, got {pruned_flops}, {dense_flops}")
    if not max_factor >= 1:
        raise ValueError(f"max_factor must be >= 1, got {max_factor}")
    if rounding not in ("ceil", "floor"):
        raise ValueError(f"rounding must be 'ceil' or 'floor', got {rounding!r}")
    factor = min(max(dense_flops / pruned_flops, 1.0), max_factor)
    budget = (
        math.ceil(epochs * factor - 1e-9)
        if rounding == "ceil"
        else math.floor(epochs * factor + 1e-9)
    )
    return epochs, max(epochs, budget)


def check_protocol(
    rows: Sequence[Row], min_seeds: int = MIN_SEEDS, dense_variant: str = "dense"
) -> list[str]:
    """Problems that keep a table from meeting the protocol (empty when it does).

    Args:
        rows: The table.
        min_seeds: Fewest seeds per variant.
        dense_variant: Name of the dense baseline's row.
    """
    problems = []
    if not any(r.variant == dense_variant and r.ok for r in rows):
        problems.append(f"no dense baseline row ({dense_variant!r})")
    for row in rows:
        if row.ok and len(row.seeds) < min_seeds:
            problems.append(f"{row.variant}: {len(row.seeds)} seed(s), need >= {min_seeds}")
        if row.ok and not math.isfinite(row.sparsity):
            problems.append(f"{row.variant}: sparsity not reported")
    return problems

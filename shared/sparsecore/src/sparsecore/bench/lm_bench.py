"""One-shot pruning of a causal LM and the ``stdlib-lm`` rows of ``sparse bench``.

`run_lm_bench` prunes a pretrained tiny Llama (`sparsecore.bench.pretrained_tiny_lm`)
with magnitude, Wanda and SparseGPT at 50%, 60% and 2:4 and reports validation perplexity
(lower is better) over calibration seeds: the seed draws the calibration blocks (the model and
the evaluation text are fixed), so the spread is the calibration noise that both papers report.
Magnitude needs no calibration, so its rows have no spread.

Shared with ``sparse oneshot``: `build_oneshot` (LM head left dense, only decoder-layer
weights pruned, as in the official Wanda / SparseGPT drivers) and `prune_lm`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from sparsecore.baselines import OneShotMagnitude
from sparsecore.bench.lm import LMTask, calibration_blocks, load_lm_task, perplexity
from sparsecore.calibration import decoder_layers
from sparsecore.method import PruningMethod
from sparsecore.oneshot import SparseGPT, Wanda

__all__ = [
    "LM_SETTINGS",
    "ONESHOT_METHODS",
    "build_oneshot",
    "layer_sparsity",
    "layer_targets",
    "prune_lm",
    "run_lm_bench",
]

#: One-shot methods ``sparse oneshot`` and the LM bench know.
ONESHOT_METHODS: dict[str, type[PruningMethod]] = {
    "magnitude": OneShotMagnitude,
    "wanda": Wanda,
    "sparsegpt": SparseGPT,
}
#: ``(label, sparsity, pattern)`` of the bench's columns.
LM_SETTINGS: tuple[tuple[str, float, str], ...] = (
    ("50%", 0.5, "unstructured"),
    ("60%", 0.6, "unstructured"),
    ("2:4", 0.5, "2:4"),
)


def layer_targets(model: nn.Module) -> tuple[str, ...]:
    """Weights of every Linear / HF ``Conv1D`` inside the decoder layers (the LM head excluded).

    Raises:
        ValueError: No decoder layer stack, or no Linear layer in it (naming ``model``).
    """
    from sparsecore.layouts import is_hf_conv1d

    layers = decoder_layers(model)
    prefix = {id(m): n for n, m in model.named_modules()}[id(layers)]
    names = tuple(
        f"{prefix}.{n}.weight"
        for n, m in layers.named_modules()
        if n and (isinstance(m, nn.Linear) or is_hf_conv1d(m))
    )
    if not names:
        raise ValueError(f"model: no Linear layers to prune inside {prefix}")
    return names


def build_oneshot(
    method: str, model: nn.Module, sparsity: float, pattern: str = "unstructured", seed: int = 0
) -> PruningMethod:
    """A one-shot method configured for the decoder-layer weights of ``model``.

    Raises:
        ValueError: Unknown method name (naming ``method``) or a bad sparsity/pattern.
    """
    if method not in ONESHOT_METHODS:
        raise ValueError(f"method must be one of {', '.join(ONESHOT_METHODS)}, got {method!r}")
    return ONESHOT_METHODS[method](
        sparsity=sparsity, pattern=pattern, targets=layer_targets(model), seed=seed
    )


def prune_lm(
    model: nn.Module, method: PruningMethod, calib: torch.Tensor, batch_size: int = 8,
    progress: bool = False,
) -> nn.Module:  # fmt: skip
    """Set ``method`` up on ``model`` (unless it is), calibrate it on ``calib`` blocks, bake the
    masks.

    Returns:
        The pruned plain model (masks squashed into the weights).
    """
    if method._masks is None:
        method.setup(model)
    if method.needs_calibration:
        method.progress = progress  # type: ignore[attr-defined]
        method.calibrate([calib[i : i + batch_size] for i in range(0, len(calib), batch_size)])
    return method.finalize()


def layer_sparsity(model: nn.Module, targets: Sequence[str] | None = None) -> dict[str, float]:
    """Zero fraction of each decoder-layer weight (or of ``targets``)."""
    params = dict(model.named_parameters())
    names = targets if targets is not None else layer_targets(model)
    return {n: float((params[n] == 0).float().mean()) for n in names}


def run_lm_bench(
    size: str = "tiny",
    seeds: Sequence[int] = (0, 1, 2),
    calib_blocks: int = 32,
    eval_blocks: int | None = 128,
    methods: Sequence[str] = ("magnitude", "wanda", "sparsegpt"),
    settings: Sequence[tuple[str, float, str]] = LM_SETTINGS,
    task: LMTask | None = None,
    progress: bool = True,
) -> list[Any]:
    """Dense and one-shot rows (perplexity) on ``stdlib-lm``.

    Args:
        size: Pretrained tiny LM size (``"micro"`` for quick runs).
        seeds: Calibration seeds (≥ 3 for a reported comparison).
        calib_blocks: Calibration blocks per run (drawn from the training text).
        eval_blocks: Evaluation blocks scored (``None``: all).
        methods: Names from `ONESHOT_METHODS`.
        settings: ``(label, sparsity, pattern)`` columns.
        task: The task (default: ``load_lm_task`` at the size's block length).
        progress: Progress bars.

    Returns:
        ``sparsecore.evaluation.Row`` objects, metric ``"perplexity"``; unstructured rows are
        named by the method (one line per method in the plot), N:M rows ``"<method> 2:4"``;
        every row's note carries the model size and the corpus hash prefix.
    """
    import copy

    from sparsecore.bench.pretrained import LM_SIZES, pretrained_tiny_lm
    from sparsecore.evaluation import over_seeds

    if task is None:
        task = load_lm_task(seq_len=LM_SIZES[size]["seq_len"])
    dense = pretrained_tiny_lm(size, task=task, progress=progress)
    tag = f"{size} Llama, corpus {task.corpus_hash[:12]}"
    start = time.perf_counter()
    dense_ppl = perplexity(dense, task, max_blocks=eval_blocks)
    rows = [
        over_seeds("dense", [0], lambda _s: (dense_ppl, {"sparsity": 0.0}), metric="perplexity")
    ]
    rows[0].wall_s = time.perf_counter() - start
    rows[0].note = tag
    for label, sparsity, pattern in settings:
        for name in methods:

            def one(
                seed: int, name: str = name, sparsity: float = sparsity, pattern: str = pattern
            ):
                model = copy.deepcopy(dense)
                method = build_oneshot(name, model, sparsity, pattern, seed=seed + 1000)
                calib = calibration_blocks(task, calib_blocks, seed=seed)
                pruned = prune_lm(model, method, calib, progress=False)
                zeros = layer_sparsity(pruned)
                mean_sparsity = sum(zeros.values()) / len(zeros)
                return perplexity(pruned, task, max_blocks=eval_blocks), {"sparsity": mean_sparsity}

            used = [seeds[0]] if name == "magnitude" else list(seeds)
            variant = name if pattern == "unstructured" else f"{name} {label}"
            row = over_seeds(variant, used, one, metric="perplexity")
            row.note = tag if math.isfinite(row.mean) else row.note
            rows.append(row)
    return rows


def bench_command(args: Any) -> int:
    """``sparse bench --task stdlib-lm``: the LM rows, a table, ``results.json`` and a plot.

    Uses ``args.model`` as the tiny-LM size (default ``tiny``), ``args.seeds`` calibration seeds
    (at least 3), ``args.methods`` (default: magnitude, wanda, sparsegpt) and ``args.out``.
    """
    from pathlib import Path

    from sparsecore.evaluation import format_table, plot_rows, write_results

    size = args.model or "tiny"
    from sparsecore.bench.pretrained import LM_SIZES

    if size not in LM_SIZES:
        raise ValueError(
            f"--model for stdlib-lm must be one of {', '.join(LM_SIZES)}, got {size!r}"
        )
    methods = [m for m in (args.methods or "").split(",") if m] or list(ONESHOT_METHODS)
    for name in methods:
        if name not in ONESHOT_METHODS:
            raise ValueError(f"--methods: {name!r} is not one of {', '.join(ONESHOT_METHODS)}")
    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)
    seeds = list(range(max(3, args.seeds)))
    rows = run_lm_bench(size, seeds, methods=methods, progress=args.progress)
    print(format_table(rows))
    out = Path(args.out or "sparse-results/bench-stdlib-lm")
    write_results(
        out / "results.json", "bench", "stdlib-lm", "benchmark (no claim tested)", None, rows,
        "sparse " + " ".join(getattr(args, "argv", [])), model=size, calibration_seeds=seeds,
    )  # fmt: skip
    plot_rows(rows, out / "perplexity_vs_sparsity.png", f"stdlib-lm / {size} Llama, one-shot")
    print(f"wrote {out / 'results.json'} and {out / 'perplexity_vs_sparsity.png'}")
    return 0

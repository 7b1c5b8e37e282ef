"""The Sparseland reporting rules, as data a results file carries and a checker that enforces them.

From Shiwei Liu and Zhangyang Wang, "Ten Lessons We Have Learned in the New 'Sparseland': A
Short Handbook for Sparse Neural Network Researchers" (arXiv 2302.02596). The handbook's
lessons become rules a results file can be checked against (numbering of the digest,
`shared/papers/digests-part2.md` §11; the wording is ours):

* **R1** target *and* achieved sparsity over a *declared* parameter set (what was excluded),
  globally and per layer: `disclose_sparsity`;
* **R2** the method's place in the taxonomy: `sparsecore.taxonomy.Taxonomy` on the method class;
* **R3** the training cost (epochs or tokens, dense-equivalent training FLOPs), so methods are
  compared at matched budgets: `training_cost`;
* **R4** inference FLOPs / parameters of the deployable model, with unstructured savings marked
  *theoretical* unless a named kernel measured the latency: `inference_cost`;
* **R5** dense, random-with-the-same-layer-wise-ratios and magnitude baselines in the table:
  `matched_random_masks` builds the matched random baseline exactly;
* **R6** ≥ 3 seeds, mean ± std (`sparsecore.evaluation.protocol.over_seeds`);
* **R7** the layer-wise allocation stated (uniform, ERK, global, learned, ...).

`check_sparseland(data)` returns the rules a results dict (the JSON that
`sparsecore.evaluation.write_results` writes, with a `"sparseland"` entry built by
`sparseland_fields`, or in one call by `sparsecore.evaluation.sparseland_entry`) does not
meet; the gaps an entry declares itself (`"gaps"`, e.g. a baseline row the reproduction lacks)
are reported too.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from sparsecore.validation import check_choice, check_int

__all__ = [
    "ALLOCATIONS",
    "check_sparseland",
    "disclose_sparsity",
    "inference_cost",
    "matched_random_masks",
    "sparseland_fields",
    "training_cost",
]

#: Layer-wise allocations a result may state (R7).
ALLOCATIONS = ("uniform", "erk", "global", "learned", "per-layer-given", "not-applicable")


def disclose_sparsity(
    masks: Mapping[str, torch.Tensor],
    target: float | None,
    excluded: Iterable[str] = (),
) -> dict[str, Any]:
    """R1: the declared parameter set and the achieved sparsity, global and per layer.

    Args:
        masks: Keep-masks of the pruned tensors, by name (`MaskSet` state keys or names).
        target: The sparsity asked for (`None` when the method fixes it itself).
        excluded: Names of the prunable-looking tensors left dense on purpose (first/last
            layer, biases, norms, embeddings, ...).

    Returns:
        `{"target", "achieved", "param_set": {"included", "excluded", "numel"}, "per_layer"}`.
    """
    if not masks:
        raise ValueError("masks is empty: nothing to disclose")
    numel = sum(int(m.numel()) for m in masks.values())
    kept = sum(int(m.count_nonzero()) for m in masks.values())
    per_layer = {
        name: 1.0 - int(m.count_nonzero()) / max(int(m.numel()), 1) for name, m in masks.items()
    }
    return {
        "target": None if target is None else float(target),
        "achieved": 1.0 - kept / numel,
        "param_set": {"included": sorted(masks), "excluded": sorted(excluded), "numel": numel},
        "per_layer": per_layer,
    }


def training_cost(
    dense_train_flops: float,
    train_flops: float | None = None,
    epochs: float | None = None,
    tokens: int | None = None,
) -> dict[str, Any]:
    """R3: the training budget, in epochs or tokens, and in dense-equivalent training FLOPs.

    Args:
        dense_train_flops: Training FLOPs of the dense run at the same budget.
        train_flops: Training FLOPs the method actually spent (`None`: same as dense, e.g. a
            method that trains dense and prunes at the end).
        epochs: Epochs of the run.
        tokens: Tokens seen (language models).
    """
    if epochs is None and tokens is None:
        raise ValueError("training_cost needs epochs or tokens")
    if not dense_train_flops > 0:
        raise ValueError(f"dense_train_flops must be positive, got {dense_train_flops}")
    spent = dense_train_flops if train_flops is None else float(train_flops)
    return {
        "epochs": epochs,
        "tokens": tokens,
        "train_flops": spent,
        "dense_train_flops": float(dense_train_flops),
        "relative_to_dense": spent / dense_train_flops,
    }


def inference_cost(
    dense_macs: float,
    effective_macs: float,
    params: int,
    dense_params: int,
    kernel: str | None = None,
) -> dict[str, Any]:
    """R4: the deployable model's cost; savings are *theoretical* unless `kernel` measured them.

    Args:
        dense_macs: MACs per example of the dense model.
        effective_macs: MACs per example counted on non-zeros / kept structures.
        params: Non-zero (or remaining) parameters of the deployable model.
        dense_params: Parameters of the dense model.
        kernel: The sparse kernel or structure removal whose latency was measured (e.g.
            `"torch CSR"`, `"channel removal"`); `None` when nothing was measured.
    """
    if not (dense_macs > 0 and dense_params > 0):
        raise ValueError("dense_macs and dense_params must be positive")
    return {
        "macs_ratio": effective_macs / dense_macs,
        "params_ratio": params / dense_params,
        "savings": "theoretical" if kernel is None else f"measured ({kernel})",
    }


def matched_random_masks(
    masks: Mapping[str, torch.Tensor], generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """R5: random keep-masks with exactly the per-layer kept counts of `masks`.

    The strong random baseline of the handbook keeps the method's layer-wise ratios and only
    randomises *which* entries are kept, so the comparison isolates the selection criterion.

    Args:
        masks: The method's keep-masks by name.
        generator: The generator for the random positions (seed it independently of the model).
    """
    out = {}
    for name, mask in masks.items():
        kept = int(mask.count_nonzero())
        order = torch.randperm(mask.numel(), generator=generator, device="cpu")
        fresh = torch.zeros(mask.numel(), dtype=torch.bool)
        fresh[order[:kept]] = True
        out[name] = fresh.view(mask.shape).to(mask.device)
    return out


def sparseland_fields(
    sparsity: Mapping[str, Any],
    training: Mapping[str, Any],
    inference: Mapping[str, Any],
    allocation: str,
    baselines: Sequence[str],
) -> dict[str, Any]:
    """The `"sparseland"` entry of a results file (pass it to `write_results` as a keyword).

    Args:
        sparsity: `disclose_sparsity`'s result (R1).
        training: `training_cost`'s result (R3).
        inference: `inference_cost`'s result (R4).
        allocation: The layer-wise allocation, one of `ALLOCATIONS` (R7).
        baselines: Variant names of the dense, matched-random and magnitude rows in the table,
            in that order (R5).
    """
    check_choice(allocation, "allocation", ALLOCATIONS)
    return {
        "sparsity": dict(sparsity),
        "training": dict(training),
        "inference": dict(inference),
        "allocation": allocation,
        "baselines": list(baselines),
    }


def check_sparseland(data: Mapping[str, Any], min_seeds: int = 3) -> list[str]:
    """The Sparseland rules a results dict does not meet (empty when it meets them all).

    Args:
        data: A results dict as written by `write_results`, with a `"sparseland"` entry.
        min_seeds: Fewest seeds per reported row (R6).
    """
    check_int(min_seeds, "min_seeds", 1)
    problems = []
    fields = data.get("sparseland")
    if not isinstance(fields, Mapping):
        return ["no 'sparseland' entry (R1, R3, R4, R5, R7 undeclared)"]
    sparsity = fields.get("sparsity") or {}
    if not isinstance(sparsity.get("param_set"), Mapping) or "excluded" not in sparsity.get(
        "param_set", {}
    ):
        problems.append("R1: the parameter set (included / excluded) is not declared")
    if not isinstance(sparsity.get("achieved"), int | float) or not sparsity.get("per_layer"):
        problems.append("R1: achieved sparsity, global and per layer, is missing")
    training = fields.get("training") or {}
    if training.get("epochs") is None and training.get("tokens") is None:
        problems.append("R3: the training budget (epochs or tokens) is missing")
    if not isinstance(training.get("relative_to_dense"), int | float):
        problems.append("R3: dense-equivalent training FLOPs are missing")
    inference = fields.get("inference") or {}
    if str(inference.get("savings", "")).split(" ")[0] not in ("theoretical", "measured"):
        problems.append("R4: inference savings are not marked theoretical or measured")
    rows = {r.get("variant"): r for r in data.get("rows", []) if isinstance(r, Mapping)}
    baselines = list(fields.get("baselines") or [])
    if len(baselines) < 3:
        problems.append("R5: dense, matched-random and magnitude baselines are not all named")
    problems += [f"R5: baseline row {b!r} is not in the table" for b in baselines if b not in rows]
    for name, row in rows.items():
        seeds = row.get("seeds") or []
        finite = [s for s in seeds if isinstance(s, int | float) and math.isfinite(s)]
        if finite and len(finite) < min_seeds:
            problems.append(f"R6: {name}: {len(finite)} seed(s), need >= {min_seeds}")
    problems += [str(gap) for gap in fields.get("gaps") or []]  # declared missing pieces
    if fields.get("allocation") not in ALLOCATIONS:
        problems.append(f"R7: the layer-wise allocation is not one of {ALLOCATIONS}")
    return problems

"""Build a reproduction's `"sparseland"` results entry from what it already has, in one call.

`sparseland_entry` turns the trained (pruned) model, an example input, the training budget
and the names of the baseline rows into the entry that `check_sparseland` checks (rules R1, R3,
R4, R5, R7 of `sparsecore.evaluation.sparseland`; R2 is the method's `taxonomy`, R6 the rows'
seeds). A reproduction adds a few lines:

```python
from sparsecore.evaluation import check_sparseland, sparseland_entry, write_results

entry = sparseland_entry(
    model,                          # the pruned model of one seed (masks applied)
    task.x_test[:1],                # one example: MACs per example
    target=0.9,
    allocation="erk",               # one of ALLOCATIONS (R7)
    epochs=epochs,
    train_examples=task.num_train * epochs,
    train_flops_ratio=0.42,         # method's training FLOPs / dense training's (default 1)
    baselines={"dense": "dense", "matched_random": "random", "magnitude": "magnitude"},
)
data = write_results(args.out, ..., rows=rows, sparseland=entry)
print("sparseland:", check_sparseland(data, min_seeds=1 if args.quick else 3) or "ok")
```

Choices made here (labelled, so that a reader knows what the numbers mean):

* **Per-layer sparsity** (R1) is, for every weight of a `Linear` / `Conv*` layer,
  `1 - nonzeros(model) / entries(dense_model)` (with masks applied through
  `effective_tensor`), so that it covers both masks (same shape, zeros) and structure removal
  (smaller shape, `dense_model` given). Without `masks` / `include`, the *included* tensors
  are those with at least one zero (or fewer entries than in `dense_model`) and every other
  `Linear` / `Conv*` weight is declared *excluded* (left dense). Biases and norms are never
  counted. `masks=` (a `MaskSet`'s `masks`) or `sparsity=` (your own `disclose_sparsity`
  dict, e.g. ranks of a low-rank model) override this.
* **Training FLOPs** (R3) are `3 × dense forward MACs per example × train_examples` for the
  dense run (forward + backward ≈ 3 forward passes, the usual convention), times
  `train_flops_ratio` for the method.
* **Inference** (R4) counts the forward MACs (`count_flops`) and nonzero parameters
  (`count_params`) of `model` against `dense_model` (default: `model`'s own dense counts);
  the savings are *theoretical* unless `kernel` names what measured the latency.
* **Baselines** (R5): `baselines` maps `"dense"`, `"matched_random"` (random with the same
  layer-wise ratios, `matched_random_masks`) and `"magnitude"` to the variant names of their
  rows. A `None` value is a baseline the reproduction does not have: it is written down under
  `"gaps"` (with `gap_notes[role]` as the reason), and `check_sparseland` then reports it, so an
  entry never passes by omission.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from sparsecore.evaluation.flops import count_flops, count_params
from sparsecore.evaluation.report import effective_tensor
from sparsecore.evaluation.sparseland import (
    disclose_sparsity,
    inference_cost,
    matched_random_masks,
    sparseland_fields,
    training_cost,
)
from sparsecore.method import PruningMethod
from sparsecore.taxonomy import Taxonomy
from sparsecore.validation import check_number

__all__ = ["BASELINE_ROLES", "MatchedRandomPruning", "layer_weights", "sparseland_entry"]

#: The three baselines of rule R5, in the order the entry lists them.
BASELINE_ROLES = ("dense", "matched_random", "magnitude")

_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


class MatchedRandomPruning(PruningMethod):
    """R5's baseline as a method: random keep-masks with exactly `reference`'s per-layer counts.

    Train it like any method (`sparsecore.bench.train(model, task, MatchedRandomPruning(
    method.masks.masks(), seed=...), ...)`): the masks are drawn once at `setup`
    (`matched_random_masks`, from the method's own generator) and stay fixed. Its targets must
    be exactly the reference's tensors (give the same `targets` / `exclude` as the method).
    Not registered as a named method (it needs the reference masks).

    Args:
        reference: The method's keep-masks by name (only their per-layer counts are used).
        **options: `MethodConfig` fields (`targets`, `exclude`, `seed`, ...).
    """

    taxonomy: ClassVar[Taxonomy | None] = Taxonomy(
        ("unstructured",), "before", "sparse-to-sparse", "static"
    )
    name = "matched-random"
    requires_finite_weights: ClassVar[bool] = False

    def __init__(self, reference: Mapping[str, torch.Tensor], **options: Any) -> None:
        if not isinstance(reference, Mapping) or not reference:
            raise ValueError("reference must be a non-empty mapping of keep-masks by name")
        self.reference = {n: m.detach().to("cpu", torch.bool) for n, m in reference.items()}
        super().__init__(**options)

    def init_masks(self) -> None:  # noqa: D102
        names = set(self.masks.names)
        if names != set(self.reference):
            raise ValueError(
                f"reference: its tensors {sorted(self.reference)} are not the targets "
                f"{sorted(names)} (give the method's targets / exclude)"
            )
        for name, keep in matched_random_masks(self.reference, self.generator).items():
            if keep.shape != self.masks.mask(name).shape:
                raise ValueError(f"reference: {name} has shape {tuple(keep.shape)}")
            self.masks.update(name, keep.to(self.masks.mask(name).device))


def layer_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The effective (masked) weight of every `Linear` / `Conv*` layer, by parameter name."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, _LAYERS):
            out[f"{name}.weight" if name else "weight"] = effective_tensor(module, "weight")
    return out


def _disclose_from_model(
    model: nn.Module,
    dense_model: nn.Module,
    target: float | None,
    include: Iterable[str] | None,
    excluded: Iterable[str] | None,
) -> dict[str, Any]:
    weights = layer_weights(model)
    dense = {name: int(w.numel()) for name, w in layer_weights(dense_model).items()}
    kept = {name: int(w.count_nonzero()) for name, w in weights.items() if name in dense}
    if include is None:
        chosen = [n for n, k in kept.items() if k < dense[n]]
    else:
        chosen = list(include)
        unknown = [n for n in chosen if n not in kept]
        if unknown:
            raise ValueError(f"include: {unknown} are not Linear/Conv weights of the model")
    if not chosen:
        raise ValueError("sparseland_entry: the model has no pruned Linear/Conv weight")
    left = sorted(set(dense) - set(chosen)) if excluded is None else sorted(excluded)
    numel = sum(dense[n] for n in chosen)
    return {
        "target": None if target is None else float(target),
        "achieved": 1.0 - sum(kept[n] for n in chosen) / numel,
        "param_set": {"included": sorted(chosen), "excluded": left, "numel": numel},
        "per_layer": {n: 1.0 - kept[n] / dense[n] for n in chosen},
    }


def sparseland_entry(
    model: nn.Module,
    example: Any,
    *,
    target: float | None,
    allocation: str,
    train_examples: float,
    baselines: Mapping[str, str | None],
    epochs: float | None = None,
    tokens: int | None = None,
    train_flops_ratio: float = 1.0,
    dense_model: nn.Module | None = None,
    masks: Mapping[str, torch.Tensor] | None = None,
    include: Iterable[str] | None = None,
    excluded: Iterable[str] | None = None,
    sparsity: Mapping[str, Any] | None = None,
    kernel: str | None = None,
    gap_notes: Mapping[str, str] | None = None,
    notes: str | None = None,
) -> dict[str, Any]:
    """The `"sparseland"` entry of a results file (pass it to `write_results(sparseland=...)`).

    Args:
        model: The pruned model the reported sparsity belongs to (one seed), masks applied or
            as `MaskSet`-parametrized; structure-removed models are fine with `dense_model`.
        example: One input (a tensor, a tuple or a mapping, as for `count_flops`); its batch
            should be one example, so that `train_examples` scales it.
        target: The sparsity asked for (`None` when the method sets it itself).
        allocation: The layer-wise allocation, one of `ALLOCATIONS` (R7).
        train_examples: Examples the training run processed in total (e.g.
            `task.num_train * epochs`, or sequences seen for a language model).
        baselines: `{"dense": variant, "matched_random": variant, "magnitude": variant}`, the
            row names of the three R5 baselines; `None` marks one that is missing (a gap).
        epochs: Epochs of the run (R3; give this or `tokens`).
        tokens: Tokens seen (language models).
        train_flops_ratio: The method's training FLOPs relative to dense training at the same
            budget (e.g. `count_training_flops(...).ratio` averaged over the run; 1 for a method
            that trains dense and prunes at the end).
        dense_model: The dense reference for the per-layer entries, MACs and parameters
            (default: `model`, counted dense); needed when structures were removed.
        masks: Keep-masks by name (a `MaskSet`'s `masks`): disclose exactly these tensors.
        include: Names of the pruned weights, when not every weight with a zero is one.
        excluded: Names declared as excluded (default: every other `Linear` / `Conv*` weight).
        sparsity: A ready R1 dict (`disclose_sparsity` form), e.g. ranks of a low-rank model.
        kernel: What measured the inference latency (`None`: savings are theoretical).
        gap_notes: Why a baseline is missing, by role (written with the gap).
        notes: Free text stored with the entry (what the anchor model is, ...).

    Returns:
        The entry: `sparseland_fields`'s dict, plus `"gaps"` (and `"notes"` when given).

    Raises:
        ValueError: An unknown baseline role, a missing required role, no pruned weight, or a
            non-positive count; raised before anything is counted.
    """
    unknown = sorted(set(baselines) - set(BASELINE_ROLES))
    missing_roles = [r for r in BASELINE_ROLES if r not in baselines]
    if unknown or missing_roles:
        raise ValueError(
            f"baselines: give each of {BASELINE_ROLES} (None when missing); "
            f"unknown {unknown}, not given {missing_roles}"
        )
    check_number(train_examples, "train_examples", low=0.0, open_low=True)
    check_number(train_flops_ratio, "train_flops_ratio", low=0.0)
    reference = model if dense_model is None else dense_model
    if sparsity is None:
        if masks is not None:
            sparsity = disclose_sparsity(masks, target, excluded or ())
        else:
            sparsity = _disclose_from_model(model, reference, target, include, excluded)
    macs = count_flops(model, example)
    dense_macs = count_flops(reference, example).dense if dense_model is not None else macs.dense
    dense_params = count_params(reference)[0]
    dense_train = 3.0 * dense_macs * float(train_examples)
    entry = sparseland_fields(
        sparsity=sparsity,
        training=training_cost(
            dense_train_flops=dense_train,
            train_flops=dense_train * float(train_flops_ratio),
            epochs=epochs,
            tokens=tokens,
        ),
        inference=inference_cost(
            dense_macs, macs.effective, count_params(model)[1], dense_params, kernel
        ),
        allocation=allocation,
        baselines=[baselines[r] for r in BASELINE_ROLES if baselines[r] is not None],
    )
    gaps = []
    for role in BASELINE_ROLES:
        if baselines[role] is None:
            why = (gap_notes or {}).get(role, "not run by this reproduction")
            gaps.append(f"R5: no {role.replace('_', '-')} baseline row ({why})")
    entry["gaps"] = gaps
    if notes:
        entry["notes"] = notes
    return entry

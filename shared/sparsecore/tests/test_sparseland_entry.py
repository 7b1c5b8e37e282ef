"""`sparseland_entry`: exact counts from a model, structure removal, declared gaps."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsecore.evaluation import Row, check_sparseland, sparseland_entry

BASELINES = {"dense": "dense", "matched_random": "random", "magnitude": "magnitude"}


def _mlp(hidden: int = 8) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 3))


def _rows(*names: str) -> list[dict]:
    return [Row(n, 0.5, 1.0, "accuracy", 0.9, 0.0, [0.9, 0.9, 0.9], 1.0).to_dict() for n in names]


def test_counts_are_exact_and_the_entry_passes_with_every_baseline_row() -> None:
    model = _mlp()
    with torch.no_grad():
        model[0].weight.view(-1)[:24] = 0.0  # 24 of 32 zeroed
    entry = sparseland_entry(
        model,
        torch.zeros(1, 4),
        target=0.75,
        allocation="uniform",
        epochs=2,
        train_examples=100,
        train_flops_ratio=0.5,
        baselines=BASELINES,
    )
    r1 = entry["sparsity"]
    assert r1["param_set"] == {"included": ["0.weight"], "excluded": ["2.weight"], "numel": 32}
    assert r1["achieved"] == pytest.approx(0.75) and r1["per_layer"] == {"0.weight": 0.75}
    dense_macs = 4 * 8 + 8 * 3
    assert entry["training"]["dense_train_flops"] == 3.0 * dense_macs * 100
    assert entry["training"]["relative_to_dense"] == pytest.approx(0.5)
    assert entry["inference"]["macs_ratio"] == pytest.approx((8 + 24) / dense_macs)
    assert entry["inference"]["savings"] == "theoretical"
    total = sum(p.numel() for p in model.parameters())
    assert entry["inference"]["params_ratio"] == pytest.approx((total - 24) / total)
    data = {"rows": _rows("dense", "random", "magnitude", "method"), "sparseland": entry}
    assert check_sparseland(data) == []
    assert "R5: baseline row 'random'" in " ".join(
        check_sparseland({**data, "rows": _rows("dense", "magnitude")})
    )


def test_structure_removal_is_counted_against_the_dense_model() -> None:
    dense, pruned = _mlp(8), _mlp(4)
    entry = sparseland_entry(
        pruned,
        torch.zeros(1, 4),
        dense_model=dense,
        target=0.5,
        allocation="uniform",
        epochs=1,
        train_examples=10,
        baselines=BASELINES,
        kernel="channel removal",
    )
    assert entry["sparsity"]["per_layer"] == {"0.weight": 0.5, "2.weight": 0.5}
    assert entry["inference"]["macs_ratio"] == pytest.approx((16 + 12) / (32 + 24))
    assert entry["inference"]["savings"] == "measured (channel removal)"


def test_a_missing_baseline_is_a_declared_gap_that_the_check_reports() -> None:
    model = _mlp()
    with torch.no_grad():
        model[2].weight[0] = 0.0
    entry = sparseland_entry(
        model,
        torch.zeros(1, 4),
        target=None,
        allocation="global",
        epochs=1,
        train_examples=10,
        baselines={**BASELINES, "matched_random": None},
        gap_notes={"matched_random": "too costly"},
    )
    assert entry["baselines"] == ["dense", "magnitude"]
    assert entry["gaps"] == ["R5: no matched-random baseline row (too costly)"]
    problems = check_sparseland({"rows": _rows("dense", "magnitude"), "sparseland": entry})
    assert "R5: no matched-random baseline row (too costly)" in problems


def test_bad_input_names_the_parameter() -> None:
    model = _mlp()
    common = dict(target=0.5, allocation="uniform", epochs=1, train_examples=10)
    with pytest.raises(ValueError, match="baselines"):
        sparseland_entry(model, torch.zeros(1, 4), baselines={"dense": "dense"}, **common)
    with pytest.raises(ValueError, match="no pruned"):
        sparseland_entry(model, torch.zeros(1, 4), baselines=BASELINES, **common)
    with pytest.raises(ValueError, match="train_examples"):
        sparseland_entry(
            model, torch.zeros(1, 4), baselines=BASELINES, **{**common, "train_examples": 0}
        )


def test_matched_random_pruning_keeps_exactly_the_reference_counts_per_layer() -> None:
    from sparsecore import OneShotMagnitude
    from sparsecore.evaluation import MatchedRandomPruning

    reference_model, model = _mlp(), _mlp()
    method = OneShotMagnitude(sparsity=0.6, scope="global", seed=1).setup(reference_model)
    reference = {n: m.clone() for n, m in method.masks.masks().items()}
    random = MatchedRandomPruning(reference, seed=7).setup(model)
    masks = random.masks.masks()
    assert set(masks) == set(reference)
    for name, keep in masks.items():
        assert int(keep.sum()) == int(reference[name].sum()), name
    assert any(not torch.equal(masks[n], reference[n].bool()) for n in masks)
    with pytest.raises(ValueError, match="reference"):
        MatchedRandomPruning({"0.weight": reference["0.weight"]}, seed=7).setup(_mlp())

import pytest
import torch

from sparsecore import available_methods
from sparsecore.evaluation import (
    Row,
    check_sparseland,
    disclose_sparsity,
    inference_cost,
    matched_random_masks,
    sparseland_fields,
    training_cost,
)
from sparsecore.taxonomy import Taxonomy, taxonomy_rows


def test_taxonomy_validates_every_axis():
    t = Taxonomy(("unstructured", "n:m"), "during", "sparse-to-sparse", "dynamic")
    assert t.as_row() == {
        "granularity": "unstructured,n:m",
        "timing": "during",
        "path": "sparse-to-sparse",
        "dynamics": "dynamic",
        "sparsifies": "weights",
    }
    assert Taxonomy("channel", "after", "dense-to-sparse", "static").granularity == ("channel",)
    with pytest.raises(ValueError, match="granularity"):
        Taxonomy(("diagonal",), "during", "dense-to-sparse", "static")
    with pytest.raises(ValueError, match="timing"):
        Taxonomy(("unstructured",), "sometimes", "dense-to-sparse", "static")
    with pytest.raises(ValueError, match="path"):
        Taxonomy(("unstructured",), "during", "sideways", "static")
    with pytest.raises(ValueError, match="dynamics"):
        Taxonomy(("unstructured",), "during", "dense-to-sparse", "wobbly")
    with pytest.raises(ValueError, match="sparsifies"):
        Taxonomy(("unstructured",), "during", "dense-to-sparse", "static", sparsifies=("vibes",))
    with pytest.raises(TypeError, match="granularity"):
        Taxonomy((), "during", "dense-to-sparse", "static")


def test_core_baselines_declare_the_expected_places():
    rows = {r["method"]: r for r in taxonomy_rows(available_methods())}
    assert rows["rigl"]["dynamics"] == "dynamic" and rows["rigl"]["path"] == "sparse-to-sparse"
    assert rows["gmp"]["path"] == "dense-to-sparse" and rows["gmp"]["timing"] == "during"
    assert rows["snip"]["timing"] == "before" and rows["imp"]["timing"] == "iterative"
    assert all(r["granularity"] != "?" for r in rows.values())


def test_undeclared_methods_show_question_marks():
    class Plain:
        pass

    (row,) = taxonomy_rows({"plain": Plain})
    assert row["method"] == "plain" and row["timing"] == "?" and "note" not in row


def test_disclose_sparsity_counts_only_the_declared_set():
    masks = {"a": torch.tensor([True, False, False, False]), "b": torch.ones(4, dtype=torch.bool)}
    out = disclose_sparsity(masks, target=0.5, excluded=["head.weight"])
    assert out["achieved"] == pytest.approx(3 / 8)
    assert out["per_layer"] == {"a": 0.75, "b": 0.0}
    assert out["param_set"] == {"included": ["a", "b"], "excluded": ["head.weight"], "numel": 8}
    with pytest.raises(ValueError, match="masks"):
        disclose_sparsity({}, 0.5)


def test_matched_random_masks_keep_exact_per_layer_counts():
    g = torch.Generator().manual_seed(3)
    masks = {
        "w1": torch.rand(17, 9, generator=g) > 0.8,
        "w2": torch.rand(5, 33, generator=g) > 0.1,
        "w3": torch.zeros(4, 4, dtype=torch.bool),
    }
    random = matched_random_masks(masks, torch.Generator().manual_seed(11))
    for name, mask in masks.items():
        assert random[name].shape == mask.shape and random[name].dtype == torch.bool
        assert int(random[name].sum()) == int(mask.sum())
    assert not torch.equal(random["w1"], masks["w1"])
    again = matched_random_masks(masks, torch.Generator().manual_seed(11))
    assert all(torch.equal(again[n], random[n]) for n in masks)


def _results(**overrides):
    rows = [
        Row("dense", 0.0, 1.0, "accuracy", 0.9, 0.01, [0.9, 0.91, 0.89], 1.0),
        Row("random-matched", 0.9, 0.1, "accuracy", 0.7, 0.01, [0.7, 0.71, 0.69], 1.0),
        Row("magnitude", 0.9, 0.1, "accuracy", 0.8, 0.01, [0.8, 0.81, 0.79], 1.0),
        Row("mine", 0.9, 0.1, "accuracy", 0.85, 0.01, [0.85, 0.86, 0.84], 1.0),
    ]
    masks = {"w": torch.tensor([True] + [False] * 9)}
    fields = sparseland_fields(
        disclose_sparsity(masks, 0.9, excluded=["fc_out.weight"]),
        training_cost(dense_train_flops=1e9, train_flops=4e8, epochs=20),
        inference_cost(1e6, 1e5, 100, 1000),
        "erk",
        ["dense", "random-matched", "magnitude"],
    )
    data = {"rows": [r.to_dict() for r in rows], "sparseland": fields}
    data["sparseland"].update(overrides)
    return data


def test_a_complete_results_file_meets_every_rule():
    data = _results()
    assert check_sparseland(data) == []
    assert data["sparseland"]["inference"]["savings"] == "theoretical"
    assert data["sparseland"]["training"]["relative_to_dense"] == pytest.approx(0.4)
    assert inference_cost(1, 1, 1, 1, kernel="torch CSR")["savings"] == "measured (torch CSR)"


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("sparsity", {"achieved": 0.9, "per_layer": {"w": 0.9}}, "R1"),
        ("training", {"relative_to_dense": 1.0}, "R3"),
        ("training", {"epochs": 3}, "R3"),
        ("inference", {"macs_ratio": 0.1}, "R4"),
        ("baselines", ["dense", "magnitude"], "R5"),
        ("baselines", ["dense", "random-matched", "snip"], "R5"),
        ("allocation", "vibes", "R7"),
    ],
)
def test_check_sparseland_names_the_missing_rule(field, value, rule):
    problems = check_sparseland(_results(**{field: value}))
    assert problems and all(p.startswith(rule) for p in problems), problems


def test_check_sparseland_needs_three_seeds_and_the_entry():
    data = _results()
    data["rows"][3]["seeds"] = [0.85, 0.86]
    assert check_sparseland(data) == ["R6: mine: 2 seed(s), need >= 3"]
    assert check_sparseland({"rows": []})[0].startswith("no 'sparseland' entry")
    with pytest.raises(ValueError, match="allocation"):
        sparseland_fields({}, {}, {}, "vibes", [])
    with pytest.raises(ValueError, match="epochs or tokens"):
        training_cost(1e9)

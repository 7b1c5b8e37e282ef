"""STR (the PDP benchmarks' differentiable competitor): forward, gradients, decay, removal."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from sparse_pdp.str_baseline import apply_str, remove_str, soft_threshold, str_thresholds


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


def test_soft_threshold_matches_elementwise_reference() -> None:
    w = torch.randn(50)
    s = torch.tensor(-1.0)
    t = 1.0 / (1.0 + torch.exp(torch.tensor(1.0)))  # sigmoid(-1)
    expected = torch.tensor(
        [(abs(x) - t) * (1 if x > 0 else -1) if abs(x) > t else 0.0 for x in w.tolist()]
    )
    torch.testing.assert_close(soft_threshold(w, s), expected)


def test_forward_uses_thresholded_weights_and_s_gets_a_gradient() -> None:
    model = _model()
    dense = [model[0].weight.detach().clone(), model[2].weight.detach().clone()]
    apply_str(model, ["0.weight", "2.weight"], s_init=-2.0)
    s0 = model[0].parametrizations.weight[0].s
    torch.testing.assert_close(model[0].weight, soft_threshold(dense[0], s0.detach().view(())))
    x = torch.randn(5, 8)
    model(x).square().sum().backward()
    assert s0.grad is not None and float(s0.grad.abs()) > 0
    below = dense[0].abs() <= torch.sigmoid(torch.tensor(-2.0))
    assert below.any()
    original = model[0].parametrizations.weight.original
    assert bool((original.grad[below] == 0).all())  # pruned weights get no gradient
    assert set(str_thresholds(model)) == {"0.weight", "2.weight"}


def test_st_decay_equals_a_separate_sgd_parameter_group() -> None:
    lr, wd, st = 0.1, 1e-3, 0.5
    results = []
    for grouped in (False, True):
        model = _model()
        apply_str(
            model, ["0.weight"], s_init=-3.0, st_decay=None if grouped else st, weight_decay=wd
        )
        s = model[0].parametrizations.weight[0].s
        others = [p for p in model.parameters() if p is not s]
        groups = [{"params": others}, {"params": [s], "weight_decay": st if grouped else wd}]
        opt = torch.optim.SGD(groups, lr=lr, momentum=0.9, weight_decay=wd)
        for _ in range(3):
            opt.zero_grad()
            model(torch.ones(2, 8)).sum().backward()
            opt.step()
        results.append(float(s))
    assert results[0] == pytest.approx(results[1], rel=1e-6, abs=1e-7)
    assert results[0] > -3.0  # the decay pulled the negative s up


def test_remove_bakes_the_sparse_weights_and_keeps_the_function() -> None:
    model = _model()
    apply_str(model, ["0.weight"], s_init=-1.5)
    x = torch.randn(7, 8)
    before = model(x).detach()
    masks = remove_str(model)
    assert not parametrize.is_parametrized(model[0])
    torch.testing.assert_close(model(x), before)
    assert set(masks) == {"0.weight"}
    assert torch.equal(masks["0.weight"], model[0].weight != 0)
    assert 0 < int(masks["0.weight"].sum()) < masks["0.weight"].numel()
    assert not any(n.endswith(".s") for n, _ in model.named_parameters())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"names": []}, "names"),
        ({"names": ["0.bias"]}, "names"),
        ({"names": ["7.weight"]}, "names"),
        ({"s_init": float("nan")}, "s_init"),
        ({"st_decay": -1.0}, "st_decay"),
    ],
)
def test_bad_input_raises_before_touching_the_model(kwargs: dict, match: str) -> None:
    model = _model()
    args = {"names": ["0.weight", "2.weight"], "s_init": -2.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        apply_str(model, **args)
    assert not parametrize.is_parametrized(model[0])
    with pytest.raises(ValueError, match="no STR"):
        remove_str(model)

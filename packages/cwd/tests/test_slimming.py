import copy

import pytest
import torch
from torch import nn

from sparse_cwd import (
    SparsityAwareSlimming,
    TinyDetector,
    eligible_norms,
    fork_ignored_norms,
    l1_rate,
)
from sparsecore.export import remove_channels
from sparsecore.select import keep_count

from .conftest import SHAPE, trained_like


def _bns(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}


def test_l1_rate_is_the_forks_decaying_schedule():
    assert l1_rate(1e-4, 0, 10) == pytest.approx(1e-4)
    assert l1_rate(1e-4, 5, 10) == pytest.approx(0.55e-4)
    assert l1_rate(1e-4, 9, 10) == pytest.approx(0.19e-4)
    assert l1_rate(2e-3, 3, 4) == pytest.approx(2e-3 * (1 - 0.9 * 3 / 4))
    with pytest.raises(ValueError, match="epochs"):
        l1_rate(1e-4, 0, 0)


def test_rate_follows_the_epoch_of_the_step_and_is_clamped(detector_setup):
    _, _, method = detector_setup
    saved = method.step
    try:
        got = []
        for step in range(10):  # steps_per_epoch=2, epochs=4: e = 0,0,1,1,2,2,3,3,3,3
            method.step = step
            got.append(method.current_rate())
        want = [l1_rate(1e-2, min(s // 2, 3), 4) for s in range(10)]
        assert got == pytest.approx(want)
    finally:
        method.step = saved


def test_only_eligible_batchnorms_get_the_l1_subgradients(detector_setup):
    model, opt, method = detector_setup
    ignored = set(fork_ignored_norms(model))
    eligible = {n for names in method.eligible.values() for n in names}
    bns = _bns(model)
    assert eligible and eligible.isdisjoint(ignored) and eligible | ignored == set(bns)
    opt.zero_grad(set_to_none=False)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    rate = method.current_rate()
    opt.step()  # lr 0: the hook adds the subgradients, nothing moves
    for name, bn in bns.items():
        if name in eligible:
            assert torch.equal(bn.weight.grad, rate * torch.sign(bn.weight.detach()))
            assert torch.equal(bn.bias.grad, 10 * 1e-2 * torch.sign(bn.bias.detach()))
        else:
            assert not bn.weight.grad.any() and not bn.bias.grad.any()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(not c.weight.grad.any() for c in convs)
    method.step = 0  # the lr-0 step counted; keep the fixture at step 0


def test_coupled_groups_are_excluded_without_any_ignore_list(detector_setup):
    _, _, method = detector_setup
    groups = method.channel_groups
    plain = eligible_norms(groups)
    coupled = [g for g in groups.prunable() if len(g.producers) > 1]
    assert coupled and all(g.name not in plain for g in coupled)
    assert set(eligible_norms(groups, ignore_coupled=False)) > set(plain)
    assert "head.heat.0.conv" in plain and "head.heat.0.conv" not in method.eligible


def _fresh(rule, ratio=0.5):
    torch.manual_seed(0)
    model = trained_like(TinyDetector(3, width=4), seed=1)
    method = SparsityAwareSlimming(
        sparsity=ratio, input_shape=SHAPE, rule=rule, ignore=tuple(fork_ignored_norms(model))
    ).setup(model)
    return model, method


@pytest.mark.parametrize(("rule", "ratio"), [("layer", 0.5), ("global", 0.3)])
def test_pruning_removes_exactly_the_planned_channels_and_rebuild_is_exact(rule, ratio):
    model, method = _fresh(rule, ratio)
    before = {n: bn.weight.detach().abs().clone() for n, bn in _bns(model).items()}
    keeps = method.prune()
    if rule == "layer":  # the paper: every eligible layer keeps its top half by |gamma|
        for group, keep in keeps.items():
            (bn,) = method.eligible[group]
            k = keep_count(keep.numel(), 1 - ratio)
            assert int(keep.sum()) == k
            assert torch.equal(keep, before[bn] >= before[bn].sort(descending=True).values[k - 1])
    else:  # the fork: sorted(all eligible |gamma|)[int(n * ratio)], keep |gamma| >= it
        norms = [bn for names in method.eligible.values() for bn in names]
        flat = torch.cat([before[bn] for bn in norms])
        threshold = flat.sort().values[int(flat.numel() * ratio)]
        assert method.threshold == pytest.approx(float(threshold))
        for group, keep in keeps.items():
            assert torch.equal(keep, before[method.eligible[group][0]] >= threshold)
    x = torch.randn(3, *SHAPE)
    plain = method.finalize().eval()
    for name, bn in _bns(plain).items():  # masked model: gamma and beta zeroed, as the fork
        group = next((g for g, names in method.eligible.items() if name in names), None)
        if group is not None:
            assert not bn.weight[~keeps[group]].any() and not bn.bias[~keeps[group]].any()
    masked = [t.clone() for t in plain(x)]
    widths = {n: bn.num_features for n, bn in _bns(plain).items()}
    remove_channels(plain, x[:1])
    for got, want in zip(plain(x), masked, strict=True):
        assert torch.allclose(got, want, atol=1e-5)
    for name, bn in _bns(plain).items():
        group = next((g for g, names in method.eligible.items() if name in names), None)
        expected = int(keeps[group].sum()) if group is not None else widths[name]
        assert bn.num_features == expected


def test_global_threshold_that_would_empty_a_layer_raises():
    model, method = _fresh("global", 0.3)
    with torch.no_grad():  # one eligible layer far below all others
        _bns(model)["stem.bn"].weight.mul_(1e-3)
    with pytest.raises(ValueError, match="ratio"):
        method.prune()


def test_bad_options_name_the_field_before_the_model_is_touched():
    with pytest.raises(ValueError, match="input_shape"):
        SparsityAwareSlimming()
    with pytest.raises(ValueError, match="rule"):
        SparsityAwareSlimming(input_shape=SHAPE, rule="percentile")
    with pytest.raises(ValueError, match="l1_rate"):
        SparsityAwareSlimming(input_shape=SHAPE, l1_rate=-1.0)
    with pytest.raises(TypeError, match="ignore"):
        SparsityAwareSlimming(input_shape=SHAPE, ignore="head.*")
    mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    state = copy.deepcopy(mlp.state_dict())
    with pytest.raises(ValueError, match="BatchNorm"):
        SparsityAwareSlimming(input_shape=(4,)).setup(mlp)
    assert all(torch.equal(v, mlp.state_dict()[k]) for k, v in state.items())

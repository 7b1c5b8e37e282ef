import copy

import pytest
import torch

from sparse_sms import (
    SparseModelSoup,
    check_same_masks,
    greedy_soup,
    merge,
    recalibrate_bn,
    uniform_weights,
)

torch.set_num_threads(1)


def masked_ingredients(make_net, make_data, m: int = 3, sparsity: float = 0.7):
    """m copies sharing one magnitude mask, each trained a few different random steps."""
    base = make_net()
    pruner = SparseModelSoup(sparsity=sparsity, n_phases=1).setup(base)
    masks = {n: k.clone() for n, k in pruner.masks.masks().items()}
    plain = pruner.finalize()
    states = []
    x, y = make_data()
    for i in range(m):
        model = copy.deepcopy(plain)
        method = SparseModelSoup(sparsity=sparsity, n_phases=1).setup(model, masks=masks)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        method.attach(opt)
        gen = torch.Generator().manual_seed(i)
        for _ in range(3):
            idx = torch.randperm(len(x), generator=gen)[:16]
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    return states, masks


def test_soup_zero_set_is_the_shared_mask_and_nnz_unchanged(net_factory, data_factory):
    states, masks = masked_ingredients(net_factory, data_factory)
    soup = merge(states)
    for name, mask in masks.items():
        weight = soup[name]
        assert torch.equal(weight != 0, mask), name
        assert int((weight != 0).sum()) == int(mask.sum())
        assert torch.equal(soup[f"{name}_mask"], mask)
    # the average really averages: a kept weight equals the float64 mean of the ingredients
    name = next(iter(masks))
    ref = torch.stack([s[name].double() for s in states]).mean(0).float()
    assert torch.allclose(soup[name], ref, atol=0, rtol=1e-6)
    assert not torch.equal(soup[name], states[0][name])


def test_soup_of_identical_copies_is_the_model(net_factory, data_factory):
    states, _ = masked_ingredients(net_factory, data_factory, m=1)
    for m in (2, 3, 5, 7):
        soup = merge([states[0]] * m)
        for key, value in states[0].items():
            assert torch.equal(soup[key], value), (m, key)


def test_uniform_weights_sum_to_one_and_weighted_merge(net_factory, data_factory):
    for m in range(1, 9):
        w = uniform_weights(m)
        assert len(w) == m and abs(sum(w) - 1.0) < 1e-12 and len(set(w)) == 1
    states, masks = masked_ingredients(net_factory, data_factory, m=2)
    soup = merge(states, [0.25, 0.75])
    name = next(iter(masks))
    ref = (0.25 * states[0][name].double() + 0.75 * states[1][name].double()).float()
    assert torch.equal(soup[name], ref)
    with pytest.raises(ValueError, match="weights"):
        merge(states, [0.5, 0.6])
    with pytest.raises(ValueError, match="weights"):
        merge(states, [1.5, -0.5])


def test_merging_different_masks_raises(net_factory, data_factory):
    states, masks = masked_ingredients(net_factory, data_factory, m=2)
    name = next(iter(masks))
    other = dict(states[1])
    flipped = other[f"{name}_mask"].clone()
    flipped.view(-1)[0] = ~flipped.view(-1)[0]
    other[f"{name}_mask"] = flipped
    with pytest.raises(ValueError, match="mask"):
        merge([states[0], other])
    with pytest.raises(ValueError, match="mask"):
        check_same_masks([states[0], other])
    with pytest.raises(ValueError, match="keys"):
        merge([states[0], {k: v for k, v in states[1].items() if k != name}])


def test_greedy_soup_order_and_acceptance_rule(net_factory, data_factory):
    states, _ = masked_ingredients(net_factory, data_factory, m=4)
    scores = [0.5, 0.9, 0.7, 0.7]
    # fake validation scores of candidate soups, keyed by the set of ingredients inside
    table = {(1, 2): 0.9, (1, 2, 3): 0.85, (0, 1, 2): 0.95}
    merged = {key: merge([states[i] for i in key])["fc.bias"] for key in table}
    calls = []

    def evaluate(state):
        for key, bias in merged.items():
            if torch.equal(state["fc.bias"], bias):
                calls.append(key)
                return table[key]
        raise AssertionError("unexpected candidate soup")

    result = greedy_soup(states, scores, evaluate)
    # order: 1 (0.9), 2 (0.7), 3 (0.7, the tie keeps index order), 0 (0.5)
    assert result.order == [1, 2, 3, 0]
    assert calls == [(1, 2), (1, 2, 3), (0, 1, 2)]
    # 0.9 >= 0.9 is accepted (>=), 0.85 rejected, 0.95 accepted
    assert result.selected == [1, 2, 0]
    assert result.score == 0.95
    ref = merge([states[i] for i in (1, 2, 0)])
    assert all(torch.equal(result.state[k], ref[k]) for k in ref)


def test_greedy_soup_never_below_its_first_ingredient(net_factory, data_factory):
    states, _ = masked_ingredients(net_factory, data_factory, m=3)
    x, y = data_factory(seed=1)
    holder = net_factory()
    SparseModelSoup(sparsity=0.7, n_phases=1).setup(
        holder, masks={k[: -len("_mask")]: v for k, v in states[0].items() if k.endswith("_mask")}
    )

    def evaluate(state):
        holder.load_state_dict(state)
        recalibrate_bn(holder, [x])
        holder.eval()
        with torch.no_grad():
            return float((holder(x).argmax(1) == y).float().mean())

    scores = [evaluate(s) for s in states]
    result = greedy_soup(states, scores, evaluate)
    assert result.selected[0] == max(range(3), key=lambda i: (scores[i], -i))
    assert evaluate(result.state) >= max(scores)


def test_bn_recalibration_changes_running_stats_not_parameters(net_factory, data_factory):
    model = net_factory()
    x, _ = data_factory()
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    mean0, var0 = model.bn.running_mean.clone(), model.bn.running_var.clone()
    batches = [x[i : i + 8] for i in range(0, 48, 8)]
    used = recalibrate_bn(model, batches, fraction=0.5)
    assert used == 3
    assert not torch.equal(model.bn.running_mean, mean0)
    assert not torch.equal(model.bn.running_var, var0)
    for n, p in model.named_parameters():
        assert torch.equal(p, params[n]), n
    assert model.training


def test_bn_recalibration_cumulative_is_exact_batch_average(net_factory, data_factory):
    model = net_factory()
    model.eval()
    x, _ = data_factory()
    batches = [x[i : i + 12] for i in range(0, 48, 12)]
    recalibrate_bn(model, batches, fraction=1.0, cumulative=True)
    assert not model.training
    with torch.no_grad():
        feats = [model.conv(b) for b in batches]
    means = torch.stack([f.mean((0, 2, 3)) for f in feats]).mean(0)
    assert torch.allclose(model.bn.running_mean, means, atol=1e-6)
    assert model.bn.momentum == 0.1  # restored
    # the official mode (EMA, momentum 0.1) over one batch from reset: 0.1 * batch mean
    recalibrate_bn(model, batches[:1], fraction=1.0)
    assert torch.allclose(model.bn.running_mean, 0.1 * feats[0].mean((0, 2, 3)), atol=1e-6)


def test_bn_recalibration_fraction_zero_and_no_bn(net_factory, data_factory):
    model = net_factory()
    mean0 = model.bn.running_mean.clone()
    assert recalibrate_bn(model, [torch.randn(4, 1, 4, 4)], fraction=0.0) == 0
    assert torch.equal(model.bn.running_mean, mean0)
    mlp = torch.nn.Sequential(torch.nn.Linear(3, 2))
    assert recalibrate_bn(mlp, [torch.randn(2, 3)]) == 0
    with pytest.raises(ValueError, match="fraction"):
        recalibrate_bn(model, [torch.randn(4, 1, 4, 4)], fraction=2.0)

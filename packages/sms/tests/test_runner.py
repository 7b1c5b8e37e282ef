import copy

import pytest
import torch

import sparse_sms as sms
from sparse_sms import SMSConfig, make_train_fn

torch.set_num_threads(1)


def accuracy_fn(x, y):
    def evaluate(model):
        model.eval()
        with torch.no_grad():
            acc = float((model(x).argmax(1) == y).float().mean())
        model.train()
        return acc

    return evaluate


def setup(net_factory, data_factory):
    x, y = data_factory(48, seed=0)
    xv, yv = data_factory(24, seed=1)
    model = net_factory()
    torch.optim.SGD(model.parameters(), lr=0.1)  # a "pretrained" model: random is enough here
    batches = [x[i : i + 16] for i in range(0, 48, 16)]
    return model, make_train_fn(x, y, batch_size=16), accuracy_fn(xv, yv), batches


def test_run_reaches_phase_sparsities_and_soup_zeros_are_the_mask(net_factory, data_factory):
    model, train_fn, eval_fn, batches = setup(net_factory, data_factory)
    before = copy.deepcopy(model.state_dict())
    masks_seen = {}

    def recording_train(m, method, ing):
        masks_seen.setdefault(ing.phase, []).append(
            {n: k.clone() for n, k in method.masks.masks().items()}
        )
        train_fn(m, method, ing)

    cfg = SMSConfig(
        sparsity=0.8,
        n_phases=2,
        n_ingredients=3,
        retrain_epochs=1,
        max_lr=0.05,
        bn_recalibration_fraction=1.0,
    )
    result = sms.run(model, recording_train, eval_fn, cfg, bn_batches=batches)
    # the input model is untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    total = sum(k.numel() for k in result.masks.values())
    active, q = total, cfg.prune_fraction
    for phase in result.phases:
        active -= round(q * active)
        assert phase.sparsity == pytest.approx(1 - active / total)
        assert len(phase.ingredient_scores) == 3 and phase.selected == [0, 1, 2]
    assert abs(result.phases[-1].sparsity - 0.8) <= 2 / total
    # every ingredient of a phase trained on the same mask; masks only shrink between phases
    for masks in masks_seen.values():
        assert len(masks) == 3
        for other in masks[1:]:
            assert all(torch.equal(masks[0][n], other[n]) for n in masks[0])
    assert all(not (masks_seen[2][0][n] & ~masks_seen[1][0][n]).any() for n in result.masks)
    # the soup is a plain model whose target zeros are exactly the final mask
    params = dict(result.model.named_parameters())
    assert not any(k.endswith("_mask") for k in result.model.state_dict())
    for name, mask in result.masks.items():
        assert torch.equal(params[name] != 0, mask), name
    assert len(result.ingredients) == 3


def test_single_ingredient_soup_is_the_ingredient_and_equals_imp(net_factory, data_factory):
    model, train_fn, eval_fn, batches = setup(net_factory, data_factory)
    cfg = SMSConfig(sparsity=0.7, n_phases=2, n_ingredients=1, retrain_epochs=1, max_lr=0.05)
    result = sms.run(model, train_fn, eval_fn, cfg, bn_batches=batches)
    ingredient = result.ingredients[0].state_dict()
    assert all(torch.equal(v, ingredient[k]) for k, v in result.model.state_dict().items())
    assert result.phases[-1].soup_score == result.phases[-1].ingredient_scores[0]


def test_greedy_soup_is_at_least_its_best_ingredient(net_factory, data_factory):
    model, train_fn, eval_fn, batches = setup(net_factory, data_factory)
    cfg = SMSConfig(
        sparsity=0.8, n_phases=2, n_ingredients=3, retrain_epochs=1, max_lr=0.1, soup="greedy"
    )
    result = sms.run(model, train_fn, eval_fn, cfg, bn_batches=batches)
    for phase in result.phases:
        best = max(phase.ingredient_scores)
        assert phase.soup_score >= best
        first = max(range(3), key=lambda i: (phase.ingredient_scores[i], -i))
        assert phase.selected[0] == first


def test_ingredients_differ_in_exactly_the_varied_hyperparameter(net_factory, data_factory):
    model, train_fn, eval_fn, batches = setup(net_factory, data_factory)
    recipes = []

    def recording_train(m, method, ing):
        recipes.append(ing)
        train_fn(m, method, ing)

    cases = {
        "seed": None,
        "weight_decay": (0.0, 1e-4, 1e-3),
        "retrain_length": (1, 2, 1),
        "lr": (0.01, 0.05, 0.1),
    }
    for vary, values in cases.items():
        recipes.clear()
        cfg = SMSConfig(
            sparsity=0.5,
            n_phases=1,
            retrain_epochs=1,
            max_lr=0.05,
            vary=vary,
            values=values,
            seed=7,
        )
        sms.run(model, recording_train, eval_fn, cfg, bn_batches=batches)
        assert [r.index for r in recipes] == [0, 1, 2]
        seeds = [r.seed for r in recipes]
        assert seeds == ([7, 8, 9] if vary == "seed" else [7, 7, 7])
        assert [r.weight_decay for r in recipes] == list(
            values if vary == "weight_decay" else [1e-4] * 3
        )
        assert [r.epochs for r in recipes] == list(values if vary == "retrain_length" else [1] * 3)
        assert [r.start_lr for r in recipes] == list(values if vary == "lr" else [None] * 3)


def test_run_input_errors(net_factory, data_factory):
    model, train_fn, eval_fn, batches = setup(net_factory, data_factory)
    cfg = SMSConfig(sparsity=0.5, n_phases=1, retrain_epochs=1)
    with pytest.raises(ValueError, match="max_lr"):
        sms.run(model, train_fn, eval_fn, cfg, bn_batches=batches)
    with pytest.raises(ValueError, match="bn_batches"):
        sms.run(model, train_fn, eval_fn, cfg, lr_history=[0.1])
    with pytest.raises(TypeError, match="config"):
        sms.run(model, train_fn, eval_fn, {"sparsity": 0.5})
    with pytest.raises(TypeError, match="model"):
        sms.run("net", train_fn, eval_fn, cfg, lr_history=[0.1])


def test_gradual_variant_follows_the_cubic_schedule(net_factory, data_factory):
    model, train_fn, eval_fn, batches = setup(net_factory, data_factory)
    cfg = SMSConfig(sparsity=0.8, n_ingredients=2, max_lr=0.05)
    result = sms.run_gradual(
        model, train_fn, eval_fn, cfg, total_epochs=4, prune_epochs=[1, 2, 3], bn_batches=batches
    )
    targets = sms.gradual_sparsities(0.8, 3)
    assert targets[-1] == pytest.approx(0.8)
    assert targets == pytest.approx([0.8 * (1 - (1 - k / 3) ** 3) for k in (1, 2, 3)])
    total = sum(k.numel() for k in result.masks.values())
    assert [p.phase for p in result.phases] == [0, 1, 2, 3]
    assert result.phases[0].sparsity == 0.0 and len(result.phases[0].ingredient_scores) == 1
    for phase, target in zip(result.phases[1:], targets, strict=True):
        assert abs(phase.sparsity - target) <= 1 / total
        assert len(phase.ingredient_scores) == 2
    params = dict(result.model.named_parameters())
    for name, mask in result.masks.items():
        assert torch.equal(params[name] != 0, mask)
    with pytest.raises(ValueError, match="prune_epochs"):
        sms.run_gradual(model, train_fn, eval_fn, cfg, total_epochs=4, prune_epochs=[2, 2])
    with pytest.raises(ValueError, match="vary"):
        sms.run_gradual(
            model,
            train_fn,
            eval_fn,
            SMSConfig(max_lr=0.1, vary="lr", values=(1, 2, 3)),
            total_epochs=4,
            prune_epochs=[1],
        )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_run_on_cuda_matches_the_mask(net_factory, data_factory):
    x, y = data_factory(48, seed=0)
    model = net_factory().cuda()

    def eval_fn(m):
        m.eval()
        with torch.no_grad():
            acc = float((m(x.cuda()).argmax(1).cpu() == y).float().mean())
        m.train()
        return acc

    cfg = SMSConfig(
        sparsity=0.8, n_phases=2, n_ingredients=2, retrain_epochs=1, max_lr=0.05, soup="greedy"
    )
    result = sms.run(
        model, make_train_fn(x, y, batch_size=16), eval_fn, cfg, bn_batches=[x[:16], x[16:32]]
    )
    params = dict(result.model.named_parameters())
    for name, mask in result.masks.items():
        assert params[name].is_cuda
        assert torch.equal(params[name] != 0, mask)


def test_next_phase_prunes_the_soup_and_ingredients_start_from_it(net_factory, data_factory):
    """Phase 2's mask is the global top-k of |soup_1| and every ingredient starts at the soup."""
    model, train_fn, eval_fn, batches = setup(net_factory, data_factory)
    starts: dict[int, list[dict]] = {}
    ends: dict[int, list[dict]] = {}

    def recording_train(m, method, ing):
        starts.setdefault(ing.phase, []).append(
            {n: p.detach().clone() for n, p in m.named_parameters()}
        )
        train_fn(m, method, ing)
        ends.setdefault(ing.phase, []).append(
            {n: p.detach().clone() for n, p in m.named_parameters()}
        )

    cfg = SMSConfig(
        sparsity=0.8, n_phases=2, n_ingredients=3, retrain_epochs=1, max_lr=0.05, soup="uniform"
    )
    result = sms.run(model, recording_train, eval_fn, cfg, bn_batches=batches)
    names = list(result.masks)
    # the uniform soup of phase 1, by hand (float64 mean of the trained ingredients)
    soup = {
        n: torch.stack([e[n].double() for e in ends[1]]).mean(0).to(ends[1][0][n].dtype)
        for n in ends[1][0]
    }
    phase1 = {n: ends[1][0][n] != 0 for n in names}  # trained masked weights: zeros = mask 1
    start2 = starts[2]
    assert all(torch.equal(start2[0][n], s[n]) for s in start2[1:] for n in start2[0])
    mask2 = {n: start2[0][n] != 0 for n in names}
    for name, value in start2[0].items():
        expected = soup[name] * mask2[name] if name in mask2 else soup[name]
        torch.testing.assert_close(value, expected, rtol=0, atol=1e-6)
    # phase 2 removed round(q * active) of phase 1's active entries, the smallest |soup|
    active = sum(int(m.sum()) for m in phase1.values())
    kept = sum(int(m.sum()) for m in mask2.values())
    assert kept == active - round(cfg.prune_fraction * active)
    assert all(not (mask2[n] & ~phase1[n]).any() for n in names)
    kept_mag = torch.cat([soup[n].abs()[mask2[n]] for n in names])
    removed_mag = torch.cat([soup[n].abs()[phase1[n] & ~mask2[n]] for n in names])
    assert kept_mag.min() >= removed_mag.max() - 1e-6
    # and not of the phase-1 starting point (the pruned pretrained model)
    start1 = {n: starts[1][0][n].abs() for n in names}
    by_start = torch.cat([torch.where(phase1[n], start1[n], -1.0).flatten() for n in names])
    from_start = torch.zeros_like(by_start, dtype=torch.bool)
    from_start[by_start.argsort(descending=True)[:kept]] = True
    assert not torch.equal(from_start, torch.cat([mask2[n].flatten() for n in names]))

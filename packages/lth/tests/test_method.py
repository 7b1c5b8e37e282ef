import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from sparse_lth import LotteryTicket, LotteryTicketConfig, TrainSpec, advance_scheduler

torch.set_num_threads(1)


def _train(model, optimizer, scheduler, steps, seed=0):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(16, 12, generator=gen)
        y = torch.randint(0, 3, (16,), generator=gen)
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()


@torch.no_grad()
def _perturb(method, seed):
    gen = torch.Generator().manual_seed(seed)
    for param in method.masks.params().values():
        param.add_(torch.randn(param.shape, generator=gen) * 0.3)
    method.masks.apply()


def test_masks_monotone_and_exact_counts(make_model):
    model = make_model()
    method = LotteryTicket(fraction=0.2).setup(model)
    previous = {n: m.clone() for n, m in method.masks.masks().items()}
    for level in range(1, 9):
        _perturb(method, level)  # "training" changes the magnitudes between levels
        before = sum(int(m.sum()) for m in previous.values())
        unpruned = torch.cat(
            [p.detach().abs()[previous[n]] for n, p in method.masks.params().items()]
        )
        method.prune_round()
        masks = method.masks.masks()
        after = sum(int(m.sum()) for m in masks.values())
        assert after == before - math.ceil(0.2 * before)
        for name, mask in masks.items():
            assert not (mask & ~previous[name]).any(), "mask grew"
        # brute force: exactly the ceil(f * nnz) smallest unpruned magnitudes were removed
        removed = torch.cat(
            [p.detach().abs()[previous[n] & ~masks[n]] for n, p in method.masks.params().items()]
        )
        threshold = unpruned.sort().values[before - after - 1]
        assert removed.numel() == before - after
        assert removed.max() <= threshold
        kept_vals = torch.cat(
            [p.detach().abs()[masks[n]] for n, p in method.masks.params().items()]
        )
        assert kept_vals.min() >= threshold
        assert method.round == level
        previous = {n: m.clone() for n, m in masks.items()}
    assert method.masks.sparsity() == pytest.approx(1 - 0.8**8, abs=1e-2)


def test_layer_scope_prunes_each_tensor(make_model):
    method = LotteryTicket(fraction=0.3, scope="layer").setup(make_model())
    nnz = method.masks.nnz()
    _perturb(method, 1)
    method.prune_round()
    for name, count in method.masks.nnz().items():
        assert count == nnz[name] - math.ceil(0.3 * nnz[name])


def test_ignored_layers_never_masked_but_counted(make_model):
    model = make_model()
    method = LotteryTicket(fraction=0.2, layers_to_ignore=("4.*",)).setup(model)
    assert method.ignored == ["4.weight"]
    for level in range(6):
        before = sum(method.masks.nnz().values())
        _perturb(method, level)
        method.prune_round()
        # OpenLTH: ceil(f * nnz) with nnz counted over every mask, ignored ones included
        assert sum(method.masks.nnz().values()) == before - math.ceil(0.2 * before)
        assert method.masks.mask("4.weight").all()
        assert method.masks.param("4.weight").ne(0).all()


def test_bad_layers_to_ignore_raise_before_touching(make_model):
    model = make_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="layers_to_ignore"):
        LotteryTicket(layers_to_ignore=("nope.weight",)).setup(model)
    with pytest.raises(ValueError, match="layers_to_ignore"):
        LotteryTicket(layers_to_ignore=("*",)).setup(model)
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with pytest.raises(TypeError, match="layers_to_ignore"):
        LotteryTicket(layers_to_ignore=(3,))


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("fraction", 0.0, ValueError),
        ("fraction", 1.0, ValueError),
        ("fraction", "0.2", TypeError),
        ("rewind_step", -1, ValueError),
        ("rewind_step", 1.5, TypeError),
        ("scope", "channel", ValueError),
    ],
)
def test_bad_config_names_the_field(field, value, error):
    with pytest.raises(error, match=field):
        LotteryTicketConfig(**{field: value})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("steps", 0),
        ("batch_size", 0),
        ("lr", -1.0),
        ("momentum", 1.0),
        ("schedule", "exp"),
        ("optimizer", "lbfgs"),
        ("milestones", (5, 3)),
        ("gamma", 0.0),
    ],
)
def test_bad_train_spec_names_the_field(field, value):
    options = {"steps": 10, field: value}
    if field == "milestones":
        options["schedule"] = "step"
    with pytest.raises((ValueError, TypeError), match=field):
        TrainSpec(**options)


def test_rewind_is_bit_exact_and_pruned_stay_zero(make_model):
    k = 5
    spec = TrainSpec(steps=30, lr=0.05, schedule="cosine")
    model = make_model()
    method = LotteryTicket(fraction=0.3, rewind_step=k).setup(model)
    optimizer = spec.make_optimizer(model)
    method.attach(optimizer)
    scheduler = spec.make_scheduler(optimizer)
    _train(model, optimizer, scheduler, k, seed=1)
    theta_k = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert all(torch.equal(method.rewind_state[n], theta_k[n]) for n in theta_k)
    _train(model, optimizer, scheduler, spec.steps - k, seed=2)
    method.prune_round()
    method.prune_round()
    optimizer = spec.make_optimizer(model)
    scheduler = spec.make_scheduler(optimizer)
    method.rewind(optimizer, scheduler)
    assert method.step == k
    masks = method.masks.masks()
    for name, param in model.named_parameters():
        if name in masks:
            assert torch.equal(param[masks[name]], theta_k[name][masks[name]])
            assert not param[~masks[name]].any()
        else:
            assert torch.equal(param, theta_k[name])
    _train(model, optimizer, scheduler, 10, seed=3)
    for name, mask in method.masks.masks().items():
        assert not method.masks.param(name)[~mask].any()
        assert method.masks.param(name)[mask].ne(theta_k[name][mask]).any()  # it did train


def test_lr_at_first_retraining_step_is_schedule_of_k(make_model):
    k = 7
    spec = TrainSpec(steps=40, lr=0.1, schedule="cosine", warmup_steps=3)
    model = make_model()
    method = LotteryTicket(rewind_step=k).setup(model)
    optimizer = spec.make_optimizer(model)
    method.attach(optimizer)
    _train(model, optimizer, spec.make_scheduler(optimizer), spec.steps)
    method.prune_round()
    optimizer = spec.make_optimizer(model)
    scheduler = spec.make_scheduler(optimizer)
    method.rewind(optimizer, scheduler)
    seen = []
    optimizer.register_step_pre_hook(lambda opt, a, kw: seen.append(opt.param_groups[0]["lr"]))
    _train(model, optimizer, scheduler, 2)
    assert seen[0] == pytest.approx(spec.lr_at(k), rel=1e-12)
    assert seen[1] == pytest.approx(spec.lr_at(k + 1), rel=1e-12)
    assert abs(spec.lr_at(k) - spec.lr_at(0)) > 1e-3


def test_rewind_rejects_used_optimizer_or_scheduler(make_model):
    spec = TrainSpec(steps=10)
    model = make_model()
    method = LotteryTicket().setup(model)
    optimizer = spec.make_optimizer(model)
    method.attach(optimizer)
    _train(model, optimizer, None, 2)
    with pytest.raises(ValueError, match="optimizer"):
        method.rewind(optimizer)
    fresh = spec.make_optimizer(model)
    scheduler = spec.make_scheduler(fresh)
    advance_scheduler(scheduler, 2)
    with pytest.raises(ValueError, match="scheduler"):
        method.rewind(fresh, scheduler)
    other = spec.make_scheduler(spec.make_optimizer(model))
    with pytest.raises(ValueError, match="scheduler"):
        method.rewind(spec.make_optimizer(model), other)


def test_random_reinit_same_mask_other_weights(make_model):
    model = make_model(0)
    method = LotteryTicket(fraction=0.5).setup(model)
    _perturb(method, 3)
    method.prune_round()
    masks = {n: m.clone() for n, m in method.masks.masks().items()}
    method.rewind()
    ticket = {n: p.detach().clone() for n, p in method.masks.params().items()}
    method.randomly_reinitialize(make_model(99))
    fresh = dict(make_model(99).named_parameters())
    for name, mask in method.masks.masks().items():
        assert torch.equal(mask, masks[name])
        param = method.masks.param(name)
        assert not param[~mask].any()
        assert torch.equal(param[mask], fresh[name].detach()[mask])
        assert not torch.equal(param[mask], ticket[name][mask])
    with pytest.raises(ValueError, match="fresh"):
        method.randomly_reinitialize(nn.Linear(3, 3))


@pytest.mark.parametrize("strategy", ["layerwise", "global"])
def test_random_prune_same_counts(make_model, strategy):
    method = LotteryTicket(fraction=0.5, layers_to_ignore=("4.weight",), seed=3).setup(make_model())
    _perturb(method, 1)
    method.prune_round()
    before = {n: m.clone() for n, m in method.masks.masks().items()}
    method.randomly_prune(strategy)
    after = method.masks.masks()
    assert after["4.weight"].all()
    if strategy == "layerwise":
        assert all(int(after[n].sum()) == int(before[n].sum()) for n in before)
    assert sum(int(m.sum()) for m in after.values()) == sum(int(m.sum()) for m in before.values())
    assert any(not torch.equal(after[n], before[n]) for n in before if n != "4.weight")
    with pytest.raises(ValueError, match="strategy"):
        method.randomly_prune("even")


def test_initial_sparsity_is_one_shot_magnitude(make_model):
    model = make_model()
    weights = {
        n: p.detach().abs().clone() for n, p in model.named_parameters() if n.endswith("weight")
    }
    method = LotteryTicket(sparsity=0.6).setup(model)
    total = sum(w.numel() for w in weights.values())
    assert sum(method.masks.nnz().values()) == math.floor(0.4 * total + 1e-6)
    kept = torch.cat([weights[n][m] for n, m in method.masks.masks().items()])
    dropped = torch.cat([weights[n][~m] for n, m in method.masks.masks().items()])
    assert kept.min() >= dropped.max()


def test_rewind_to_zero_with_initial_sparsity_restores_the_unpruned_init(make_model):
    """Regression: the rewind point used to be saved after the initial pruning (zeros)."""
    model = make_model()
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    method = LotteryTicket(sparsity=0.6, rewind_step=0).setup(model)
    for name, value in init.items():
        assert torch.equal(method.rewind_state[name], value), name
    method.randomly_prune("layerwise")
    method.rewind()
    for name, mask in method.masks.masks().items():
        param = method.masks.param(name)
        assert torch.equal(param[mask], init[name][mask])
        assert param[mask].ne(0).all()  # none of the kept weights starts at zero


def test_each_level_prunes_the_previous_levels_trained_weights(make_model):
    """Level L's mask is the global top-k of |w| after level L-1's training, not of θ_k."""
    spec = TrainSpec(steps=20, lr=0.05, schedule="constant")
    model = make_model()
    method = LotteryTicket(fraction=0.3, rewind_step=0).setup(model)
    optimizer = spec.make_optimizer(model)
    method.attach(optimizer)
    for level in range(1, 4):
        _train(model, optimizer, None, spec.steps, seed=level)
        trained = {n: p.detach().abs().clone() for n, p in method.masks.params().items()}
        previous = {n: m.clone() for n, m in method.masks.masks().items()}
        method.prune_round()
        flat = torch.cat([torch.where(previous[n], trained[n], -1.0).flatten() for n in trained])
        keep = sum(method.masks.nnz().values())
        expected = torch.zeros_like(flat, dtype=torch.bool)
        expected[flat.argsort(descending=True, stable=True)[:keep]] = True
        got = torch.cat([method.masks.mask(n).flatten() for n in trained])
        assert torch.equal(got, expected), level
        rewound = torch.cat([method.rewind_state[n].abs().flatten() for n in trained])
        from_init = torch.zeros_like(expected)
        from_init[torch.where(flat >= 0, rewound, -1.0).argsort(descending=True)[:keep]] = True
        assert not torch.equal(got, from_init)  # the ranking is not that of θ_0
        optimizer = spec.make_optimizer(model)
        method.rewind(optimizer)

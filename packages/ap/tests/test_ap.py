"""The AP step, its composition with sparsecore's IMP, options and the cycle driver."""

import copy
import math

import pytest
import torch
from torch.nn import functional as F

from sparse_ap import ActivateWhilePruning, cycles_to_reach, run_cycles, stagnant_negative_weights
from sparsecore import IMP
from sparsecore.bench import Task
from sparsecore.testing import tiny_mlp

torch.set_num_threads(1)


def train_steps(model, optimizer, steps, seed=0):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(16, 16, generator=gen)
        y = torch.randint(0, 4, (16,), generator=gen)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def sgd(model):
    return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)


# ---------------------------------------------------------------------- the selection
def test_selection_matches_a_brute_force_reference():
    gen = torch.Generator().manual_seed(3)
    shapes = {"a": (5, 7), "b": (11,), "c": (3, 2, 2)}
    masks = {n: torch.rand(s, generator=gen) > 0.3 for n, s in shapes.items()}
    start = {n: torch.randn(s, generator=gen) for n, s in shapes.items()}
    weights = {n: start[n] + 0.1 * torch.randn(s, generator=gen) for n, s in shapes.items()}
    weights["a"][0, :3] = start["a"][0, :3] - 0.05  # ties in |Δ|
    for count in (0, 1, 4, 9):
        chosen = stagnant_negative_weights(masks, weights, start, count)
        eligible = []
        for name in shapes:
            flat_m, flat_w = masks[name].reshape(-1), weights[name].reshape(-1)
            flat_d = (weights[name] - start[name]).abs().reshape(-1).double()
            for i in range(flat_m.numel()):
                if flat_m[i] and flat_w[i] < 0:
                    eligible.append((float(flat_d[i]), len(eligible), name, i))
        expected = {(n, i) for _, _, n, i in sorted(eligible)[:count]}
        got = {(n, int(i)) for n, t in chosen.items() for i in t.reshape(-1).nonzero().flatten()}
        assert got == expected
        assert sum(int(t.sum()) for t in chosen.values()) == count


def test_selection_is_clamped_to_the_eligible_weights():
    masks = {"w": torch.tensor([True, True, False, True])}
    weights = {"w": torch.tensor([-1.0, 2.0, -3.0, -0.5])}
    chosen = stagnant_negative_weights(masks, weights, {"w": torch.zeros(4)}, 10)
    assert chosen["w"].tolist() == [True, False, False, True]
    every = stagnant_negative_weights(masks, weights, {"w": torch.zeros(4)}, 10, False)
    assert every["w"].tolist() == [True, True, False, True]
    with pytest.raises(ValueError, match="count"):
        stagnant_negative_weights(masks, weights, {"w": torch.zeros(4)}, -1)


# ---------------------------------------------------------------------- composed with IMP
def pair(fraction=0.3, ap_fraction=0.03, **ap_options):
    """The core IMP at p - p_AP and AP around IMP at p, on identical models."""
    model_imp, model_ap = tiny_mlp(0), tiny_mlp(0)
    imp = IMP(fraction=fraction - ap_fraction)
    ap = ActivateWhilePruning(fraction=fraction, ap_fraction=ap_fraction, **ap_options)
    opt_imp, opt_ap = sgd(model_imp), sgd(model_ap)
    imp.setup(model_imp, opt_imp)
    ap.setup(model_ap, opt_ap)
    return (model_imp, imp, opt_imp), (model_ap, ap, opt_ap)


def test_ap_removes_exactly_num_ap_stagnant_negatives_and_leaves_imp_unchanged():
    (model_i, imp, opt_i), (model_a, ap, opt_a) = pair()
    init = {n: p.detach().clone() for n, p in imp.masks.params().items()}
    for cycle in range(2):
        train_steps(model_i, opt_i, 15, seed=cycle)
        train_steps(model_a, opt_a, 15, seed=cycle)
        # the same run so far: AP's earlier removals were copied into IMP below
        for name, w in imp.masks.params().items():
            assert torch.equal(ap.masks.param(name), w)
        start = {n: t.clone() for n, t in ap.start_weights.items()}
        trained = {n: p.detach().clone() for n, p in ap.masks.params().items()}
        nnz = sum(ap.masks.nnz().values())
        ap.prune_round()
        imp.prune_round()  # IMP alone at p - p_AP: the base part of the AP round
        record = ap.history[-1]
        assert record["removed_base"] == nnz - sum(imp.masks.nnz().values())
        assert record["removed_base"] == math.ceil(0.27 * nnz)
        assert record["nnz_after"] == nnz - math.ceil(0.3 * nnz)  # per-cycle total is p
        removed_total, removed_deltas, kept_deltas = 0, [], []
        for name, base_mask in imp.masks.masks().items():
            final = ap.masks.mask(name)
            assert not (final & ~base_mask).any()  # AP only removes from the base's mask
            removed = base_mask & ~final
            removed_total += int(removed.sum())
            delta = (trained[name] - start[name]).abs()
            assert (trained[name][removed] < 0).all()  # all negative
            removed_deltas.append(delta[removed])
            kept_deltas.append(delta[final & (trained[name] < 0)])
        assert removed_total == record["num_ap"] == record["removed_ap"] > 0
        assert abs(record["num_ap"] - 0.03 * nnz) <= 1
        assert torch.cat(removed_deltas).max() <= torch.cat(kept_deltas).min()  # smallest |Δ|
        ap.rewind()
        imp.rewind()
        assert imp.round == ap.base.round == cycle + 1
        assert ap.step == imp.step
        for name, mask in ap.masks.masks().items():
            # IMP's rewinding, unchanged: the survivors are back at the initialisation
            assert torch.equal(ap.masks.param(name), init[name] * mask)
            assert torch.equal(ap.start_weights[name], init[name] * mask)
            assert torch.equal(imp.masks.param(name), init[name] * imp.masks.mask(name))
        opt_i, opt_a = sgd(model_i), sgd(model_a)
        imp.attach(opt_i)
        ap.attach(opt_a)
        # give IMP the AP removals so that the next cycle compares one round again
        imp.masks.update_all({n: m.clone() for n, m in ap.masks.masks().items()})


def test_ap_fraction_zero_is_the_base_alone():
    (model_i, imp, opt_i), (model_a, ap, opt_a) = pair(fraction=0.3, ap_fraction=0.0)
    train_steps(model_i, opt_i, 10)
    train_steps(model_a, opt_a, 10)
    imp.prune_round()
    ap.prune_round()
    for name, mask in imp.masks.masks().items():
        assert torch.equal(ap.masks.mask(name), mask)
    assert ap.history[-1]["removed_ap"] == 0


def test_sign_rule_matters():
    (_, _, _), (model_a, ap, opt_a) = pair()
    train_steps(model_a, opt_a, 10)
    ablation = ActivateWhilePruning(fraction=0.3, ap_fraction=0.03, negative_only=False)
    ablation.setup(tiny_mlp(0))  # same initialisation, so the same cycle start as `ap`
    with torch.no_grad():
        for name, p in ablation.masks.params().items():
            p.copy_(ap.masks.param(name))
    ap.prune_round()
    ablation.prune_round()
    differ = sum(int((ablation.masks.mask(n) != ap.masks.mask(n)).sum()) for n in ap.masks.names)
    assert differ > 0  # ranking every weight by |Δ| (no sign rule) removes other weights


# ---------------------------------------------------------------------- options
@pytest.mark.parametrize(
    ("options", "error", "field"),
    [
        ({"base": "no-such-method"}, ValueError, "base"),
        ({"base": "gmp"}, ValueError, "base"),
        ({"base": 3}, TypeError, "base"),
        ({"base_options": {"fraction": 0.1}}, ValueError, "base_options"),
        ({"base_options": {"nope": 1}}, ValueError, "base_options"),
        ({"base_options": {"rewind_step": -1}}, ValueError, "base_options"),
        ({"base_options": [1]}, TypeError, "base_options"),
        ({"fraction": 0.0}, ValueError, "fraction"),
        ({"fraction": 1.0}, ValueError, "fraction"),
        ({"fraction": float("nan")}, ValueError, "fraction"),
        ({"ap_fraction": -0.1}, ValueError, "ap_fraction"),
        ({"ap_fraction": 0.2, "fraction": 0.2}, ValueError, "ap_fraction"),
        ({"ap_fraction": "0.1"}, TypeError, "ap_fraction"),
        ({"negative_only": 1}, TypeError, "negative_only"),
    ],
)
def test_bad_options_name_the_field(options, error, field):
    with pytest.raises(error, match=field):
        ActivateWhilePruning(**options)


def test_structured_pattern_is_refused_before_the_model_is_touched():
    model = tiny_mlp(0)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="pattern"):
        ActivateWhilePruning(pattern="2:4").setup(model, sgd(model))
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_cycles_to_reach():
    assert cycles_to_reach(0.0, 0.2) == 0
    assert cycles_to_reach(0.2, 0.2) == 1
    assert cycles_to_reach(0.9, 0.2) == 11  # 0.8^10 = 0.107, 0.8^11 = 0.086
    with pytest.raises(ValueError, match="fraction"):
        cycles_to_reach(0.5, 1.0)


# ---------------------------------------------------------------------- the procedure
def toy_task() -> Task:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(192, 16, generator=gen)
    y = (x @ torch.randn(16, 4, generator=gen)).argmax(1)
    return Task("toy", x[:128], y[:128], x[128:], y[128:], (16,), 4)


@pytest.mark.parametrize("rewind", [True, False])
def test_run_cycles_reaches_the_same_sparsity_with_and_without_ap(rewind):
    task = toy_task()
    runs = {}
    for variant, method in (
        ("imp", IMP(fraction=0.3)),
        ("ap", ActivateWhilePruning(fraction=0.3, ap_fraction=0.03)),
    ):
        runs[variant] = run_cycles(
            tiny_mlp(0), task, method, cycles=2, epochs=1, rewind=rewind, batch_size=32
        )
    imp, ap = runs["imp"], runs["ap"]
    assert [r.cycle for r in ap] == [0, 1, 2]
    assert [r.sparsity for r in ap] == [r.sparsity for r in imp]
    assert ap[0].accuracy == imp[0].accuracy and ap[0].dnr == imp[0].dnr  # same dense run
    assert all(r.removed_ap > 0 for r in ap[1:]) and all(r.removed_ap == 0 for r in imp)
    assert all(0.0 <= r.dnr <= 1.0 for r in ap)
    with pytest.raises(ValueError, match="cycles"):
        run_cycles(tiny_mlp(0), task, IMP(), cycles=-1, epochs=1)

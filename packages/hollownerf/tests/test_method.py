"""HollowNeRF's L1-budget ADMM: projection, dual ascent, phase start, budget, gate, accounting."""

import dataclasses

import pytest
import torch
from torch import nn

from sparse_hollownerf import (
    HashEncoding,
    HashNeRF,
    HollowNeRF,
    HollowNeRFConfig,
    SaliencyGrid,
    encoding_budget,
    needed_entries,
    project_l1_budget,
    touched_entries,
)

torch.set_num_threads(1)


def _nerf(table=256, sal=6, seed=0):
    enc = HashEncoding(levels=4, table_size=table, base_resolution=4, max_resolution=24, seed=seed)
    return HashNeRF(enc, hidden=8, saliency=SaliencyGrid(sal))


class _Grid(nn.Module):
    def __init__(self, r=6, init=2.0):
        super().__init__()
        self.g = SaliencyGrid(r, init=init)


def test_projection_is_the_nearest_feasible_point():
    gen = torch.Generator().manual_seed(0)
    v = torch.rand(40, generator=gen) * 1.6 - 0.3
    budget = 7.5
    z, nu = project_l1_budget(v, budget)
    assert float(z.min()) >= 0 and float(z.max()) <= 1
    assert abs(float(z.sum()) - budget) < 1e-5 and nu > 0  # the budget is active here
    assert torch.allclose(z, (v - nu).clamp(0, 1), atol=1e-6)
    best = float(((v - z) ** 2).sum())
    for _ in range(300):  # random feasible points are never closer (brute-force check)
        y = torch.rand(40, generator=gen)
        y = y * min(1.0, budget / float(y.sum()))
        assert float(((v - y) ** 2).sum()) >= best - 1e-6
    # Slack budget: clip only, multiplier 0.
    z2, nu2 = project_l1_budget(v, 100.0)
    assert nu2 == 0.0 and torch.equal(z2, v.clamp(0, 1))


def test_saliency_stays_in_unit_interval_and_pruned_is_exactly_zero():
    grid = SaliencyGrid(5)
    with torch.no_grad():
        grid.values.copy_(torch.randn(5, 5, 5) * 50)
    x = torch.rand(500, 3, generator=torch.Generator().manual_seed(1))
    s = grid(x)
    assert float(s.min()) >= 0 and float(s.max()) <= 1
    grid.prune(torch.zeros(5, 5, 5, dtype=torch.bool))
    assert torch.equal(grid(x), torch.zeros(500))


def test_admm_state_is_created_when_admm_starts_not_at_setup():
    model = _Grid()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    method = HollowNeRF(sparsity=0.75, admm_start=5, admm_every=2, prune_step=30).setup(model, opt)
    assert method.z == {} and method.u == {} and not method.admm_started
    gen = torch.Generator().manual_seed(2)
    target = torch.rand(6, 6, 6, generator=gen)
    for step in range(8):
        assert method.admm_started == (step >= 5)
        if step == 5:
            m = model.g.vertex_saliency().detach()
        loss = ((model.g.values - 4 * target) ** 2).sum() + method.regularization()
        if step == 5:  # z was made from the saliency trained for 5 steps, u is 0
            want, _ = project_l1_budget(m, method.budget("g.values"))
            assert torch.equal(method.z["g.values"], want)
            assert torch.equal(method.u["g.values"], torch.zeros_like(m))
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_dual_moves_with_the_sign_of_the_violation():
    model = _Grid(init=3.0)  # m ≈ 0.95 everywhere: the budget (25%) is violated
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    method = HollowNeRF(sparsity=0.75, admm_start=0, prune_step=50).setup(model, opt)
    method.start_admm()
    name = "g.values"
    m = method.saliency(name).detach()
    before = float(method.u[name].sum())
    method.admm_update()
    violation = float(m.sum()) - method.budget(name)
    assert violation > 0 and method.history[-1]["nu"] > 0
    # Σu grows by Σm − Σz = the violation (the budget is active), then u is rescaled by 1/1.3.
    assert 1.3 * float(method.u[name].sum()) - before == pytest.approx(violation, rel=1e-4)
    # Now make the budget slack: the dual's total falls (growth 1.3 also rescales u = λ/ρ).
    with torch.no_grad():
        model.g.values.fill_(-4.0)
    m = method.saliency(name).detach()
    u_before = method.u[name].clone()
    z_want, _ = project_l1_budget(m + u_before, method.budget(name))
    method.admm_update()
    h = method.history[-1]
    assert h["violation"] < 0
    unscaled = u_before + m - z_want  # the dual-ascent step before the ρ rescale
    assert torch.allclose(method.u[name], unscaled / 1.3)
    assert float(unscaled.sum()) - float(u_before.sum()) < 0
    assert bool((method.u[name] >= 0).all())


def test_l1_budget_holds_before_and_after_the_prune():
    """A loss that wants every saliency at 1 against a 20% budget."""
    model = _Grid(r=6)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    method = HollowNeRF(
        sparsity=0.8, rho=1.0, rho_growth=1.15, admm_start=10, admm_every=5, prune_step=300
    ).setup(model, opt)
    gen = torch.Generator().manual_seed(3)
    pref = torch.rand(6, 6, 6, generator=gen) + 0.5  # some vertices matter more
    budget = method.budget("g.values")
    for step in range(320):
        if step == 299:
            pre = float(model.g.vertex_saliency().sum())
        loss = -(pref * model.g.vertex_saliency()).sum() + method.regularization()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert pre <= budget * 1.05  # ADMM drove Σm onto the budget
    m = model.g.vertex_saliency()
    assert float(m.sum()) <= budget + 1e-6  # exact after the prune
    keep = model.g.alive.bool()
    assert int(keep.sum()) == method.k("g.values")
    assert torch.equal(m[~keep], torch.zeros(int((~keep).sum())))
    # The kept vertices are the preferred ones, not an arbitrary slab.
    assert float(pref[keep].mean()) > float(pref[~keep].mean()) + 0.2
    assert method.residuals[-1] < method.residuals[0]


def test_first_support_is_not_a_tie_break_slab_with_admm_start():
    """With a dense warm-up the initial z follows the trained saliency, not vertex order."""
    model = _Grid(r=6, init=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    method = HollowNeRF(sparsity=0.75, admm_start=20, admm_every=5, prune_step=40).setup(model, opt)
    wanted = torch.zeros(6, 6, 6)
    wanted[:, :, 3:] = 1.0  # the last half of the z axis matters; vertex order favours x < 2
    for _ in range(21):
        loss = ((model.g.vertex_saliency() - wanted) ** 2).sum() + method.regularization()
        opt.zero_grad()
        loss.backward()
        opt.step()
    z = method.z["g.values"]
    assert float(z[:, :, 3:].sum()) > 0.95 * float(z.sum())


def test_gate_gives_exact_zeros_and_skips_pruned_samples():
    model = _nerf(table=128, sal=4)
    keep = torch.zeros(4, 4, 4, dtype=torch.bool)
    keep[:2, :2, :2] = True  # salient region x, y, z < 2/3
    model.saliency.prune(keep)
    x = torch.rand(300, 3, generator=torch.Generator().manual_seed(5))
    gate, active = model.gate(x)
    assert torch.equal(active, model.saliency(x) != 0)
    assert torch.equal(gate[~active], torch.zeros(int((~active).sum())))
    assert active.any() and (~active).any()
    enc = model.encoding
    rows, w = enc.corners(x)
    flat = rows + enc.offsets[:-1][None, :, None]
    read = torch.zeros(enc.table.shape[0], dtype=torch.bool)
    read[flat[active][w[active] > 0]] = True
    with torch.no_grad():
        enc.table[~read] = float("nan")  # a read-then-multiply-by-zero would propagate NaN
    model.samples_evaluated = model.samples_skipped = 0
    sigma, rgb = model(x)
    assert model.samples_skipped == int((~active).sum())
    assert model.samples_evaluated == int(active.sum())
    assert torch.equal(sigma[~active], torch.zeros(int((~active).sum())))
    assert bool((sigma[active] > 0).all())
    assert torch.isfinite(sigma).all() and torch.isfinite(rgb).all()
    (sigma.sum() + rgb.sum()).backward()
    grad = enc.table.grad
    assert torch.equal(grad[~read], torch.zeros_like(grad[~read]))
    assert (grad[read] != 0).any()


def test_skipping_does_not_change_the_output():
    model = _nerf(table=128, sal=4)
    keep = torch.rand(4, 4, 4, generator=torch.Generator().manual_seed(7)) > 0.5
    model.saliency.prune(keep)
    x = torch.rand(400, 3, generator=torch.Generator().manual_seed(8)) * 1.2 - 0.1
    with torch.no_grad():
        a = model(x)
        model.skip_empty = False
        b = model(x)
    assert torch.allclose(a[0], b[0], atol=1e-6)
    inside = ((x >= 0) & (x <= 1)).all(-1)
    evaluated = model.gate(x)[1]
    assert torch.allclose(a[1][evaluated], b[1][evaluated], atol=1e-6)
    assert torch.equal(b[0][~inside], torch.zeros(int((~inside).sum())))


def test_hard_prune_on_a_nerf_sets_alive_and_masks():
    model = _nerf(sal=4)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    method = HollowNeRF(sparsity=0.75, admm_start=2, admm_every=2, prune_step=6).setup(model, opt)
    x = torch.rand(64, 3, generator=torch.Generator().manual_seed(4))
    for _ in range(8):
        sigma, rgb = model(x)
        loss = sigma.mean() + rgb.mean() + method.regularization()
        opt.zero_grad()
        loss.backward()
        opt.step()
    mask = method.masks.mask("saliency.values")
    assert int(mask.sum()) == method.k("saliency.values") == 16
    assert torch.equal(model.saliency.alive.bool(), mask)
    assert float(method.regularization()) == 0.0
    final = method.finalize()
    assert torch.equal(final.saliency.alive.bool(), mask)


def test_needed_entries_cover_touched_and_shrink_with_saliency():
    model = _nerf(table=512, sal=5)
    enc = model.encoding
    full = needed_entries(enc)
    keep = torch.zeros(5, 5, 5, dtype=torch.bool)
    keep[1:3, 1:3, 2] = True
    model.saliency.prune(keep)
    gated = needed_entries(enc, model.saliency)
    x = torch.rand(4000, 3, generator=torch.Generator().manual_seed(6))
    touched_all = touched_entries(enc, x)
    touched_sal = touched_entries(enc, x[model.saliency(x) != 0])
    for lv in range(enc.levels):
        assert not (touched_all[lv] & ~full[lv]).any()
        assert not (touched_sal[lv] & ~gated[lv]).any()
        assert not (gated[lv] & ~full[lv]).any()
    assert sum(int(u.sum()) for u in gated) < sum(int(u.sum()) for u in full)
    # On the coarsest (dense, no padding reached) level many random points touch all it needs.
    assert torch.equal(touched_all[0], full[0])
    budget = encoding_budget(model)
    assert budget.hash_params == budget.needed_entries * enc.features
    assert budget.saliency_params == int(keep.sum())
    assert budget.params == budget.hash_params + budget.saliency_params


def test_default_targets_are_saliency_grids():
    model = _nerf()
    method = HollowNeRF(sparsity=0.5).setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    assert method.masks.names == ["saliency.values"]


def test_model_without_saliency_raises_before_touching():
    model = HashNeRF(HashEncoding(levels=2, table_size=64))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="targets"):
        HollowNeRF(sparsity=0.5).setup(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    ("field", "value", "exc"),
    [
        ("rho", 0.0, ValueError),
        ("rho", "big", TypeError),
        ("rho_growth", 0.5, ValueError),
        ("admm_every", 0, ValueError),
        ("admm_start", -1, ValueError),
        ("prune_step", 2.5, TypeError),
    ],
)
def test_bad_config_names_the_parameter(field, value, exc):
    with pytest.raises(exc, match=field):
        HollowNeRFConfig(**{field: value})


def test_prune_step_must_follow_admm_start():
    with pytest.raises(ValueError, match="prune_step"):
        HollowNeRFConfig(admm_start=10, prune_step=10)
    cfg = HollowNeRFConfig(admm_start=1, prune_step=2)
    assert dataclasses.replace(cfg, prune_step=5).prune_step == 5


def test_bad_field_inputs():
    with pytest.raises(TypeError, match="encoding"):
        HashNeRF("enc")
    with pytest.raises(TypeError, match="saliency"):
        HashNeRF(HashEncoding(levels=1, table_size=8), saliency=nn.Linear(2, 2))
    with pytest.raises(ValueError, match="resolution"):
        SaliencyGrid(1)
    with pytest.raises(ValueError, match="gate_temperature"):
        HashNeRF(HashEncoding(levels=1, table_size=8), gate_temperature=0.0)
    with pytest.raises(TypeError, match="skip_empty"):
        HashNeRF(HashEncoding(levels=1, table_size=8), skip_empty=1)
    with pytest.raises(ValueError, match="x must have shape"):
        _nerf()(torch.zeros(3, 4))

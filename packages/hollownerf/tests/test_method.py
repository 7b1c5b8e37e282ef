"""HollowNeRF's ADMM: projection, exact k, dual update, residual, hard prune, gating, accounting."""

import dataclasses
import itertools
import math

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
    project_topk,
    touched_entries,
)

torch.set_num_threads(1)


def _nerf(table=256, sal=6, seed=0):
    enc = HashEncoding(levels=4, table_size=table, base_resolution=4, max_resolution=24, seed=seed)
    return HashNeRF(enc, hidden=8, saliency=SaliencyGrid(sal))


def test_project_topk_brute_force():
    gen = torch.Generator().manual_seed(0)
    for k in (0, 1, 5, 37, 64):
        v = torch.randn(4, 4, 4, generator=gen)
        z, support = project_topk(v, k)
        assert int(support.sum()) == k and int((z != 0).sum()) == k
        order = sorted(range(64), key=lambda i: (-abs(float(v.flatten()[i])), i))[:k]
        want = torch.zeros(64, dtype=torch.bool)
        want[order] = True
        assert torch.equal(support.flatten(), want)
        assert torch.equal(z[support], v[support])
        # z is the best k-sparse approximation: no other k-subset is closer.
        if k:
            worst_kept = v.abs()[support].min()
            assert (v.abs()[~support] <= worst_kept).all()


def test_l0_norm_is_k_after_every_projection():
    model = _nerf()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    method = HollowNeRF(sparsity=0.7, prune_step=1000).setup(model, opt)
    k = method.k("saliency.values")
    assert k == math.floor(0.3 * 216 + 1e-6)
    gen = torch.Generator().manual_seed(1)
    for _ in range(10):
        with torch.no_grad():
            model.saliency.values.copy_(torch.rand(6, 6, 6, generator=gen))
        method.admm_update()
        assert int((method.z["saliency.values"] != 0).sum()) == k


def test_dual_update_formula():
    model = _nerf()
    method = HollowNeRF(sparsity=0.5, prune_step=1000, rho_growth=2.0).setup(
        model, torch.optim.SGD(model.parameters(), lr=0.1)
    )
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        model.saliency.values.copy_(torch.rand(6, 6, 6, generator=gen))
    method.u["saliency.values"] = torch.randn(6, 6, 6, generator=gen) * 0.1
    s = model.saliency.values.detach().clone()
    u = method.u["saliency.values"].clone()
    rho = method.rho
    method.admm_update()
    z_want, _ = project_topk(s + u, method.k("saliency.values"))
    assert torch.equal(method.z["saliency.values"], z_want)
    assert torch.allclose(method.u["saliency.values"], u + s - z_want)
    assert method.rho == pytest.approx(2 * rho)
    reg = method.regularization()
    want = 0.5 * method.rho * ((s - z_want + u + s - z_want) ** 2).sum()
    assert float(reg) == pytest.approx(float(want), rel=1e-5)


def test_primal_residual_decreases_on_fixed_problem():
    grid = SaliencyGrid(5)
    model = nn.ModuleDict({"g": grid})
    target = torch.rand(5, 5, 5, generator=torch.Generator().manual_seed(3))
    opt = torch.optim.SGD(model.parameters(), lr=0.02)
    method = HollowNeRF(sparsity=0.8, rho=1.0, rho_growth=1.05, admm_every=5, prune_step=400)
    method.setup(model, opt)
    for _ in range(300):
        loss = ((grid.values - target) ** 2).sum() + method.regularization()
        opt.zero_grad()
        loss.backward()
        opt.step()
    res = method.residuals
    assert len(res) == 60
    peak = max(range(len(res)), key=res.__getitem__)
    assert peak < 10
    # After the dual variable has built up, ‖s − z‖ falls (monotone over windows of 5 updates;
    # ADMM on an L0 set is not monotone step by step) to nearly 0: s becomes k-sparse.
    windows = [max(res[i : i + 5]) for i in range(peak, len(res), 5)]
    assert all(b <= a for a, b in itertools.pairwise(windows))
    assert res[-1] < 0.01 * res[peak]
    off = method.z["g.values"] == 0
    assert int((~off).sum()) == method.k("g.values")
    assert float(grid.values.detach()[off].abs().max()) < 0.02


def test_hard_prune_keeps_exactly_k_and_pruned_stay_zero():
    model = _nerf()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    method = HollowNeRF(sparsity=0.75, admm_every=2, prune_step=6, clamp=True).setup(model, opt)
    x = torch.rand(64, 3, generator=torch.Generator().manual_seed(4))
    for _ in range(10):
        sigma, rgb = model(x)
        loss = sigma.mean() + rgb.mean() + method.regularization()
        opt.zero_grad()
        loss.backward()
        opt.step()
        vals = model.saliency.values
        low = 0.0 if method.pruned else method.config.floor
        assert float(vals.min()) >= low and float(vals.max()) <= 1
    assert method.pruned
    mask = method.masks.mask("saliency.values")
    assert int(mask.sum()) == method.k("saliency.values")
    assert torch.equal(model.saliency.values[~mask], torch.zeros(int((~mask).sum())))
    assert float(method.regularization()) == 0.0


def test_zero_saliency_points_have_zero_features_and_no_hash_gradient():
    model = _nerf(table=128, sal=4)
    with torch.no_grad():
        model.saliency.values.zero_()
        model.saliency.values[:2, :2, :2] = 1.0  # salient region x, y, z < 2/3
    x = torch.rand(300, 3, generator=torch.Generator().manual_seed(5))
    s = model.saliency(x)
    active = s != 0
    assert active.any() and (~active).any()
    enc = model.encoding
    rows, w = enc.corners(x)
    flat = rows + enc.offsets[:-1][None, :, None]
    read = torch.zeros(enc.table.shape[0], dtype=torch.bool)
    read[flat[active][w[active] > 0]] = True
    with torch.no_grad():
        enc.table[~read] = float("nan")  # a read-then-multiply-by-zero would propagate NaN
    feats, looked_up = model.features(x)
    assert torch.equal(looked_up, active)
    assert torch.equal(feats[~active], torch.zeros_like(feats[~active]))
    sigma, rgb = model(x)
    assert torch.isfinite(sigma).all() and torch.isfinite(rgb).all()
    (sigma.sum() + rgb.sum()).backward()
    g = enc.table.grad
    assert torch.equal(g[~read], torch.zeros_like(g[~read]))
    assert (g[read] != 0).any()


def test_needed_entries_cover_touched_and_shrink_with_saliency():
    model = _nerf(table=512, sal=5)
    enc = model.encoding
    full = needed_entries(enc)
    with torch.no_grad():
        model.saliency.values.zero_()
        model.saliency.values[1:3, 1:3, 2] = 0.5
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
    assert budget.saliency_params == int((model.saliency.values != 0).sum())
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
        ("clamp", 1, TypeError),
        ("floor", 1.0, ValueError),
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
    with pytest.raises(ValueError, match="x must have shape"):
        _nerf()(torch.zeros(3, 4))

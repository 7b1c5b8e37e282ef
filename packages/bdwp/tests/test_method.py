"""BDWP as a method: masks in both directions, the SR-STE decay, schedule, options, FLOPs."""

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from sparse_bdwp import BDWP, backward_mask_name
from sparsecore.evaluation import count_training_flops
from sparsecore.patterns import NM

torch.set_num_threads(1)


def cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(16 * 4 * 4, 16),
    )  # fmt: skip


def batch(seed: int):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(4, 8, 4, 4, generator=gen), torch.randint(0, 16, (4,), generator=gen)


def step(model, optimizer, seed):
    x, y = batch(seed)
    loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


@pytest.mark.parametrize("pattern", ["2:4", "2:8"])
def test_masks_are_nm_in_both_directions_and_follow_the_dense_weights(pattern):
    model = cnn()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    method = BDWP(pattern=pattern).setup(model, optimizer)
    nm = method.config.pattern
    before = {n: method.backward_mask(n).clone() for n in method.masks.names}
    for i in range(5):
        step(model, optimizer, i)
    changed = 0
    for name in method.masks.names:
        forward, backward = method.masks.mask(name), method.backward_mask(name)
        assert NM(nm.n, nm.m, dim=1).is_valid(forward)
        assert NM(nm.n, nm.m, dim=0).is_valid(backward)
        weight = method.masks.param(name)
        assert (weight[~forward] != 0).any()  # the weights stay dense underneath
        # the masks are the top-N of |W| now (recomputed after every step)
        score = weight.detach().abs()
        kept = NM(nm.n, nm.m, dim=0).groups(score * backward)
        dropped = NM(nm.n, nm.m, dim=0).groups(score * ~backward)
        assert (kept.max(-1).values >= dropped.max(-1).values).all()
        changed += int((backward != before[name]).sum())
    assert changed > 0


def test_the_model_backward_uses_the_backward_masks():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 8))
    method = BDWP().setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    x = torch.randn(5, 16, requires_grad=True)
    y = torch.randint(0, 8, (5,))
    F.cross_entropy(model(x), y).backward()
    w1, w2 = (method.masks.param(f"{i}.weight").detach() for i in (0, 2))
    f1, f2 = (method.masks.mask(f"{i}.weight") for i in (0, 2))
    b1, b2 = (method.backward_mask(f"{i}.weight") for i in (0, 2))
    h = F.linear(x.detach(), w1 * f1, model[0].bias.detach())
    out = F.linear(h.relu(), w2 * f2, model[2].bias.detach()).requires_grad_()
    grad_out = torch.autograd.grad(F.cross_entropy(out, y), out)[0]
    grad_x = ((grad_out @ (w2 * b2)) * (h > 0)) @ (w1 * b1)
    torch.testing.assert_close(x.grad, grad_x, rtol=1e-5, atol=1e-7)
    wrong = ((grad_out @ (w2 * f2)) * (h > 0)) @ (w1 * f1)
    assert not torch.allclose(x.grad, wrong, rtol=1e-3, atol=1e-5)


def test_sr_ste_decay_is_added_to_the_dense_gradient():
    grads = {}
    for decay in (0.0, 0.5):
        model = cnn()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        method = BDWP(decay=decay).setup(model, optimizer)
        x, y = batch(0)
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        grads[decay] = {n: p.grad.clone() for n, p in method.masks.params().items()}
        masks = {n: method.masks.mask(n).clone() for n in method.masks.names}
        weights = {n: p.detach().clone() for n, p in method.masks.params().items()}
    for name in grads[0.0]:
        expected = grads[0.0][name] + 0.5 * weights[name] * ~masks[name]
        torch.testing.assert_close(grads[0.5][name], expected)


def test_forward_mode_uses_the_forward_mask_backwards():
    model = cnn()
    method = BDWP(backward="forward").setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    for name in method.masks.names:
        assert torch.equal(method.backward_mask(name), method.masks.mask(name))


def test_update_every_keeps_masks_between_updates():
    model = cnn()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    method = BDWP(update_every=3).setup(model, optimizer)
    start = {n: m.clone() for n, m in method.masks.masks().items()}
    step(model, optimizer, 0)
    step(model, optimizer, 1)
    assert all(torch.equal(method.masks.mask(n), m) for n, m in start.items())
    step(model, optimizer, 2)
    assert any(not torch.equal(method.masks.mask(n), m) for n, m in start.items())


def test_finalize_restores_plain_layers():
    model = cnn()
    method = BDWP().setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    x, _ = batch(0)
    with torch.no_grad():
        expected = model(x)
    final = method.finalize()
    assert all("forward" not in m.__dict__ for m in final.modules())
    assert not any(k.endswith(("_mask", "_bmask")) for k in final.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(final(x), expected)


def test_training_flops_two_of_three_gemms_sparse():
    model = cnn()
    method = BDWP(pattern="2:8").setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    x, _ = batch(0)
    bdwp = count_training_flops(model, x[:1], method.backward_weights())
    srste = count_training_flops(model, x[:1])
    assert bdwp.forward.effective * 4 == bdwp.forward.dense  # 2:8 keeps a quarter
    assert bdwp.backward_data.effective * 4 == bdwp.backward_data.dense
    assert bdwp.weight_grad.effective == bdwp.weight_grad.dense == bdwp.forward.dense
    assert bdwp.ratio == pytest.approx((0.25 + 0.25 + 1) / 3)
    assert srste.backward_data.effective == srste.backward_data.dense
    assert srste.ratio == pytest.approx((0.25 + 1 + 1) / 3)
    assert backward_mask_name("weight") == "weight_bmask"


@pytest.mark.parametrize(
    ("options", "error", "field"),
    [
        ({"pattern": "unstructured"}, ValueError, "pattern"),
        ({"pattern": NM(2, 4, dim=0)}, ValueError, "pattern"),
        ({"decay": -1.0}, ValueError, "decay"),
        ({"decay": float("inf")}, ValueError, "decay"),
        ({"update_every": 0}, ValueError, "update_every"),
        ({"update_every": 1.5}, TypeError, "update_every"),
        ({"backward": "both"}, ValueError, "backward"),
        ({"kernels": "cuda"}, ValueError, "kernels"),
    ],
)
def test_bad_options_name_the_field(options, error, field):
    with pytest.raises(error, match=field):
        BDWP(**options)


@pytest.mark.parametrize(
    ("model", "match"),
    [
        (nn.Sequential(nn.Linear(8, 6)), "outputs"),
        (nn.Sequential(nn.Linear(6, 8)), "dimension 1 of 0.weight"),
        (nn.Sequential(nn.Conv2d(8, 8, 3, groups=2)), "grouped"),
        (nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect")), "padding"),
    ],
)
def test_unfit_layers_are_refused_before_the_model_is_touched(model, match):
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=match):
        BDWP().setup(model)
    assert model.state_dict().keys() == before.keys()
    assert all("forward" not in m.__dict__ for m in model.modules())

"""Property tests that would catch a fake SuperTickets (schedules, shrink, c_i, reactivation)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sparse_supertickets import (
    SuperNet,
    SuperTickets,
    prune_events,
    prune_ratio,
    rho_at,
    shrink,
)
from sparsecore.select import keep_count

SHAPE = (1, 8, 8)


def supernet(seed: int = 0) -> SuperNet:
    torch.manual_seed(seed)
    return SuperNet(num_classes=4, stem=4, stages=((4, 1), (8, 2)), expand_ratio=2)


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(step)
    return torch.randn(16, *SHAPE, generator=gen), torch.randint(0, 4, (16,), generator=gen)


def train(model: nn.Module, method: SuperTickets, opt: torch.optim.Optimizer, steps: int) -> None:
    for step in range(steps):
        x, y = batch(step)
        loss = nn.functional.cross_entropy(model(x), y) + method.regularization()
        opt.zero_grad()
        loss.backward()
        opt.step()


def setup(**options) -> tuple[SuperNet, SuperTickets, torch.optim.Optimizer]:
    model = supernet()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    config = {"input_shape": SHAPE, "total_steps": 30, "prune_interval": 3, **options}
    return model, SuperTickets(**config).setup(model, opt), opt


def test_official_prune_ratio_sequence() -> None:
    ratios = [prune_ratio(25 * k, 25, 0.9) for k in range(1, 15)]
    assert ratios == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]
    assert prune_ratio(24, 25, 0.9) is None and prune_ratio(0, 25, 0.9) is None
    assert [s for s, _ in prune_events(350, 25, 0.9)] == list(range(25, 351, 25))
    assert (
        rho_at(0, 1.0, 0, 10) == 0.0
        and rho_at(5, 1.0, 0, 10) == 0.5
        and rho_at(12, 1.0, 0, 10) == 1
    )


def test_realised_global_sparsity_follows_the_schedule() -> None:
    model, method, opt = setup(sparsity=0.5, penalty="none")
    train(model, method, opt, 30)
    got = [(h["step"], h["ratio"]) for h in method.history]
    assert got == prune_events(30, 3, 0.5)
    n = sum(method.masks.mask(w).numel() for w in method._weights)
    for h in method.history:  # exact counts of one global ranking
        assert h["sparsity"] == pytest.approx(1 - keep_count(n, 1 - h["ratio"]) / n)
    kept = sum(int(method.masks.mask(w).sum()) for w in method._weights)
    assert kept == keep_count(n, 0.5)
    params = method.masks.params()
    assert all(not params[w][~method.masks.mask(w)].any() for w in method._weights)


def test_costlier_ops_get_larger_penalties() -> None:
    _, method, _ = setup()
    by_block: dict[str, dict[int, float]] = {}
    for g in method.searched:
        block, _, rest = g.name.partition(".branches.")
        by_block.setdefault(block, {})[int(rest.split(".")[0])] = method.penalties[g.name]
    for block in by_block.values():  # branches 0, 1, 2 have kernels 3, 5, 7
        assert block[0] < block[1] < block[2]
    sizes = {g.name: g.group.size for g in method.searched}
    mean = sum(sizes[n] * c for n, c in method.penalties.items()) / sum(sizes.values())
    assert mean == pytest.approx(1.0, rel=1e-4)
    _, equal, _ = setup(penalty="equal")
    assert set(equal.penalties.values()) == {1.0}


def test_regularization_is_the_flops_aware_l1() -> None:
    model, method, opt = setup(rho=0.1, rho_warmup_steps=4)
    train(model, method, opt, 2)
    params = dict(model.named_parameters())
    want = sum(method.penalties[g.name] * params[g.gamma].abs().sum() for g in method.searched)
    assert float(method.regularization()) == pytest.approx(0.05 * float(want), rel=1e-5)


def test_shrinking_zero_gamma_channels_leaves_outputs_unchanged() -> None:
    model, method, opt = setup(sparsity=0.5)
    train(model, method, opt, 7)  # two pruning events applied
    with torch.no_grad():
        for g, keep in ((method.searched[0], slice(0, 5)), (method.searched[4], slice(None))):
            bn = model.get_submodule(g.gamma.rsplit(".", 1)[0])
            bn.weight[keep] = 0
            bn.bias[keep] = 0
    x, _ = batch(99)
    model.eval()
    before = model(x)
    params_before = sum(p.numel() for p in model.parameters())
    pruned_before = {n: int((~method.masks.mask(n)).sum()) for n in method._weights}
    ticket, again, _ = shrink(method, optimizer_factory=lambda m: torch.optim.SGD(m.parameters()))
    ticket.model.eval()
    assert torch.allclose(ticket.model(x), before, atol=1e-5)
    assert sum(p.numel() for p in ticket.model.parameters()) < params_before
    assert len(ticket.model.blocks[1].branches) == 2  # the fully searched-away op is gone
    assert ticket.model.blocks[0].branches[0].depthwise.out_channels == 8 - 5
    # reuse_mask: masks are carried exactly; untouched layers keep their pruned counts
    assert int((~ticket.masks["stem.0.weight"]).sum()) == pruned_before["stem.0.weight"]
    assert again is not None and again.step == 7
    assert all(torch.equal(again.masks.mask(n), ticket.masks[n]) for n in ticket.masks)


def test_reactivation_revives_pruned_weights_that_can_survive() -> None:
    model, method, opt = setup(sparsity=0.6, reactivate=True, penalty="none")
    train(model, method, opt, 3)  # first event (ratio 0.1), recorded then reset
    first = {n: m.clone() for n, m in method.last_selection.items()}
    params = method.masks.params()
    assert method.history[-1]["applied"] is False
    assert all(bool(method.masks.mask(n).all()) for n in method._weights)  # masks reset
    revived = sum(int(params[n][~first[n]].ne(0).sum()) for n in method._weights)
    assert revived == sum(int((~first[n]).sum()) for n in method._weights) > 0
    name = method._weights[1]
    index = int(torch.nonzero(~first[name].flatten())[0])
    with torch.no_grad():  # training may grow a reactivated weight; here it grows at once
        params[name].view(-1)[index] = 10.0
    train(model, method, opt, 3)  # next event (ratio 0.2) re-selects among all weights
    second = method.last_selection
    assert bool(second[name].flatten()[index])  # a pruned weight survives the next selection
    assert sum(int((~first[n] & second[n]).sum()) for n in method._weights) > 0
    # without reactivation the masks only shrink: the second selection is inside the first
    model_b, method_b, opt_b = setup(sparsity=0.6, reactivate=False, penalty="none")
    train(model_b, method_b, opt_b, 3)
    first_b = {n: m.clone() for n, m in method_b.last_selection.items()}
    train(model_b, method_b, opt_b, 3)
    assert all(not (method_b.last_selection[n] & ~first_b[n]).any() for n in method_b._weights)
    assert method_b.weight_sparsity() == pytest.approx(method_b.history[1]["sparsity"])


def test_final_event_is_applied_with_reactivation() -> None:
    model, method, opt = setup(sparsity=0.6, reactivate=True, penalty="none")
    train(model, method, opt, 30)
    assert [h["applied"] for h in method.history] == [False] * 9 + [True]
    assert method.weight_sparsity() == pytest.approx(method.history[-1]["sparsity"])


def test_search_masks_low_gamma_channels_and_the_penalty_matters() -> None:
    model, method, opt = setup(
        rho=2.0, rho_warmup_steps=1, channel_every=2, sparsity=0.1, channel_threshold=0.15
    )
    train(model, method, opt, 12)
    masked = sum(int((~k).sum()) for k in method.channel_keeps().values())
    _, free, free_opt = setup(penalty="none", sparsity=0.1)
    train(free.model, free, free_opt, 12)
    params, free_params = dict(model.named_parameters()), dict(free.model.named_parameters())
    shrunk = sum(float(params[g.gamma].abs().sum()) for g in method.searched)
    plain = sum(float(free_params[g.gamma].abs().sum()) for g in method.searched)
    assert shrunk < plain  # the penalty shrinks γ
    for g, keep in method.channel_keeps().items():  # masked channels are exactly zero
        gamma = next(s.gamma for s in method.searched if s.name == g)
        assert not params[gamma][~keep].any()
    assert masked > 0  # some atomic blocks were searched away


@pytest.mark.parametrize(
    ("option", "value", "match"),
    [
        ("input_shape", None, "input_shape"),
        ("total_steps", None, "total_steps"),
        ("prune_interval", 0, "prune_interval"),
        ("penalty", "l2", "penalty"),
        ("rho", -1.0, "rho"),
        ("channel_threshold", float("nan"), "channel_threshold"),
        ("ratio_increment", 0.0, "ratio_increment"),
        ("pattern", "2:4", "pattern"),
    ],
)
def test_bad_options_name_the_parameter(option: str, value, match: str) -> None:
    config = {"input_shape": SHAPE, "total_steps": 10, option: value}
    with pytest.raises((TypeError, ValueError), match=match):
        SuperTickets(**config)


def test_model_without_depthwise_is_refused_before_it_is_touched() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 4)
    )
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="depthwise"):
        SuperTickets(input_shape=SHAPE, total_steps=4).setup(model)
    assert model.state_dict().keys() == before.keys()
    SuperTickets(input_shape=SHAPE, total_steps=4, penalty="none").setup(model)  # weights only

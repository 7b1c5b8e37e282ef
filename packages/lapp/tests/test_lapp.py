"""LAPP's own properties: FLOPs model, budget, threshold gradients, compaction, errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from sparse_lapp import LAPP, BypassConv, PlainCNN, add_bypasses, compact
from sparsecore.evaluation import count_flops

torch.set_num_threads(1)

SHAPE = (1, 8, 8)


def model_with_bypass(seed: int = 0, width: int = 8) -> nn.Module:
    torch.manual_seed(seed)
    model = PlainCNN(SHAPE, 4, widths=(width, 2 * width, 2 * width))
    add_bypasses(model, LAPP.prunable_convs(model, SHAPE), torch.Generator().manual_seed(seed))
    return model


def batch(step: int, n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(step)
    return torch.randn(n, *SHAPE, generator=gen), torch.randint(0, 4, (n,), generator=gen)


def train(model: nn.Module, method: LAPP, opt: torch.optim.Optimizer, steps: int) -> None:
    model.train()
    for step in range(steps):
        x, y = batch(step)
        loss = F.cross_entropy(model(x), y) + method.regularization()
        opt.zero_grad()
        loss.backward()
        opt.step()


def trained(sparsity: float, steps: int = 12, prune_steps: int = 8) -> tuple[nn.Module, LAPP]:
    model = model_with_bypass()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    method = LAPP(
        sparsity=sparsity, input_shape=SHAPE, prune_steps=prune_steps, threshold_lr=0.3
    ).setup(model, opt)
    train(model, method, opt, steps)
    return model, method


def test_original_macs_is_count_flops_of_the_model_without_bypass() -> None:
    torch.manual_seed(0)
    plain = PlainCNN(SHAPE, 4, widths=(8, 16, 16))
    method = LAPP(sparsity=0.5, input_shape=SHAPE, prune_steps=4, bypass=False).setup(plain)
    assert method.flops_model.original_macs == count_flops(plain, torch.zeros(1, *SHAPE)).dense
    with_bypass = model_with_bypass()
    other = LAPP(sparsity=0.5, input_shape=SHAPE, prune_steps=4).setup(with_bypass)
    assert other.flops_model.original_macs == method.flops_model.original_macs
    full = [float(u.channels) for u in other.flops_model.units]
    assert (
        float(other.flops_model.macs(full))
        == count_flops(with_bypass, torch.zeros(1, *SHAPE)).dense
    )


@pytest.mark.parametrize("sparsity", [0.5, 0.7])
def test_flops_from_masks_equal_count_flops_of_compacted_network(sparsity: float) -> None:
    _, method = trained(sparsity)
    kept = [float(k.sum()) for k in method.current_keep()]
    from_masks = float(method.flops_model.macs(kept))
    small = compact(method)
    measured = count_flops(small, torch.zeros(1, *SHAPE)).dense
    assert from_masks == measured
    widths = [small.get_submodule(u.name).conv.out_channels for u in method.flops_model.units]
    bypasses = [small.get_submodule(u.name).bypass.out_channels for u in method.flops_model.units]
    assert bypasses == [u.channels for u in method.flops_model.units]
    assert widths == [int(k) for k in kept]
    # Per-layer rates: cheap layers may stay whole, but the network as a whole is pruned.
    assert sum(kept) < sum(u.channels for u in method.flops_model.units)


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.7])
def test_final_flops_within_budget(sparsity: float) -> None:
    _, method = trained(sparsity)
    assert method.frozen
    ratio = method.flops_ratio()
    assert ratio <= 1.0 - sparsity  # the projection makes the budget exact (tolerance 0)
    # ... and tight: adding back any masked channel would exceed it.
    fm = method.flops_model
    keeps = method.current_keep()
    for u, keep in enumerate(keeps):
        if bool(keep.all()):
            continue
        kept = [float(k.sum()) for k in keeps]
        kept[u] += 1
        assert float(fm.macs(kept)) / fm.original_macs > 1.0 - sparsity


def test_every_threshold_gets_gradient_from_task_and_flops_terms() -> None:
    model = model_with_bypass()
    method = LAPP(sparsity=0.5, input_shape=SHAPE, prune_steps=10, ramp_delay=0.0).setup(model)
    x, y = batch(0)
    F.cross_entropy(model(x), y).backward()
    task_grad = method.thresholds.grad.clone()
    assert torch.all(task_grad != 0) and torch.all(torch.isfinite(task_grad))
    method.thresholds.grad = None
    method.regularization().backward()
    flops_grad = method.thresholds.grad.clone()
    # Raising a threshold removes channels, and FLOPs are above the ramp at step 1: negative.
    assert torch.all(flops_grad < 0)


def test_nothing_is_pruned_before_the_ramp_starts() -> None:
    """Issue 25: no pruning on random-init scores (the bypasses put R_0 above 1)."""
    model = model_with_bypass()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    method = LAPP(
        sparsity=0.6, input_shape=SHAPE, prune_steps=12, threshold_lr=0.3, ramp_delay=0.25
    ).setup(model, opt)
    assert method.ramp_start == 3
    assert method.initial_ratio > 1.0  # the bypasses' MACs
    start = method.thresholds.clone()
    for _ in range(method.ramp_start):
        assert all(bool(k.all()) for k in method.current_keep())
        assert method.regularization().item() == 0.0
        assert method.flops_ratio() == pytest.approx(method.initial_ratio)
        train(model, method, opt, 1)
        assert torch.equal(method.thresholds, start)  # no threshold step in the delay
    ratios = []
    for _ in range(method.ramp_start, 12):
        assert method.regularization().item() > 0.0 or method.step == method.ramp_start
        train(model, method, opt, 1)
        ratios.append(method.learned_ratio if method.frozen else method.flops_ratio())
    assert method.frozen and min(ratios) < method.initial_ratio
    ramp = [method.allowed_ratio(s) for s in range(14)]
    assert ramp[: method.ramp_start + 1] == [method.initial_ratio] * (method.ramp_start + 1)
    assert ramp[12] == pytest.approx(0.4) and ramp == sorted(ramp, reverse=True)
    frozen = [m.clone() for m in method.masks.masks().values()]
    train(model, method, opt, 3)
    assert all(
        torch.equal(a, b) for a, b in zip(frozen, method.masks.masks().values(), strict=True)
    )
    assert method.regularization().item() == 0.0


def _learn(**options) -> LAPP:
    model = model_with_bypass()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    base = {"sparsity": 0.5, "input_shape": SHAPE, "prune_steps": 30, "threshold_lr": 0.2}
    method = LAPP(**{**base, **options}).setup(model, opt)
    train(model, method, opt, 30)
    assert method.frozen
    return method


def test_learned_thresholds_reach_the_budget_themselves() -> None:
    """Fails if the thresholds do nothing: the projection alone would then do the pruning."""
    learned = _learn()
    assert abs(learned.learned_ratio - 0.5) < 0.06  # the thresholds met the ramp before freeze
    channels = sum(u.channels for u in learned.flops_model.units)
    assert learned.projection_removed + learned.projection_added <= 0.15 * channels
    assert float(learned.thresholds.max() - learned.thresholds.min()) > 0.05  # per-layer rates
    inert = _learn(threshold_lr=1e-9)  # thresholds that (practically) do not move
    assert inert.learned_ratio == pytest.approx(inert.initial_ratio)
    assert inert.projection_removed > 0.3 * channels


def test_shared_threshold_ablation_meets_the_ramp_with_one_threshold() -> None:
    method = _learn(learn_thresholds=False)
    assert torch.all(method.thresholds == method.thresholds[0])
    assert method.learned_ratio <= 0.5 + 1e-9
    assert method.flops_ratio() <= 0.5


def test_gate_zeroes_masked_main_filters_during_pruning_phase() -> None:
    model = model_with_bypass()
    method = LAPP(sparsity=0.5, input_shape=SHAPE, prune_steps=10, ramp_delay=0.0).setup(model)
    with torch.no_grad():
        method.thresholds.fill_(10.0)  # everything below: only min_channels survive
    seen = {}
    main = model.get_submodule(method.flops_model.units[0].convs[0])
    handle = main.register_forward_hook(lambda m, a, out: seen.setdefault("out", out))
    bn = model.get_submodule(method.flops_model.units[0].norm)
    handle2 = bn.register_forward_hook(lambda m, a, out: seen.setdefault("bn", out))
    model.eval()
    model(batch(0)[0])
    handle.remove()
    handle2.remove()
    # The hook sees the gated main output: one filter alive. The BN (after the bypass) all alive.
    gated = method.gate(0).detach()
    assert int((gated > 0.5).sum()) == 1
    assert torch.all(seen["bn"].abs().flatten(2).sum((0, 2)) != 0)


def test_bypass_carries_information_through_a_layer_pruned_to_one_filter() -> None:
    """The bypass is not pruned: a pruned channel still carries a mix of every input channel."""
    model = model_with_bypass()
    probe = LAPP(sparsity=0.5, input_shape=SHAPE, prune_steps=1).flops_model_of(model)
    lowest = probe.min_macs(1) / probe.original_macs  # every main branch at one filter
    method = LAPP(
        sparsity=1.0 - lowest - 1e-9, input_shape=SHAPE, prune_steps=1, ramp_delay=0.0
    ).setup(model)
    with torch.no_grad():
        method.thresholds.fill_(10.0)
    x = batch(5, 32)[0]
    small = compact(method, x)
    small.eval()
    wrappers = [m for m in small.modules() if isinstance(m, BypassConv)]
    assert [w.conv.out_channels for w in wrappers] == [1, 1, 1]  # main branch: one filter
    assert [w.bypass.out_channels for w in wrappers] == [8, 16, 16]  # bypass: full width
    assert small.classifier.in_features == 16  # the consumer keeps its full width
    with torch.no_grad():
        out = small(x)
        spread = out.std(0)
        assert torch.all(spread > 1e-4)  # the prediction still depends on the input
        for w in wrappers:
            w.bypass.weight.zero_()
        assert (small(x) - out).abs().max() > 1e-3  # and on the bypasses


def test_compacted_network_reproduces_masked_one_with_bypasses() -> None:
    model, method = trained(0.5, steps=14)
    x = batch(99, 32)[0]
    model.eval()
    with torch.no_grad():
        masked = model(x)
    keeps = method.current_keep()
    small = compact(method, x)
    small.eval()
    with torch.no_grad():
        out = small(x)
    assert (out - masked).abs().max() <= 1e-5
    wrappers = [m for m in small.modules() if isinstance(m, BypassConv)]
    assert len(wrappers) == 3
    assert sum(w.conv.out_channels for w in wrappers) < 8 + 16 + 16
    for w, keep, full in zip(wrappers, keeps, (8, 16, 16), strict=True):
        assert w.conv.out_channels == int(keep.sum()) <= full
        assert w.bypass.out_channels == full
        assert torch.equal(w.kept_index, torch.nonzero(keep).flatten())
        assert w.bypass.weight.abs().sum() > 0  # the bypass is part of the compact model
    assert not any(k.endswith("_mask") for k in small.state_dict())


def test_no_bypass_units_remove_channels_everywhere() -> None:
    torch.manual_seed(0)
    plain = PlainCNN(SHAPE, 4, widths=(8, 16, 16))
    opt = torch.optim.SGD(plain.parameters(), lr=0.05, momentum=0.9)
    method = LAPP(
        sparsity=0.5, input_shape=SHAPE, prune_steps=8, bypass=False, threshold_lr=0.3
    ).setup(plain, opt)
    train(plain, method, opt, 10)
    keeps = method.current_keep()
    small = compact(method)
    convs = [m for m in small.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [int(k.sum()) for k in keeps]
    assert convs[1].in_channels == int(keeps[0].sum())
    assert small.classifier.in_features == int(keeps[2].sum())
    measured = count_flops(small, torch.zeros(1, *SHAPE)).dense
    assert measured / method.flops_model.original_macs <= 0.5


def test_bypass_keeps_shapes_and_adds_a_1x1_branch() -> None:
    torch.manual_seed(0)
    plain = PlainCNN(SHAPE, 4, widths=(8, 16, 16))
    reference = copy.deepcopy(plain)
    wrapped = add_bypasses(plain, ["features.*"])
    assert wrapped == ["features.0", "features.3", "features.6"]
    x = batch(0)[0]
    plain.eval()
    reference.eval()
    assert plain(x).shape == reference(x).shape
    with torch.no_grad():
        for name in wrapped:
            plain.get_submodule(name).bypass.weight.zero_()
        assert torch.allclose(plain(x), reference(x), atol=1e-6)
    assert add_bypasses(plain, ["features.*"]) == []  # idempotent
    with pytest.raises(ValueError, match="nothing"):
        add_bypasses(nn.Sequential(nn.Conv2d(1, 2, 2)), ["nothing"])
    with pytest.raises(ValueError, match="0"):
        add_bypasses(nn.Sequential(nn.Conv2d(1, 2, 2)), ["0"])
    with pytest.raises(ValueError, match="keep"):
        plain.get_submodule("features.0").compact_bypass(torch.zeros(8, dtype=torch.bool))


def _unchanged(model: nn.Module, before: dict) -> bool:
    after = model.state_dict()
    return before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"sparsity": 0.99}, "sparsity"),
        ({"targets": ("stages.0.conv2",)}, "stages.0.conv2"),
        ({"targets": ("stem.0",)}, "stem.0"),
        ({"targets": ("nope*",)}, "nope"),
        ({"input_shape": (1, 2)}, "input_shape"),
    ],
)
def test_bad_targets_raise_before_touching_the_model(options: dict, match: str) -> None:
    model = model_with_bypass()
    before = copy.deepcopy(model.state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    method = LAPP(**{"sparsity": 0.5, "input_shape": SHAPE, "prune_steps": 4, **options})
    with pytest.raises(ValueError, match=match):
        method.setup(model, opt)
    assert _unchanged(model, before) and not opt._optimizer_step_pre_hooks


def test_missing_bypass_is_a_clear_error() -> None:
    torch.manual_seed(0)
    plain = PlainCNN(SHAPE, 4, widths=(8, 16, 16))
    with pytest.raises(ValueError, match="add_bypasses"):
        LAPP(sparsity=0.5, input_shape=SHAPE, prune_steps=4).setup(plain)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"input_shape": None}, ValueError, "input_shape"),
        ({"prune_steps": 0}, ValueError, "prune_steps"),
        ({"prune_steps": 2.5}, TypeError, "prune_steps"),
        ({"pattern": "unstructured"}, ValueError, "pattern"),
        ({"flops_weight": -1.0}, ValueError, "flops_weight"),
        ({"temperature": 0}, ValueError, "temperature"),
        ({"min_channels": 0}, ValueError, "min_channels"),
        ({"ramp_delay": 1.0}, ValueError, "ramp_delay"),
        ({"learn_thresholds": 1}, TypeError, "learn_thresholds"),
        ({"sparsity": 1.0}, ValueError, "sparsity"),
    ],
)
def test_bad_options(options: dict, error: type, match: str) -> None:
    base = {"sparsity": 0.5, "input_shape": SHAPE, "prune_steps": 4}
    with pytest.raises(error, match=match):
        LAPP(**{**base, **options})


def test_cuda_path() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    model = model_with_bypass().cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    method = LAPP(sparsity=0.5, input_shape=SHAPE, prune_steps=2).setup(model, opt)
    for step in range(3):
        x, y = batch(step)
        loss = F.cross_entropy(model(x.cuda()), y.cuda()) + method.regularization()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert method.frozen and method.flops_ratio() <= 0.5


def test_bench_config_prunes_during_the_first_quarter():
    from sparsecore.bench.train import build_method

    method = build_method(LAPP, 0.5, seed=0, total_steps=400, input_shape=(1, 8, 8))
    assert method.config.prune_steps == 100 and method.config.input_shape == (1, 8, 8)
    assert LAPP.bench_config(2, None) == {"prune_steps": 1, "bypass": False}


@pytest.mark.parametrize("call", ["finalize", "freeze", "flops_ratio"])
def test_calls_before_setup_are_runtime_errors(call: str) -> None:
    """Not a bare AssertionError: a RuntimeError that says to call setup first (issue 18)."""
    with pytest.raises(RuntimeError, match="setup"):
        getattr(LAPP(sparsity=0.5, input_shape=SHAPE, prune_steps=4), call)()

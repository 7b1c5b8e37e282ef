"""Paper-specific properties of PDP's soft mask, threshold, targets, ramp and hard mask."""

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from sparse_pdp import PDP, PDPConfig, allocate_keep, hard_mask, ramp_fraction, soft_mask, threshold
from sparsecore import NM, Channel, Unstructured, keep_count, transpose_pattern

torch.set_num_threads(1)
U = Unstructured()


def _weights(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _brute_threshold(mags: torch.Tensor, keep: int) -> float:
    ordered = sorted(mags.reshape(-1).tolist(), reverse=True)
    return 0.5 * (ordered[keep - 1] + ordered[keep])


# ---------------------------------------------------------------------- soft mask
def test_mask_is_one_half_at_plus_minus_t() -> None:
    # Magnitudes 0.7, 0.5, 0.4, 0.4, 0.3, 0.1 with keep=3: W_h = W_t = 0.4 so t = 0.4 exactly,
    # and the entries +0.4 and -0.4 sit at +t and -t.
    w = torch.tensor([0.1, -0.3, 0.4, -0.4, 0.5, -0.7], dtype=torch.float64)
    t = threshold(w.abs(), 3)
    assert float(t) == pytest.approx(0.4)
    m = soft_mask(w, U, 3, tau=1e-2)
    assert float(m[2]) == pytest.approx(0.5, abs=1e-12)
    assert float(m[3]) == pytest.approx(0.5, abs=1e-12)
    # With the tie at the boundary, the hard mask still keeps exactly 3 (the lower index first).
    assert hard_mask(w, U, 3).tolist() == [False, False, True, False, True, True]


def test_mask_matches_paper_formula_and_brute_force_threshold() -> None:
    w = _weights((12, 10))
    keep, tau = 37, 0.3
    t = _brute_threshold(w.abs(), keep)
    assert float(threshold(w.abs(), keep)) == pytest.approx(t)
    e_w, e_t = torch.exp(w * w / tau), math.exp(t * t / tau)
    assert torch.allclose(soft_mask(w, U, keep, tau), e_w / (e_w + e_t), rtol=1e-10)


def test_mask_monotone_in_magnitude_symmetric_and_strictly_inside_unit_interval() -> None:
    w = _weights((400,), seed=1) * 0.5
    m = soft_mask(w, U, 100, tau=0.5)
    assert bool(((m > 0) & (m < 1)).all())
    order = torch.argsort(w.abs())
    assert bool((m[order].diff() >= 0).all())
    assert torch.equal(soft_mask(-w, U, 100, tau=0.5), m)


@settings(max_examples=30, deadline=None)
@given(
    rows=st.integers(1, 9),
    cols=st.integers(2, 9),
    density=st.floats(0.05, 0.95),
    seed=st.integers(0, 10_000),
)
def test_hard_mask_keeps_exact_count_and_equals_m_at_least_half(
    rows: int, cols: int, density: float, seed: int
) -> None:
    w = _weights((rows, cols), seed)
    n = w.numel()
    keep = min(max(1, math.floor(density * n)), n - 1) if n > 1 else 1
    if n < 2:
        return
    hard = hard_mask(w, U, keep)
    assert int(hard.sum()) == keep
    # Brute force: the keep largest magnitudes.
    ranked = sorted(range(n), key=lambda i: -abs(w.reshape(-1)[i].item()))
    assert set(torch.nonzero(hard.reshape(-1)).reshape(-1).tolist()) == set(ranked[:keep])
    # Continuous weights: the hard mask is exactly m >= 0.5.
    assert torch.equal(hard, soft_mask(w, U, keep, tau=1e-3) >= 0.5)


def test_weights_below_t_receive_a_gradient_hard_fake_does_not() -> None:
    w = _weights((50,), seed=2).requires_grad_(True)
    keep, tau = 10, 0.2
    below = ~hard_mask(w, U, keep)
    coeff = _weights((50,), seed=3)
    (soft_mask(w, U, keep, tau) * w * coeff).sum().backward()
    assert w.grad is not None
    assert bool((w.grad[below] != 0).all())
    # Exactly d(m w)/dw = m + 2 w^2 m (1 - m) / tau: t is a stop-gradient constant.
    with torch.no_grad():
        m = soft_mask(w, U, keep, tau)
        expected = coeff * (m + 2 * w * w * m * (1 - m) / tau)
    assert torch.allclose(w.grad, expected, rtol=1e-10)
    # A hard-mask fake gives those weights no gradient at all.
    fake = w.detach().clone().requires_grad_(True)
    (fake * hard_mask(fake, U, keep) * coeff).sum().backward()
    assert fake.grad is not None and not fake.grad[below].any()


@pytest.mark.parametrize("pattern", [U, NM(1, 4), Channel()])
def test_tau_to_zero_gives_hard_magnitude_pruned_weight(pattern: object) -> None:
    w = _weights((8, 12), seed=4)
    keep = 2 if isinstance(pattern, Channel | NM) else 30
    if isinstance(pattern, NM):
        keep = 1
    target = w * hard_mask(w, pattern, keep)
    errors = [
        float((soft_mask(w, pattern, keep, tau) * w - target).abs().max())
        for tau in (1.0, 1e-1, 1e-2, 1e-4, 1e-8)
    ]
    assert all(a >= b for a, b in itertools.pairwise(errors))
    assert errors[0] > 1e-2
    assert errors[-1] < 1e-12


# ---------------------------------------------------------------------- structured variants
def test_nm_threshold_per_group_and_exactly_n_kept() -> None:
    w = _weights((6, 16), seed=5)
    pattern = NM(2, 4)
    m = soft_mask(w, pattern, 2, tau=1e-3)
    hard = hard_mask(w, pattern, 2)
    groups = w.reshape(-1, 4)
    for g, row in enumerate(groups):
        t = _brute_threshold(row.abs(), 2)
        expected = torch.sigmoid((row * row - t * t) / 1e-3)
        assert torch.allclose(m.reshape(-1, 4)[g], expected, rtol=1e-10)
    assert bool((hard.reshape(-1, 4).sum(-1) == 2).all())
    assert bool(((m >= 0.5) == hard).all())


def test_nm_along_dim0_of_a_conv() -> None:
    w = _weights((8, 3, 5), seed=6)
    pattern = NM(1, 4, dim=0)
    hard = hard_mask(w, pattern, 1)
    assert pattern.is_valid(hard)
    assert bool(((soft_mask(w, pattern, 1, 1e-4) >= 0.5) == hard).all())


def test_channel_uses_output_channel_norms() -> None:
    w = _weights((10, 3, 4), seed=7)
    pattern = Channel()
    norms = w.reshape(10, -1).norm(dim=1)
    t = _brute_threshold(norms, 4)
    m = soft_mask(w, pattern, 4, tau=0.5)
    expected = torch.sigmoid((norms**2 - t * t) / 0.5)
    assert torch.allclose(m[:, 0, 0], expected, rtol=1e-10)
    assert bool((m == m[:, :1, :1]).all())  # constant inside a channel
    hard = hard_mask(w, pattern, 4)
    assert set(torch.nonzero(hard[:, 0, 0]).reshape(-1).tolist()) == set(
        torch.topk(norms, 4).indices.tolist()
    )


def test_channel_variant_removes_whole_conv_filters() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv1d(1, 8, 5),
        nn.ReLU(),
        nn.Conv1d(8, 8, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 34, 4),
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    method = PDP(
        sparsity=0.5, pattern="channel", begin_step=1, end_step=3, exclude=("5.weight",)
    ).setup(model, opt)
    for _ in range(4):
        loss = model(torch.randn(4, 1, 40)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    final = method.finalize()
    alive = [(final[i].weight != 0).reshape(8, -1).any(1) for i in (0, 2)]
    assert sum(int(a.sum()) for a in alive) == 8  # exactly half of the 16 filters, globally
    for i, a in zip((0, 2), alive, strict=True):
        nonzero = (final[i].weight != 0).reshape(8, -1)
        assert bool(((nonzero.all(1)) == a).all())


# ---------------------------------------------------------------------- targets and schedule
def test_global_allocation_matches_one_brute_force_ranking() -> None:
    mags = {"a": _weights((30,), 8).abs(), "b": 3 * _weights((50,), 9).abs()}
    counts = allocate_keep(mags, 0.3)
    everything = sorted([(v, n) for n, m in mags.items() for v in m.tolist()], reverse=True)
    top = everything[: keep_count(80, 0.3)]
    assert counts == {"a": sum(n == "a" for _, n in top), "b": sum(n == "b" for _, n in top)}
    assert counts["b"] > counts["a"]
    assert allocate_keep(mags, 0.3, "uniform") == {"a": 9, "b": 15}


def test_global_allocation_never_empties_a_layer() -> None:
    mags = {"tiny": torch.full((10,), 1e-6) + torch.arange(10) * 1e-8, "big": torch.rand(90) + 1}
    counts = allocate_keep(mags, 0.1)
    assert counts["tiny"] == 1 and sum(counts.values()) == keep_count(100, 0.1)


def test_ramp_is_the_papers_epoch_formula() -> None:
    spe, s, eps_inv = 7, 3, 5
    cfg = PDPConfig.for_epochs(spe, s, eps_inv)
    for epoch in range(0, 12):
        want = 0.0 if epoch < s else min(1.0, (epoch - s + 1) / eps_inv)
        for step in range(epoch * spe, (epoch + 1) * spe):
            assert cfg.fraction(step) == pytest.approx(want)
    assert ramp_fraction(5, 5, 5, 1) == 1.0  # no ramp: full target right away


def test_warmup_is_exactly_dense_then_counts_ramp_down_monotonically() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    dense = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    dense.load_state_dict(model.state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt_d = torch.optim.SGD(dense.parameters(), lr=0.1, momentum=0.9)
    method = PDP(sparsity=0.9, begin_step=5, end_step=25, update_every=5).setup(model, opt)
    gen = torch.Generator().manual_seed(1)
    history = []
    for step in range(30):
        x, y = torch.randn(8, 16, generator=gen), torch.randint(0, 4, (8,), generator=gen)
        for net, o in ((model, opt), (dense, opt_d)):
            loss = nn.functional.cross_entropy(net(x), y)
            o.zero_grad()
            loss.backward()
            o.step()
        if step < 4:
            assert torch.equal(model(x), dense(x))
        history.append(sum(method.masks.nnz().values()))
    assert history[3] == 16 * 32 + 32 * 4
    assert all(a >= b for a, b in itertools.pairwise(history))
    assert history[-1] == keep_count(16 * 32 + 32 * 4, 0.1)


def test_harden_zeroes_pruned_weights_and_they_stay_zero() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    method = PDP(sparsity=0.75, begin_step=0, end_step=0).setup(model, opt)
    gen = torch.Generator().manual_seed(2)

    def step() -> None:
        x, y = torch.randn(8, 16, generator=gen), torch.randint(0, 4, (8,), generator=gen)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    method.harden()
    masks = {n: m.clone() for n, m in method.masks.masks().items()}
    for _ in range(5):
        step()
    for name, param in method.masks.params().items():
        assert not param[~masks[name]].any()
        assert torch.equal(method.masks.mask(name), masks[name])
    assert torch.equal(model[0].weight, method.masks.param("0.weight") * masks["0.weight"])
    final = method.finalize()
    assert torch.equal(final[0].weight != 0, masks["0.weight"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tau": 0.0}, "tau"),
        ({"tau": float("inf")}, "tau"),
        ({"begin_step": 10, "end_step": 5}, "end_step"),
        ({"update_every": 0}, "update_every"),
        ({"distribution": "erk"}, "distribution"),
        ({"begin_step": -1}, "begin_step"),
    ],
)
def test_bad_config_raises_naming_the_parameter(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PDP(**kwargs)


def test_bad_types_and_unsupported_pattern() -> None:
    with pytest.raises(TypeError, match="tau"):
        PDP(tau="small")
    with pytest.raises(TypeError, match="begin_step"):
        PDP(begin_step=1.5)
    model = nn.Sequential(nn.Linear(8, 8))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="pattern"):
        PDP(pattern="block4x4").setup(model)
    assert before.keys() == model.state_dict().keys()


@pytest.mark.parametrize("pattern", [U, NM(2, 4), Channel()])
def test_relative_tau_is_scale_free_and_equals_absolute_tau_times_t_squared(
    pattern: object,
) -> None:
    w = _weights((8, 12), seed=10)
    keep = 2 if isinstance(pattern, NM | Channel) else 40
    m = soft_mask(w, pattern, keep, 0.1, relative=True)
    assert torch.allclose(soft_mask(37.0 * w, pattern, keep, 0.1, relative=True), m, rtol=1e-9)
    assert not torch.allclose(
        soft_mask(37.0 * w, pattern, keep, 0.1), soft_mask(w, pattern, keep, 0.1)
    )
    if isinstance(pattern, Unstructured):
        t = float(threshold(w.abs(), keep))
        assert torch.allclose(soft_mask(w, U, keep, 0.1 * t * t), m, rtol=1e-10)
        v = torch.tensor([0.1, -0.3, 0.4, -0.4, 0.5, -0.7], dtype=torch.float64)
        half = soft_mask(v, U, 3, 0.05, relative=True)[2:4]
        assert torch.allclose(half, torch.full((2,), 0.5, dtype=torch.float64))


def test_relative_tau_option_reaches_the_forward() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32))
    method = PDP(sparsity=0.5, begin_step=0, end_step=0, tau=0.1, relative_tau=True).setup(model)
    w = method.masks.param("0.weight")
    expected = soft_mask(w, U, 256, 0.1, relative=True) * w
    assert torch.allclose(model[0].weight, expected)
    with pytest.raises(TypeError, match="relative_tau"):
        PDP(relative_tau=1)


def test_harden_step_switches_to_hard_fine_tuning_automatically() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    method = PDP.for_epochs(2, 1, 2, finetune_from_epoch=4, sparsity=0.75).setup(model, opt)
    assert method.config.harden_step == 8
    gen = torch.Generator().manual_seed(3)
    for step in range(1, 12):
        x, y = torch.randn(8, 16, generator=gen), torch.randint(0, 4, (8,), generator=gen)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert method.hardened == (step >= 8)
    w = method.masks.param("2.weight")
    assert torch.equal(model[2].weight, w * method.masks.mask("2.weight"))
    assert (
        int(method.masks.mask("2.weight").sum()) + int(method.masks.mask("0.weight").sum()) == 160
    )
    with pytest.raises(ValueError, match="harden_step"):
        PDP(begin_step=0, end_step=10, harden_step=5)


def test_bench_config_scales_the_papers_warmup_and_ramp():
    from sparsecore.bench.train import build_method

    overrides = PDP.bench_config(1000, 0.9)
    assert overrides == {"begin_step": 160, "end_step": 830}  # s = 16 and 16 + 1/ε of 100 epochs
    config = build_method(PDP, 0.9, seed=0, total_steps=1000).config
    assert (config.begin_step, config.end_step, config.sparsity) == (160, 830, 0.9)


# ---------------------------------------------------------------------- per-target layouts
class _TransposedPDP(PDP):
    """PDP whose targets are stored transposed (as Hugging Face ``Conv1D`` weights are)."""

    def pattern_for(self, model: nn.Module, name: str):
        return transpose_pattern(self.config.pattern, name)


@pytest.mark.parametrize("pattern", ["2:4", "channel"])
def test_every_step_uses_the_per_target_stored_pattern(pattern: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 8))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    method = _TransposedPDP(sparsity=0.5, pattern=pattern, begin_step=0, end_step=2)
    method.setup(model, opt)
    stored = transpose_pattern(method.config.pattern)
    assert all(t.pattern == stored for t in method.masks.targets.values())
    for _ in range(3):
        loss = model(torch.randn(4, 16)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        for name, mask in method.masks.masks().items():
            assert stored.is_valid(mask), name
    final = method.final_masks()
    for name, param in method.masks.params().items():
        keep = method.full_keep[name]
        assert torch.equal(final[name], hard_mask(param, stored, keep)), name
        assert stored.is_valid(final[name]) and not method.config.pattern.is_valid(final[name])


# ---------------------------------------------------------------------- schedule in the forward
def test_forward_uses_the_gradually_increasing_target_and_ranks_after_warmup() -> None:
    """Each ramp stage's forward weight is ``m(w)·w`` at that stage's kept count; the per-layer
    targets are ranked from the weights after the warm-up, not from the initial weights."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    begin, end, every = 6, 26, 5
    method = PDP(sparsity=0.9, begin_step=begin, end_step=end, update_every=every).setup(model, opt)
    assert method.full_keep is None
    names = ["0.weight", "2.weight"]
    units = {"0.weight": 16 * 32, "2.weight": 32 * 4}
    gen = torch.Generator().manual_seed(1)
    kept_at_half: list[int] = []
    for step in range(1, 31):
        x, y = torch.randn(8, 16, generator=gen), torch.randint(0, 4, (8,), generator=gen)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        before_ranking = {n: method.masks.param(n).detach().clone() for n in names}
        opt.step()
        if step < begin:
            assert method.full_keep is None  # no ranking during the warm-up
            continue
        if step == begin:
            # brute force: one global ranking of |w| after exactly `begin` optimizer steps
            trained = {n: method.masks.param(n).detach() for n in names}
            flat = torch.cat([trained[n].abs().flatten() for n in names])
            keep = keep_count(flat.numel(), 0.1)
            thr = flat.sort(descending=True).values[keep - 1]
            by_hand = {n: int((trained[n].abs() >= thr).sum()) for n in names}
            assert method.full_keep == by_hand
            at_init = torch.cat([init[n].abs().flatten() for n in names])
            thr0 = at_init.sort(descending=True).values[keep - 1]
            assert {n: int((init[n].abs() >= thr0).sum()) for n in names} != by_hand
            del before_ranking
        # the forward weight at this step, read off the module, is m(w)·w at the ramped count
        fraction = min(1.0, ((step - begin) // every + 1) / math.ceil((end - begin) / every))
        total_kept = 0
        for name, module in (("0.weight", model[0]), ("2.weight", model[2])):
            w = method.masks.param(name)
            assert method.full_keep is not None
            keep = units[name] - math.floor(fraction * (units[name] - method.full_keep[name]))
            expected = soft_mask(w, U, keep, 0.03, relative=True) * w
            assert torch.allclose(module.weight, expected, atol=1e-7), (step, name)
            total_kept += int((soft_mask(w, U, keep, 0.03, relative=True) >= 0.5).sum())
        kept_at_half.append(total_kept)
    assert all(a >= b for a, b in itertools.pairwise(kept_at_half))
    assert kept_at_half[0] > kept_at_half[-1] == keep_count(16 * 32 + 32 * 4, 0.1)
    assert len(set(kept_at_half)) >= 4  # several intermediate targets, not a jump


def test_defaults_warm_up_and_use_the_relative_temperature() -> None:
    config = PDPConfig()
    assert config.begin_step > 0 and config.relative_tau and config.tau == 0.03

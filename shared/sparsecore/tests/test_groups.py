"""Channel dependency groups: structure, scores, exact selection, masking and exact removal."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sparsecore as sc
from sparsecore.bench.models import ResNet
from sparsecore.evaluation import count_flops, count_params
from sparsecore.export import remove_channels
from sparsecore.groups import (
    active_channels,
    channel_groups,
    group_masks,
    group_scores,
    select_channels,
)
from sparsecore.select import keep_count

SHAPE = (3, 16, 16)


def assert_close(
    got: torch.Tensor, want: torch.Tensor, atol: float = 1e-6, rtol: float = 0
) -> None:
    """Same shape and values within ``atol`` (torch.testing's version imports DTensor: 10 s)."""
    got, want = got.detach(), want.detach().to(got.dtype)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert float((got - want).abs().max()) <= atol + rtol, float((got - want).abs().max())


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def trained_like(model: nn.Module, seed: int = 1) -> nn.Module:
    """BatchNorm affine parameters and statistics as in a trained network (not 1/0)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=g) + 0.5
            m.bias.data = torch.randn(n, generator=g) * 0.3
            m.running_mean = torch.randn(n, generator=g) * 0.3
            m.running_var = torch.rand(n, generator=g) + 0.5
    return model


def resnet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return trained_like(ResNet(SHAPE, 10, width=8, blocks=(2, 1, 1)), seed + 1)


class MLP(nn.Sequential):
    def __init__(self) -> None:
        super().__init__(
            nn.Linear(12, 24),
            nn.ReLU(),
            nn.Linear(24, 16),
            nn.BatchNorm1d(16),
            nn.ReLU(),
            nn.Linear(16, 5),
        )


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = MLP()
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear):
                m.bias.uniform_(-0.5, 0.5)  # biases that a dead neuron would still emit
    return trained_like(model, seed + 1)


class Concat(nn.Module):
    """Two convolutions concatenated, one BatchNorm over both, a conv, a flatten, a Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(3, 4, 1)
        self.bn = nn.BatchNorm2d(12)
        self.c = nn.Conv2d(12, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bn(torch.cat([self.a(x), self.b(x)], 1)).relu()
        return self.fc(self.c(h).relu().flatten(1))


def concat(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return trained_like(Concat(), seed + 1)


MODELS = {
    "resnet": (resnet, SHAPE),
    "mlp": (mlp, (12,)),
    "concat": (concat, (3, 4, 4)),
}


# ---------------------------------------------------------------------------- structure
def test_resnet_groups_couple_residual_producers_norms_and_consumers():
    model = resnet()
    groups = channel_groups(model, torch.zeros(1, *SHAPE))
    stem = groups.group_of("stages.0.conv2.weight")
    assert stem is groups.group_of("stem.0") is groups["stem.0"]
    assert stem.producers == ("stem.0", "stages.0.conv2", "stages.1.conv2")
    assert set(stem.norms) == {"stem.1", "stages.0.bn2", "stages.1.bn2"}
    assert set(stem.consumers) == {
        "stages.0.conv1",
        "stages.1.conv1",
        "stages.2.conv1",
        "stages.2.shortcut.0",
    }
    down = groups["stages.2.conv2"]
    assert down.producers == ("stages.2.conv2", "stages.2.shortcut.0")
    assert set(down.norms) == {"stages.2.bn2", "stages.2.shortcut.1"}
    assert groups["stages.0.conv1"].consumers == ("stages.0.conv2",)
    assert [g.name for g in groups.prunable()] == [
        "stem.0",
        "stages.0.conv1",
        "stages.1.conv1",
        "stages.2.conv1",
        "stages.2.conv2",
        "stages.3.conv1",
        "stages.3.conv2",
    ]
    assert "model output" in groups["fc"].reason
    roles = {(s.param, s.role) for s in stem.slices}
    assert ("stages.0.bn2.bias", "norm_bias") in roles
    assert ("stages.2.shortcut.0.weight", "in") in roles
    assert model.training  # mode restored


def test_concat_and_flatten_index_mapping():
    groups = channel_groups(concat(), torch.zeros(1, 3, 4, 4))
    b = groups["b"]
    bn = {s.role: s for s in b.members() if s.param.startswith("bn.")}
    assert bn["norm_weight"].index == (8, 9, 10, 11) and bn["norm_bias"].channel == (0, 1, 2, 3)
    assert [s.index for s in b.members("in")] == [(8, 9, 10, 11)]
    c = groups["c"]  # flattened into fc: 16 inputs per channel
    (fc_in,) = c.members("in")
    assert len(fc_in.index) == 6 * 16 and fc_in.channel[:17] == (0,) * 16 + (1,)


def test_unprunable_groups_say_why():
    ln = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    groups = channel_groups(ln, torch.zeros(2, 8))
    assert "normalises across channels" in groups["0"].reason
    assert groups["0"].unsupported == ("LayerNorm '1' (normalises across channels)",)
    partial = channel_groups(resnet(), torch.zeros(1, *SHAPE), layers=["stem.0", "fc"])
    assert "not a target" in partial["stem.0"].reason


# ---------------------------------------------------------------------------- scores
def test_l1_and_bn_scores_equal_brute_force():
    model = mlp()
    groups = channel_groups(model, torch.zeros(2, 12))
    w0, w2, w5 = model[0].weight, model[2].weight, model[5].weight
    l1 = group_scores(groups, model, "l1")
    assert_close(l1["0"], ((w0.abs().sum(1) + w2.abs().sum(0)) / 2).double())
    bn_w = model[3].weight.abs()
    want = ((w2.abs().sum(1) + bn_w + w5.abs().sum(0)) / 3).double()
    assert_close(l1["2"], want)
    bn = group_scores(groups, model, "bn")
    assert_close(bn["2"], bn_w.double())
    assert_close(bn["0"], w0.square().sum(1).double())  # no norm: L2 of rows


def test_fpgm_and_taylor_scores_equal_brute_force():
    model = mlp()
    groups = channel_groups(model, torch.zeros(2, 12))
    w0 = model[0].weight.detach().double()
    brute = torch.stack([(w0 - w0[i]).norm(dim=1).sum() for i in range(24)])
    assert_close(group_scores(groups, model, "fpgm")["0"], brute)
    with pytest.raises(ValueError, match="taylor"):
        group_scores(groups, model, "taylor")
    model(torch.randn(5, 12)).square().sum().backward()
    taylor = group_scores(groups, model, "taylor")
    w2, g0, g2 = model[2].weight, model[0].weight.grad, model[2].weight.grad
    want = ((model[0].weight * g0).abs().sum(1) + (w2 * g2).abs().sum(0)) / 2
    assert_close(taylor["0"], want.double())


@pytest.mark.parametrize("density", [0.3, 0.5, 0.7, 0.9])
def test_selection_counts_are_exact(density):
    g = torch.Generator().manual_seed(3)
    scores = {n: torch.rand(size, generator=g) for n, size in [("a", 8), ("b", 24), ("c", 5)]}
    layer = select_channels(scores, density, "layer")
    assert {n: int(k.sum()) for n, k in layer.items()} == {
        n: keep_count(s.numel(), density) for n, s in scores.items()
    }
    for n, k in layer.items():  # the kept ones are the top ones
        assert scores[n][k].min() >= scores[n][~k].max() if (~k).any() else True
    glob = select_channels(scores, density, "global")
    assert sum(int(k.sum()) for k in glob.values()) == keep_count(37, density)
    assert all(k.any() for k in glob.values())
    rounded = select_channels(scores, density, "layer", round_to=4)
    for n, k in rounded.items():  # rounded down to a multiple of 4, at least 4, at most size
        count = keep_count(scores[n].numel(), density)
        assert int(k.sum()) == min(scores[n].numel(), max(4, count - count % 4))


def test_round_to_through_the_method_and_its_errors():
    model = resnet()
    method = prune(model, SHAPE, 0.3, round_to=4)
    kept = active_channels(method.channel_groups, method.masks.masks())
    assert {n: int(k.sum()) for n, k in kept.items()} == {
        "stem.0": 4,  # keep_count 5 -> 4
        "stages.0.conv1": 4,
        "stages.1.conv1": 4,
        "stages.2.conv1": 8,  # 11 -> 8
        "stages.2.conv2": 8,
        "stages.3.conv1": 20,  # 22 -> 20
        "stages.3.conv2": 20,
    }
    with pytest.raises(ValueError, match="round_to"):
        sc.OneShotMagnitude(pattern="channel", round_to=4)
    with pytest.raises(ValueError, match="round_to"):
        sc.OneShotMagnitude(pattern="channel", input_shape=SHAPE, scope="global", round_to=4)
    with pytest.raises(ValueError, match="round_to"):
        select_channels({"a": torch.rand(8)}, 0.5, "global", round_to=2)


# ---------------------------------------------------------------------------- masking + removal
def prune(model: nn.Module, shape, sparsity=0.5, **config) -> sc.PruningMethod:
    return sc.OneShotMagnitude(
        pattern="channel", sparsity=sparsity, input_shape=shape, **config
    ).setup(model)


@pytest.mark.parametrize("name", list(MODELS))
def test_masked_logits_equal_shrunk_logits(name):
    build, shape = MODELS[name]
    model = build()
    method = prune(model, shape)
    model.eval()
    x = torch.randn(6, *shape)
    fresh = torch.randn(5, *shape)
    want, want_fresh = model(x), model(fresh)
    groups = method.channel_groups
    for group in groups.prunable():  # every masked channel outputs exactly zero
        for s in group.members("bias", "norm_weight", "norm_bias"):
            mask = method.masks.mask(s.param)
            assert int(mask.sum()) == keep_count(mask.numel(), 0.5) or len(s.index) != mask.numel()
    method.finalize()
    removed = remove_channels(model, x)
    assert removed, "nothing was removed"
    assert_close(model(x), want, atol=1e-5, rtol=0)
    assert_close(model(fresh), want_fresh, atol=1e-5, rtol=0)


def resnet_counts(k: dict[str, int], batch: int) -> tuple[int, int]:
    """MACs and parameters of the ResNet(width 8, blocks (2, 1, 1)) with ``k`` kept channels."""
    r0, r1, r2 = k["stem.0"], k["stages.2.conv2"], k["stages.3.conv2"]
    a0, a1, a2, a3 = (k[f"stages.{i}.conv1"] for i in range(4))
    convs = [  # (positions, in, out, kernel area)
        (256, 3, r0, 9),
        (256, r0, a0, 9),
        (256, a0, r0, 9),
        (256, r0, a1, 9),
        (256, a1, r0, 9),
        (64, r0, a2, 9),
        (64, a2, r1, 9),
        (64, r0, r1, 1),
        (16, r1, a3, 9),
        (16, a3, r2, 9),
        (16, r1, r2, 1),
    ]
    macs = batch * (sum(p * i * o * a for p, i, o, a in convs) + r2 * 10)
    params = sum(i * o * a + 2 * o for _, i, o, a in convs) + r2 * 10 + 10
    return macs, params


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.7])
def test_issue_scenario_removes_channels_and_counts_match_the_formula(sparsity):
    model = resnet()
    x = torch.randn(4, *SHAPE)
    full = resnet_counts({g.name: g.size for g in channel_groups(model, x[:1]).prunable()}, 4)
    assert (count_flops(model, x).dense, count_params(model)[0]) == full
    method = prune(model, SHAPE, sparsity)
    kept = {
        n: int(k.sum())
        for n, k in active_channels(method.channel_groups, method.masks.masks()).items()
    }
    method.finalize()
    remove_channels(model, x)
    want = resnet_counts(kept, 4)
    assert (count_flops(model, x).dense, count_params(model)[0]) == want
    assert kept["stem.0"] == keep_count(8, 1 - sparsity) and kept["stages.3.conv2"] == keep_count(
        32, 1 - sparsity
    )
    assert full[0] / want[0] > (1 / (1 - sparsity)) ** 2 * 0.8  # about quadratic in the width


def test_mlp_with_biases_counts_match_the_formula():
    model = mlp()
    method = prune(model, (12,), 0.6)
    kept = active_channels(method.channel_groups, method.masks.masks())
    k0, k2 = int(kept["0"].sum()), int(kept["2"].sum())
    assert (k0, k2) == (keep_count(24, 0.4), keep_count(16, 0.4))
    method.finalize()
    x = torch.randn(7, 12)
    remove_channels(model, x)
    # Linear 12->k0 (+bias), Linear k0->k2 (+bias), BatchNorm k2 (weight, bias), Linear k2->5
    assert count_flops(model, x).dense == 7 * (12 * k0 + k0 * k2 + k2 * 5)
    assert count_params(model)[0] == 12 * k0 + k0 + k0 * k2 + k2 + 2 * k2 + k2 * 5 + 5


def test_residual_groups_keep_identical_channel_sets_and_consumers_lose_them():
    model = resnet()
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    method = prune(model, SHAPE, 0.5)
    masks = method.masks.masks()
    groups = method.channel_groups
    stem = groups["stem.0"]
    rows = {p: masks[f"{p}.weight"].flatten(1).all(1) for p in stem.producers}
    kept = rows["stem.0"]
    assert all(torch.equal(r, kept) for r in rows.values())
    for norm in stem.norms:
        assert torch.equal(masks[f"{norm}.weight"], kept) and torch.equal(
            masks[f"{norm}.bias"], kept
        )
    own_rows = {n[: -len(".weight")]: m.flatten(1).all(1) for n, m in masks.items() if m.dim() > 1}
    method.finalize()
    remove_channels(model, torch.randn(2, *SHAPE))
    idx = kept.nonzero().flatten()
    modules = dict(model.named_modules())
    assert_close(modules["stem.0"].weight, original["stem.0.weight"][idx], atol=0, rtol=0)
    for producer in stem.producers:
        assert modules[producer].out_channels == int(kept.sum())
    for consumer in stem.consumers:  # exactly the kept input slices, in order
        want = original[f"{consumer}.weight"][own_rows[consumer]][:, idx]
        assert_close(modules[consumer].weight, want, atol=0, rtol=0)
        assert modules[consumer].in_channels == int(kept.sum())


def test_a_channel_removed_in_a_concat_producer_disappears_from_the_consumer():
    model = concat()
    groups = channel_groups(model, torch.zeros(1, 3, 4, 4))
    params = dict(model.named_parameters())
    current = {n: torch.ones_like(p, dtype=torch.bool) for n, p in params.items()}
    keep = torch.tensor([True, False, True, True])
    masks = group_masks(groups, {"b": keep}, current)
    assert set(masks) == {"b.weight", "b.bias", "bn.weight", "bn.bias"}
    assert masks["bn.weight"].tolist() == [True] * 9 + [False] + [True] * 2
    c_before = model.c.weight.detach().clone()
    x = torch.randn(3, 3, 4, 4)
    model.eval()
    with torch.no_grad():
        for n, m in masks.items():
            params[n].mul_(m)
    want = model(x)
    assert remove_channels(model, x) == {"b": 1}
    assert model.b.out_channels == 3 and model.bn.num_features == 11
    kept_inputs = [i for i in range(12) if i != 9]
    assert_close(model.c.weight, c_before[:, kept_inputs], atol=0, rtol=0)
    assert_close(model(x), want, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------- methods
def test_global_scope_and_gmp_with_groups_are_exact():
    model = resnet()
    method = prune(model, SHAPE, 0.6, scope="global")
    keeps = active_channels(method.channel_groups, method.masks.masks())
    total = sum(g.size for g in method.channel_groups.prunable())
    assert sum(int(k.sum()) for k in keeps.values()) == keep_count(total, 0.4)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    gmp = sc.GMP(
        pattern="channel", sparsity=0.5, input_shape=(12,), begin_step=0, end_step=4, update_every=1
    ).setup(model, opt)
    previous = None
    for _ in range(6):
        x = torch.randn(8, 12)
        loss = model(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        now = active_channels(gmp.channel_groups, gmp.masks.masks())
        if previous is not None:
            assert all(bool((now[n] <= previous[n]).all()) for n in now)  # masks only shrink
        previous = now
    assert {n: int(k.sum()) for n, k in previous.items()} == {"0": 12, "2": 8}
    model.eval()
    x = torch.randn(4, 12)
    want = model(x)
    gmp.finalize()
    assert remove_channels(model, x) == {"0": 12, "2": 8}
    assert_close(model(x), want, atol=1e-5, rtol=0)


def test_snip_with_groups_ranks_by_group_taylor_scores():
    model = mlp()
    snip = sc.SNIP(pattern="channel", sparsity=0.75, input_shape=(12,)).setup(model)
    g = torch.Generator().manual_seed(4)
    batches = [(torch.randn(8, 12, generator=g), torch.randint(0, 5, (8,), generator=g))]
    snip.calibrate(batches)
    keeps = active_channels(snip.channel_groups, snip.masks.masks())
    assert {n: int(k.sum()) for n, k in keeps.items()} == {"0": 6, "2": 4}
    # the same ranking from the group Taylor score of the unpruned model
    fresh = mlp()
    nn.functional.cross_entropy(fresh(batches[0][0]), batches[0][1]).backward()
    scores = group_scores(snip.channel_groups, fresh, "taylor")
    want = select_channels(scores, 0.25, "layer")
    assert all(torch.equal(keeps[n], want[n]) for n in want)


def test_bad_input_is_refused_before_the_model_is_touched():
    # input_shape is ignored unless pattern="channel" (the bench passes every config its shape)
    assert sc.OneShotMagnitude(pattern="unstructured", input_shape=(12,)).config.input_shape
    with pytest.raises(ValueError, match="input_shape"):
        sc.OneShotMagnitude(pattern="channel", input_shape=(0, 3))
    model = mlp()
    with pytest.raises(ValueError, match="input_shape"):
        sc.OneShotMagnitude(pattern="channel", input_shape=(7,)).setup(model)
    with pytest.raises(ValueError, match="input_shape"):
        sc.IMP(pattern="channel", input_shape=(12,)).setup(model)
    assert not [n for n, _ in model.named_buffers() if n.endswith("_mask")]
    assert model.training


def test_depthwise_conv_is_a_channel_wise_member_of_its_group():
    """An inverted residual (1×1 expand, BN, depthwise, BN, 1×1 project): one hidden channel is
    one group (expand row, both BNs, the depthwise filter, the projection column); a grouped
    but not depthwise conv stays unsupported."""
    torch.manual_seed(0)
    block = nn.Sequential(
        nn.Conv2d(2, 6, 1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 6, 3, padding=1, groups=6), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 4, 1), nn.Flatten(), nn.Linear(4 * 8 * 8, 3),
    )  # fmt: skip
    x = torch.randn(4, 2, 8, 8)
    groups = channel_groups(block, x[:1])
    hidden = groups["0"]
    assert hidden.prunable and hidden.producers == ("0", "3") and hidden.consumers == ("6",)
    assert set(hidden.norms) == {"1", "4"}
    params = dict(block.named_parameters())
    ones = {n: torch.ones_like(p, dtype=torch.bool) for n, p in params.items()}
    keep = torch.tensor([True, False, True, False, False, True])
    masks = group_masks(groups, {"0": keep}, ones)
    assert torch.equal(masks["3.weight"].flatten(1).all(1), keep)  # depthwise filters masked
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].mul_(mask)
    block.eval()
    before = block(x)
    remove_channels(block, x[:1])
    assert block[3].out_channels == block[3].groups == 3 and block[6].in_channels == 3
    torch.testing.assert_close(block(x), before)
    grouped = nn.Sequential(nn.Conv2d(2, 6, 1), nn.Conv2d(6, 6, 3, groups=2), nn.Conv2d(6, 2, 1))
    assert "grouped convolution" in channel_groups(grouped, x[:1])["0"].reason

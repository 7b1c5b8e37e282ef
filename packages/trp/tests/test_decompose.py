"""Decomposition into two standard layers: exactness, FLOPs, save/load."""

import io

import pytest
import torch
from torch import nn

from sparse_trp import (
    TRP,
    EnergyThreshold,
    FixedRank,
    ValueThreshold,
    build_decomposed,
    decompose,
    decomposed_macs,
    dense_macs,
    model_macs,
    plan_at_macs,
    plan_ranks,
    to_matrix,
)
from sparse_trp.decompose import factor_params
from sparsecore.evaluation import count_flops, count_params

torch.set_num_threads(1)


def make_low_rank(module: nn.Module, scheme: str, rank: int, seed: int = 0) -> None:
    """Give ``module`` a random weight of exactly ``rank`` (per filter for ND)."""
    gen = torch.Generator().manual_seed(seed)
    w = module.weight
    shape = to_matrix(w.detach(), "NC" if w.dim() == 2 else scheme).shape
    batch, (rows, cols) = shape[:-2], shape[-2:]
    a = torch.randn(*batch, rows, rank, generator=gen, dtype=torch.float64)
    b = torch.randn(*batch, rank, cols, generator=gen, dtype=torch.float64)
    m = (a @ b) / rank**0.5
    if w.dim() == 2:
        new = m
    elif scheme == "VH":
        n, c, kh, kw = w.shape
        new = m.reshape(c, kh, n, kw).permute(2, 0, 1, 3)
    else:
        new = m.reshape(w.shape)
    with torch.no_grad():
        module.weight.copy_(new.to(w.dtype))


CONV2D = [
    dict(kernel_size=3, padding=1),
    dict(kernel_size=3, stride=2, padding=1, bias=False),
    dict(kernel_size=(3, 5), stride=(2, 1), padding=(0, 2), dilation=(1, 2)),
    dict(kernel_size=3, padding="same", dilation=2),
    dict(kernel_size=3, padding=1, padding_mode="reflect"),
    dict(kernel_size=3, padding=2, padding_mode="circular", stride=2),
]


@pytest.mark.parametrize("scheme", ["NC", "VH", "ND"])
@pytest.mark.parametrize("options", CONV2D)
def test_conv2d_exact_low_rank_is_reproduced(scheme: str, options: dict) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 10, **options).double()
    make_low_rank(conv, scheme, 2)
    model = nn.Sequential(conv)
    # exactness of the factorisation, also where it would not pay (strided ND: see below)
    plan = plan_ranks(model, ["0"], scheme, ValueThreshold(1e-6), only_if_smaller=False)
    assert plan["ranks"] == {"0": 2}
    small = decompose(model, plan)
    assert isinstance(small[0], nn.Sequential) and len(small[0]) == 2
    assert all(type(m) is nn.Conv2d for m in small[0])
    x = torch.randn(3, 6, 11, 9, dtype=torch.float64)
    torch.testing.assert_close(small(x), model(x), rtol=1e-5, atol=1e-5)
    # the FLOP formula matches the counter on the real decomposed model
    assert count_flops(small, x[:1]).dense == decomposed_macs(conv, scheme, 2, (11, 9))
    assert count_flops(model, x[:1]).dense == dense_macs(conv, (11, 9))


@pytest.mark.parametrize("scheme", ["NC", "ND"])
def test_conv1d_and_linear_exact(scheme: str) -> None:
    torch.manual_seed(0)
    conv = nn.Conv1d(4, 6, 5, stride=2, padding=2).double()
    lin = nn.Linear(12, 7).double()
    make_low_rank(conv, scheme, 1)
    make_low_rank(lin, scheme, 3)
    model = nn.Sequential(conv, nn.AdaptiveAvgPool1d(2), nn.Flatten(), lin)
    plan = {"scheme": scheme, "ranks": {"0": 1, "3": 3}}
    small = decompose(model, plan)
    assert [type(m) for m in small[3]] == [nn.Linear, nn.Linear]
    assert small[3][0].bias is None and small[3][1].bias is not None
    x = torch.randn(5, 4, 15, dtype=torch.float64)
    torch.testing.assert_close(small(x), model(x), rtol=1e-5, atol=1e-5)
    assert count_flops(small, x[:1]).dense == model_macs(model, x[:1], plan)


def test_decomposition_is_the_best_rank_r_approximation() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(5, 8, 3, padding=1).double()
    model = nn.Sequential(conv)
    small = decompose(model, {"scheme": "NC", "ranks": {"0": 3}})
    a, b = small[0][0].weight, small[0][1].weight
    rebuilt = (b.reshape(8, 3) @ a.reshape(3, -1)).reshape(conv.weight.shape)
    u, s, vh = torch.linalg.svd(conv.weight.detach().reshape(8, -1))
    best = (u[:, :3] * s[:3]) @ vh[:3]
    torch.testing.assert_close(rebuilt.reshape(8, -1), best)


def test_plan_skips_layers_that_would_grow_and_respects_bounds() -> None:
    conv = nn.Conv2d(4, 4, 3)
    model = nn.Sequential(conv)
    # NC rank 4 costs 4·(36 + 4) = 160 weights > 144: skipped unless asked
    assert plan_ranks(model, ["0"], "NC", FixedRank(4))["ranks"] == {}
    assert plan_ranks(model, ["0"], "NC", FixedRank(4), only_if_smaller=False)["ranks"] == {"0": 4}
    assert plan_ranks(model, ["0"], "ND", FixedRank(50), only_if_smaller=False)["ranks"] == {"0": 4}


def test_only_if_smaller_decides_by_macs_not_weight_counts() -> None:
    """A strided ND layer at rank 2: fewer weights (272 < 576) but more MACs, so it stays dense."""
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 3, stride=2, padding=1)
    model = nn.Sequential(conv)
    x = torch.randn(1, 8, 16, 16)
    assert factor_params(conv, "ND", 2) < conv.weight.numel()
    dense = model_macs(model, x)  # 576 · 8·8
    plan = {"scheme": "ND", "ranks": {"0": 2}}
    assert model_macs(model, x, plan) > dense  # 8·8·2·256 + 8·2·9·64 = 41984 > 36864
    # brute force: MACs of the real decomposed layers, counted with hooks on every output
    small = decompose(model, plan)
    counted = 0

    def count(mod: nn.Module, _args: tuple, out: torch.Tensor) -> None:
        nonlocal counted
        counted += mod.weight[0].numel() * out[0].numel()

    for layer in small[0]:
        layer.register_forward_hook(count)
    small(x)
    assert counted == model_macs(model, x, plan)
    for example in (x, None):
        ranks = plan_ranks(model, ["0"], "ND", FixedRank(2), example=example)["ranks"]
        assert ranks == {}, example
        kept = plan_ranks(model, ["0"], "ND", FixedRank(2), False, example)["ranks"]
        assert kept == {"0": 2}
    # stride 1: the same layer at rank 2 is cheaper and is decomposed
    flat = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1))
    for example in (x, None):
        assert plan_ranks(flat, ["0"], "ND", FixedRank(2), example=example)["ranks"] == {"0": 2}


def test_plan_errors() -> None:
    model = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.Conv1d(4, 4, 3))
    with pytest.raises(ValueError, match="groups"):
        decompose(model, {"scheme": "NC", "ranks": {"0": 1}})
    with pytest.raises(ValueError, match="VH"):
        decompose(model, {"scheme": "VH", "ranks": {"1": 1}})
    with pytest.raises(ValueError, match="nope"):
        decompose(model, {"scheme": "NC", "ranks": {"nope": 1}})
    with pytest.raises(ValueError, match="rank"):
        decompose(model, {"scheme": "NC", "ranks": {"1": 0}})
    with pytest.raises(TypeError, match="plan"):
        decompose(model, {"1": 2})


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.body = nn.Sequential(
            nn.Conv2d(8, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 16, 3, stride=2, padding=1),
        )
        self.fc = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(self.stem(x).relu()).mean((2, 3)))


@pytest.mark.parametrize("scheme", ["NC", "VH", "ND"])
def test_trp_decompose_end_to_end_and_round_trip(scheme: str) -> None:
    """Right after a TRP step the weights are exactly low rank: decomposing at those ranks is
    lossless; the result is smaller, counts the formula's FLOPs and reloads weights_only."""
    torch.manual_seed(0)
    model = Net().double()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    trp = TRP(scheme=scheme, energy=0.6, include_linear=True).setup(model, opt)
    x = torch.randn(16, 1, 8, 8, dtype=torch.float64)
    y = torch.randint(0, 3, (16,))
    for _ in range(3):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()  # ends with a TRP step: weights are exactly low rank now
    model.eval()
    small, plan = trp.decompose(ValueThreshold(1e-7), only_if_smaller=False)
    expect = {trp.layers[n]: min(max(r), 16 if scheme != "ND" else 9) for n, r in trp.ranks.items()}
    if scheme == "VH":
        expect["fc"] = trp.ranks["fc.weight"][0]
    assert plan["ranks"] == expect
    assert not any(k.endswith("_mask") for k in small.state_dict())
    torch.testing.assert_close(small(x), model(x), rtol=1e-5, atol=1e-5)
    assert count_flops(small, x[:1]).dense == model_macs(model, x[:1], plan)

    buffer = io.BytesIO()
    torch.save({"plan": plan, "state": small.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    fresh = build_decomposed(Net().double(), saved["plan"])
    fresh.load_state_dict(saved["state"])
    fresh.eval()
    torch.testing.assert_close(fresh(x), small(x), rtol=0, atol=0)


def test_decomposed_model_is_smaller_and_cheaper() -> None:
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    trp = TRP(energy=0.5).setup(model, opt)
    small, plan = trp.decompose()
    x = torch.randn(1, 1, 8, 8)
    assert plan["ranks"]
    assert count_params(small)[0] < count_params(model)[0]
    assert count_flops(small, x).dense < count_flops(model, x).dense
    trp.finalize()
    _, plan2 = trp.decompose()  # still works after finalize
    assert plan2 == plan


def test_plan_at_macs_never_undercuts_the_budget_and_is_tight() -> None:
    torch.manual_seed(0)
    model = Net().eval()
    x = torch.randn(1, 1, 8, 8)
    layers = ["body.0", "body.3"]
    dense = model_macs(model, x)
    for fraction in (0.4, 0.6, 0.8):
        target = int(fraction * dense)
        plan, e = plan_at_macs(model, layers, "NC", target, x)
        got = model_macs(model, x, plan)
        assert got >= target
        assert count_flops(decompose(model, plan), x).dense == got
        # a slightly lower threshold would fall below the budget (the search is tight)
        lower = plan_ranks(model, layers, "NC", EnergyThreshold(e - 1e-6))
        assert model_macs(model, x, lower) < target or lower == plan


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_training_and_decomposition() -> None:
    torch.manual_seed(0)
    model = Net().cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    trp = TRP(energy=0.6).setup(model, opt)
    x = torch.randn(8, 1, 8, 8, device="cuda")
    y = torch.randint(0, 3, (8,), device="cuda")
    for _ in range(2):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    small, _ = trp.decompose(FixedRank(100), only_if_smaller=False)
    assert next(small.parameters()).is_cuda
    torch.testing.assert_close(small(x), model(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("scheme", ["NC", "VH", "ND"])
def test_formula_matches_official_show_low_rank_for_stride_one(scheme: str) -> None:
    """Official per-position costs (cifar-TRP.py show_low_rank) times the output size."""
    n, c, k, r, hw = 12, 7, 3, 4, (9, 6)
    conv = nn.Conv2d(c, n, k, padding=1)
    official = {
        "NC": c * k * k * r + r * n,
        "VH": c * r * k + n * r * k,
        "ND": (n * c + n * k * k) * r,
    }[scheme]
    assert decomposed_macs(conv, scheme, r, hw) == official * hw[0] * hw[1]
    assert dense_macs(conv, hw) == n * c * k * k * hw[0] * hw[1]

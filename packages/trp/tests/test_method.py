"""TRP's training-time behaviour: when substitution and the sub-gradient happen, and options."""

import pytest
import torch
from torch import nn

from sparse_trp import TRP, EnergyThreshold, TRPConfig, eligible_layers, svd_truncate, to_matrix

torch.set_num_threads(1)


def cnn(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(2, 6, 3, padding=1),  # first conv: left dense
        nn.ReLU(),
        nn.Conv2d(6, 8, 1),  # 1x1: left dense
        nn.Conv2d(8, 10, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(10, 10, 3, padding=1, groups=2),  # grouped: left dense
        nn.Conv2d(10, 12, 3, stride=2, padding=1),
        nn.Flatten(),
        nn.Linear(12 * 9, 5),
    )


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(step)
    return torch.randn(4, 2, 6, 6, generator=gen), torch.randint(0, 5, (4,), generator=gen)


def rank_of(weight: torch.Tensor, scheme: str = "NC", tol: float = 1e-5) -> int:
    s = torch.linalg.svdvals(to_matrix(weight.detach().double(), scheme))
    return int((s > tol * s.max()).sum())


def test_eligible_layers_follow_official_rule() -> None:
    model = cnn()
    assert eligible_layers(model) == ["3", "6"]
    assert eligible_layers(model, include_linear=True) == ["3", "6", "8"]
    assert eligible_layers(model, skip_first_conv=False) == ["0", "3", "6"]
    trp = TRP().setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    assert trp.config.targets == ("3.weight", "6.weight")
    assert trp.masks.sparsity() == 0.0


@pytest.mark.parametrize("scheme", ["NC", "VH", "ND"])
@pytest.mark.parametrize("period", [1, 3])
def test_forward_sees_low_rank_weights_on_trp_iterations(scheme: str, period: int) -> None:
    """On iteration t with t % period == 0 the forward pass runs on truncated weights."""
    model = cnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    trp = TRP(scheme=scheme, period=period, energy=0.6).setup(model, opt)
    seen: list[bool] = []
    for t in range(7):
        # the weight's numerical rank(s) equal the rank(s) TRP just chose on TRP iterations,
        # and are higher after an ordinary SGD step
        s = torch.linalg.svdvals(to_matrix(model[3].weight.detach().double(), scheme))
        numerical = (s > 1e-5 * s.amax(-1, keepdim=True)).sum(-1).reshape(-1).tolist()
        seen.append(numerical == trp.ranks["3.weight"])
        x, y = batch(t)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert seen == [t % period == 0 for t in range(7)]
    assert trp.step == 7


def test_substitution_keeps_exactly_the_energy_rank() -> None:
    model = cnn()
    w0 = model[6].weight.detach().clone()
    trp = TRP(energy=0.7).setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    s = torch.linalg.svdvals(w0.reshape(12, -1).double())
    e = (s**2).cumsum(0) / (s**2).sum()
    r = int((e < 0.7).sum()) + 1
    assert trp.ranks["6.weight"] == [r]
    assert rank_of(model[6].weight) == r
    after = torch.linalg.svdvals(model[6].weight.detach().reshape(12, -1).double())
    torch.testing.assert_close(after[:r], s[:r], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("period", [1, 2])
def test_nuclear_subgradient_added_to_gradient(period: int) -> None:
    """With plain SGD: ΔW = -lr·(∇L + λ·U_r V_rᵀ) on TRP iterations, -lr·∇L otherwise."""
    lam, lr = 0.5, 0.1
    model = cnn()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    trp = TRP(nuclear_weight=lam, period=period, substitute=False).setup(model, opt)
    for t in range(4):
        w = model[3].weight.detach().clone()
        out = svd_truncate(w, "NC", EnergyThreshold(0.9))
        x, y = batch(t)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        grad = model[3].weight.grad.detach().clone()
        opt.step()
        extra = lam * out.subgradient if t % period == 0 else 0.0
        torch.testing.assert_close(model[3].weight.detach(), w - lr * (grad + extra))
        assert not (t % period == 0 and torch.allclose(model[3].weight.detach(), w - lr * grad))
    assert trp.masks.sparsity() == 0.0


def test_substitute_false_keeps_full_rank_and_zero_lambda_disables() -> None:
    model = cnn()
    TRP(substitute=False).setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    assert rank_of(model[6].weight) == 12
    model = cnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trp = TRP(nuclear_weight=0.0).setup(model, opt)
    assert trp.subgradients == {}
    assert rank_of(model[6].weight) < 12


def test_nd_ranks_are_per_filter() -> None:
    model = cnn()
    trp = TRP(scheme="ND", energy=0.8).setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    ranks = trp.ranks["3.weight"]
    assert len(ranks) == 10
    for n, r in enumerate(ranks):
        assert rank_of(model[3].weight[n], "NC") == r


@pytest.mark.parametrize(
    ("options", "word"),
    [
        ({"sparsity": 0.5}, "sparsity"),
        ({"scheme": "XY"}, "scheme"),
        ({"energy": 0.0}, "energy"),
        ({"energy": 1.2}, "energy"),
        ({"nuclear_weight": -1.0}, "nuclear_weight"),
        ({"period": 0}, "period"),
        ({"pattern": "2:4"}, "pattern"),
        ({"substitute": False, "nuclear_weight": None}, "substitute"),
    ],
)
def test_bad_options_raise_value_error(options: dict, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        TRPConfig(**options)


@pytest.mark.parametrize(
    ("options", "word"),
    [
        ({"period": 1.5}, "period"),
        ({"energy": "high"}, "energy"),
        ({"substitute": 1}, "substitute"),
    ],
)
def test_bad_option_types_raise_type_error(options: dict, word: str) -> None:
    with pytest.raises(TypeError, match=word):
        TRPConfig(**options)


@pytest.mark.parametrize(
    ("model", "options", "word"),
    [
        (
            nn.Sequential(nn.Conv2d(2, 4, 3), nn.Conv2d(4, 4, 3, groups=2)),
            {"targets": ("1.weight",)},
            "groups",
        ),
        (nn.Sequential(nn.Conv1d(2, 4, 3), nn.Conv1d(4, 4, 3)), {"scheme": "VH"}, "VH"),
        (nn.Sequential(nn.Conv2d(2, 4, 3), nn.Conv2d(4, 4, 3)), {"targets": ("1.bias",)}, "weight"),
        (nn.Sequential(nn.Linear(3, 3)), {}, "targets"),
        (
            nn.Sequential(nn.Conv3d(2, 4, 3), nn.Conv3d(4, 4, 3)),
            {"targets": ("1.weight",)},
            "Conv3d",
        ),
    ],
)
def test_unsupported_layers_raise_before_touching_model(model, options, word) -> None:
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=word):
        TRP(**options).setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_conv1d_model_is_supported() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 6, 5), nn.Conv1d(6, 8, 3, stride=2), nn.Conv1d(8, 8, 3))
    trp = TRP(energy=0.5).setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    assert list(trp.layers.values()) == ["1", "2"]
    assert rank_of(model[1].weight) == trp.ranks["1.weight"][0] < 8


def test_failing_svd_leaves_layer_unchanged() -> None:
    model = cnn()
    with torch.no_grad():
        model[3].weight[0, 0, 0, 0] = float("nan")
    w = model[3].weight.detach().clone()
    trp = TRP().setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    got = model[3].weight.detach()
    assert torch.equal(got.isnan(), w.isnan()) and torch.equal(got.nan_to_num(), w.nan_to_num())
    assert not trp.subgradients["3.weight"].any()


def test_exclude_applies_to_default_targets() -> None:
    model = cnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trp = TRP(include_linear=True, exclude=("8.weight",)).setup(model, opt)
    assert list(trp.layers.values()) == ["3", "6"]

"""Compact checkpoints, CSR inference, structured surgery and the 2:4 conversion."""

from __future__ import annotations

import json
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

import sparsecore as sc
from sparsecore.export import (
    CSRLinear,
    compact_size_report,
    is_two_four,
    load_compact,
    remove_channels,
    save_compact,
    to_semi_structured,
    to_sparse_inference,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def mlp(width: int = 512, depth: int = 3, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), nn.ReLU()]
    layers.append(nn.Linear(width, 10))
    return nn.Sequential(*layers)


def pruned(model: nn.Module, **config) -> sc.PruningMethod:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return sc.OneShotMagnitude(**config).setup(model, opt)


def dense_file(model: nn.Module, path) -> int:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return os.path.getsize(path)


def bits(t: torch.Tensor) -> torch.Tensor:
    views = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
    return t.view(views[t.element_size()])


# ---------------------------------------------------------------- compact checkpoints
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_round_trip_is_exact_with_masks(tmp_path, dtype):
    model = mlp(64).to(dtype)
    pruned(model, sparsity=0.8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    info = save_compact(model, tmp_path / "c.safetensors")
    assert info["0.weight"]["kind"] == "sparse" and info["0.weight_mask"]["kind"] == "mask_of"
    for p in model.parameters():
        p.data.normal_()
    state = load_compact(tmp_path / "c.safetensors", model)
    for key, want in before.items():
        assert state[key].dtype == want.dtype and torch.equal(state[key], want), key
        assert torch.equal(model.state_dict()[key], want), key
        if want.is_floating_point():  # every nonzero entry keeps its exact bits
            nz = want != 0
            assert torch.equal(bits(state[key])[nz], bits(want)[nz]), key


def test_zero_semantics_and_special_values(tmp_path):
    w = torch.zeros(4, 64)
    w[0, :3] = torch.tensor([float("nan"), float("inf"), -1e-30])
    w[1, 5] = -0.0  # an unstored zero: comes back as +0.0
    mask = torch.zeros(4, 64, dtype=torch.bool)
    mask[2, 7] = True
    w[2, 7] = -0.0  # a kept (masked-in) zero: stored, its sign survives
    state = {"w": w, "w_mask": mask, "step": torch.tensor(3), "flag": torch.tensor([True, False])}
    save_compact(state, tmp_path / "z.safetensors")
    back = load_compact(tmp_path / "z.safetensors")
    assert set(back) == set(state)
    assert torch.equal(bits(back["w"][0, :3]), bits(w[0, :3]))  # NaN bits, inf, denormal
    assert back["w"][1, 5].item() == 0.0 and not torch.signbit(back["w"][1, 5])
    assert torch.signbit(back["w"][2, 7])
    assert torch.equal(back["w"].nan_to_num(7.0), w.nan_to_num(7.0))
    assert torch.equal(back["w_mask"], mask) and back["w_mask"].dtype == torch.bool
    assert torch.equal(back["step"], state["step"]) and torch.equal(back["flag"], state["flag"])
    # the mask differs from the weight's nonzeros, so it is stored on its own
    with safe_open(str(tmp_path / "z.safetensors"), framework="pt") as f:
        assert "w_mask::bits" in f.keys()  # noqa: SIM118


@settings(max_examples=30, deadline=None)
@given(
    shape=st.lists(st.integers(1, 9), min_size=1, max_size=3),
    density=st.floats(0.0, 1.0),
    dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.float64]),
    seed=st.integers(0, 2**16),
    with_mask=st.booleans(),
)
def test_round_trip_property(tmp_path_factory, shape, density, dtype, seed, with_mask):
    g = torch.Generator().manual_seed(seed)
    value = torch.randn(shape, generator=g).to(dtype)
    value[torch.rand(shape, generator=g) > density] = 0.0
    value[torch.rand(shape, generator=g) < 0.05] = float("nan")
    value[torch.rand(shape, generator=g) < 0.05] = -0.0
    state = {"w": value}
    if with_mask:
        state["w_mask"] = torch.rand(shape, generator=g) < density
    path = tmp_path_factory.mktemp("prop") / "p.safetensors"
    save_compact(state, path, min_sparsity=0.0)
    back = load_compact(path)
    assert back["w"].dtype == dtype and back["w"].shape == value.shape
    assert torch.equal(back["w"].nan_to_num(3.0), value.nan_to_num(3.0))
    stored = value != 0
    if with_mask:
        stored |= state["w_mask"]
        assert torch.equal(back["w_mask"], state["w_mask"])
    assert torch.equal(bits(back["w"])[stored], bits(value)[stored])  # exact bits, -0.0 too


def test_size_at_90_percent_unstructured(tmp_path):
    model = mlp(512)
    method = pruned(model, sparsity=0.9)
    save_compact(model, tmp_path / "masked.safetensors")  # masks ride along for free
    method.finalize()
    dense = dense_file(model, tmp_path / "dense.safetensors")
    save_compact(model, tmp_path / "c.safetensors")
    ratio = os.path.getsize(tmp_path / "c.safetensors") / dense
    masked_ratio = os.path.getsize(tmp_path / "masked.safetensors") / dense
    assert ratio <= 0.14 and masked_ratio <= 0.14, (ratio, masked_ratio)
    assert ratio >= 0.1 + 1 / 32 - 0.01  # sanity: values plus one bit per entry
    report = compact_size_report(tmp_path / "c.safetensors")
    assert report["sparse_tensors"] == 3 and report["bytes"] == os.path.getsize(
        tmp_path / "c.safetensors"
    )


def test_size_at_2_4(tmp_path):
    model = mlp(512)
    method = pruned(model, sparsity=0.5, pattern="2:4")
    assert all(sc.NM(2, 4).is_valid(m) for m in method.masks.masks().values())
    method.finalize()
    dense = dense_file(model, tmp_path / "dense.safetensors")
    save_compact(model, tmp_path / "c.safetensors")
    ratio = os.path.getsize(tmp_path / "c.safetensors") / dense
    assert ratio <= 0.57, ratio
    back = load_compact(tmp_path / "c.safetensors", model)
    assert all(torch.equal(back[k], v) for k, v in model.state_dict().items())


def test_dense_tensors_stay_dense(tmp_path):
    model = mlp(32)
    info = save_compact(model, tmp_path / "c.safetensors")
    assert all(e["kind"] == "dense" for e in info.values())
    info = save_compact(model, tmp_path / "c2.safetensors", min_sparsity=0.0)
    assert info["0.weight"]["kind"] == "sparse"
    back = load_compact(tmp_path / "c2.safetensors", model)
    assert torch.equal(back["0.weight"], model[0].weight)


def test_load_rejects_mismatches_naming_the_tensor(tmp_path):
    model = mlp(64)
    pruned(model, sparsity=0.9)
    path = tmp_path / "c.safetensors"
    save_compact(model, path)
    wider = mlp(64)
    wider[2] = nn.Linear(64, 32)
    pruned(wider, sparsity=0.9)
    with pytest.raises(ValueError, match=r"2\.weight.*shape"):
        load_compact(path, wider, strict=False)
    with pytest.raises(ValueError, match="missing tensors"):
        load_compact(path, nn.Sequential(nn.Linear(64, 64)))
    half = mlp(64).half()
    pruned(half, sparsity=0.9)
    with pytest.raises(ValueError, match=r"0\.weight.*dtype"):
        load_compact(path, half)


def _rewrite(path, out, tensors=None, meta=None):
    with safe_open(str(path), framework="pt") as f:
        raw = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        header = json.loads(f.metadata()["sparsecore"])
    raw.update(tensors or {})
    if meta:
        meta(header)
    save_file(raw, str(out), metadata={"sparsecore": json.dumps(header)})


def test_load_rejects_corrupt_files(tmp_path):
    model = mlp(64)
    pruned(model, sparsity=0.9)
    path = tmp_path / "c.safetensors"
    save_compact(model, path)
    values = load_compact(path)["0.weight"]
    nnz = int(values.ne(0).sum())
    _rewrite(path, tmp_path / "a.safetensors", {"0.weight::values": torch.zeros(nnz - 1)})
    with pytest.raises(ValueError, match=r"'0\.weight'.*values"):
        load_compact(tmp_path / "a.safetensors")
    flipped = {"2.weight::bits": torch.zeros(64 * 64 // 8, dtype=torch.uint8)}
    _rewrite(path, tmp_path / "b.safetensors", flipped)
    with pytest.raises(ValueError, match=r"'2\.weight'.*bitmask"):
        load_compact(tmp_path / "b.safetensors")
    _rewrite(path, tmp_path / "m.safetensors", meta=lambda h: h["tensors"].pop("0.bias"))
    with pytest.raises(ValueError, match="unexpected tensors"):
        load_compact(tmp_path / "m.safetensors", model)
    (tmp_path / "t.safetensors").write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load_compact(tmp_path / "t.safetensors")
    save_file({"x": torch.ones(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="not a compact checkpoint"):
        load_compact(tmp_path / "plain.safetensors")


def test_save_rejects_reserved_names(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        save_compact({"a::bits": torch.ones(2)}, tmp_path / "x.safetensors")
    with pytest.raises(TypeError, match="not a tensor"):
        save_compact({"a": 3}, tmp_path / "x.safetensors")


# ---------------------------------------------------------------- CSR inference
def test_to_sparse_inference_matches_dense():
    model = mlp(256)
    method = pruned(model, sparsity=0.9, exclude=("4.weight",))
    x = torch.randn(16, 256)
    want = model(x)
    fast = to_sparse_inference(model, min_sparsity=0.5)  # masks still attached: honoured
    assert isinstance(model[0], nn.Linear), "default must leave the original untouched"
    assert isinstance(fast[0], CSRLinear) and isinstance(fast[2], CSRLinear)
    assert isinstance(fast[4], nn.Linear)  # dense classifier stays dense
    assert fast[0].nnz == method.masks.nnz()["0.weight"]
    torch.testing.assert_close(fast(x), want, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        fast(x.reshape(4, 4, 256)), want.reshape(4, 4, 10), atol=1e-5, rtol=0
    )
    same = to_sparse_inference(model, min_sparsity=0.95, inplace=True)
    assert same is model and isinstance(model[0], nn.Linear)
    back = fast[0].to_dense_linear()
    assert torch.equal(back.weight, model[0].weight * model[0].weight_mask)
    with pytest.raises(ValueError, match="min_sparsity"):
        to_sparse_inference(model, 1.5)


def test_csr_linear_without_bias_other_dtypes_and_empty_batches():
    torch.manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        for bias in (True, False):
            linear = nn.Linear(48, 24, bias=bias, dtype=dtype)
            with torch.no_grad():
                linear.weight.mul_(torch.rand_like(linear.weight) < 0.2)
            layer = CSRLinear.from_linear(linear)
            assert layer.nnz == int(linear.weight.count_nonzero())
            for shape in ((5, 48), (2, 3, 48), (0, 48)):
                x = torch.randn(shape, dtype=dtype)
                got = layer(x)
                assert got.shape == (*shape[:-1], 24) and got.dtype == dtype
                torch.testing.assert_close(got, linear(x), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="expected last dim 48"):
        layer(torch.randn(2, 47, dtype=torch.float64))


def test_csr_chain_passes_transposed_outputs_without_copies():
    model = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU())
    pruned(model, sparsity=0.8)
    fast = to_sparse_inference(model)
    x = torch.randn(6, 32)
    hidden = fast[1](fast[0](x))
    assert hidden.t().is_contiguous(), "a CSRLinear output is the transposed (out, N) product"
    torch.testing.assert_close(fast(x), model(x), atol=1e-5, rtol=0)


# ---------------------------------------------------------------- structured surgery
def test_remove_channels_mlp_with_bias_folding():
    model = mlp(64, depth=3)
    method = pruned(model, sparsity=0.5, pattern="channel", exclude=("4.weight",))
    method.finalize()
    biases = [model[0].bias.clone(), model[2].bias.clone()]
    x = torch.randn(32, 64)
    want = model(x)
    removed = remove_channels(model, x)
    assert removed == {"0": 32, "2": 32}
    assert model[0].out_features == 32 and model[2].in_features == 32
    assert model[2].out_features == 32 and model[4].in_features == 32
    # dead neurons emit relu(bias) > 0 for some: that constant was folded into the next bias
    assert not torch.equal(model[4].bias, biases[1][:10]) or not torch.equal(
        model[2].bias, biases[1][: model[2].out_features]
    )
    torch.testing.assert_close(model(x), want, atol=1e-5, rtol=0)


def test_remove_channels_mlp_exact_on_new_inputs():
    model = mlp(48, depth=3, seed=1)
    reference = mlp(48, depth=3, seed=1)
    method = pruned(model, sparsity=0.75, pattern="channel", exclude=("4.weight",))
    masks = {k: v.clone() for k, v in method.masks.masks().items()}
    method.finalize()
    remove_channels(model, torch.randn(4, 48))
    assert (
        sum(p.numel() for p in model.parameters())
        < sum(p.numel() for p in reference.parameters()) / 3
    )
    with torch.no_grad():
        for name, mask in masks.items():
            reference.get_parameter(name).mul_(mask)
    x = torch.randn(64, 48)
    torch.testing.assert_close(model(x), reference(x), atol=1e-5, rtol=0)


def test_remove_channels_with_explicit_masks():
    model = mlp(32, depth=3, seed=2)
    keep = sc.select(model[2].weight.abs(), 0.25, sc.Channel(), name="2.weight")
    with torch.no_grad():
        model[2].bias[~keep[:, 0]] = 0.0  # dead neurons, so no folding is needed here
    x = torch.randn(16, 32)
    masked = mlp(32, depth=3, seed=2)
    masked.load_state_dict(model.state_dict())
    with torch.no_grad():
        masked[2].weight.mul_(keep)
    removed = remove_channels(model, x, {"2.weight": keep})
    assert removed == {"2": 24} and model[4].in_features == 8
    torch.testing.assert_close(model(x), masked(x), atol=1e-5, rtol=0)


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU()
        )
        self.body = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16))
        self.mid = nn.Sequential(
            nn.Conv2d(16, 24, 3, padding=1, bias=False), nn.BatchNorm2d(24), nn.ReLU()
        )
        self.head = nn.Sequential(
            nn.Conv2d(24, 12, 1), nn.ReLU(), nn.Flatten(), nn.Linear(12 * 8 * 8, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        h = torch.relu(h + self.body(h))
        return self.head(self.mid(h))


def _randomize_bn(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data = torch.rand(m.num_features, generator=g) + 0.5
            m.bias.data = torch.randn(m.num_features, generator=g) * 0.1
            m.running_mean = torch.randn(m.num_features, generator=g) * 0.1
            m.running_var = torch.rand(m.num_features, generator=g) + 0.5


def test_remove_channels_cnn_with_batchnorm_and_residual():
    torch.manual_seed(0)
    model = Residual()
    _randomize_bn(model)
    method = pruned(
        model, sparsity=0.5, pattern="channel", targets=("mid.0.weight", "head.0.weight")
    )
    method.finalize()
    with torch.no_grad():  # make the pruned channels dead after BN (zero shift), as slimming does
        dead = ~model.mid[0].weight.flatten(1).ne(0).any(1)
        model.mid[1].bias[dead] = 0.0
        model.mid[1].running_mean[dead] = 0.0
    model.eval()
    x = torch.randn(6, 1, 8, 8)
    want = model(x)
    before = sum(p.numel() for p in model.parameters())
    removed = remove_channels(model, x)
    assert removed["mid.0"] == 12 and removed["head.0"] == 6
    assert model.mid[0].out_channels == 12 and model.mid[1].num_features == 12
    assert model.head[0].in_channels == 12 and model.head[3].in_features == 6 * 64
    assert "stem.0" not in removed  # nothing dead there: the residual pair is untouched
    assert sum(p.numel() for p in model.parameters()) < before * 0.6
    torch.testing.assert_close(model(x), want, atol=1e-5, rtol=0)
    torch.testing.assert_close(model(x.flip(0)), want.flip(0), atol=1e-5, rtol=0)


def test_remove_channels_folds_constants_into_unpadded_conv():
    torch.manual_seed(0)
    model = Residual()
    _randomize_bn(model)
    method = pruned(model, sparsity=0.5, pattern="channel", targets=("mid.0.weight",))
    method.finalize()
    model.mid[1].bias.data.abs_().add_(0.1)  # dead filters still emit relu(shift) > 0 ...
    model.eval()
    x = torch.randn(4, 1, 8, 8)
    want = model(x)
    bias = model.head[0].bias.clone()
    assert remove_channels(model, x) == {"mid.0": 12}  # ... into a 1x1 conv: folded, exact
    assert not torch.allclose(model.head[0].bias, bias)
    torch.testing.assert_close(model(x), want, atol=1e-5, rtol=0)


def test_remove_channels_keeps_channels_that_would_change_the_output():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 4, 3, padding=1),
        nn.Flatten(),
        nn.Linear(4 * 36, 3),
    )
    _randomize_bn(model)
    method = pruned(model, sparsity=0.5, pattern="channel", targets=("0.weight",))
    method.finalize()
    model[1].bias.data.abs_().add_(0.1)  # dead filters emit a constant into a padded conv
    model.eval()
    x = torch.randn(4, 1, 6, 6)
    want = model(x)
    assert remove_channels(model, x) == {}  # border effects: not removable exactly, kept
    assert model[0].out_channels == 8
    torch.testing.assert_close(model(x), want, atol=1e-5, rtol=0)
    model[0].bias.data.zero_()  # the conv bias reaches BN too
    model[1].bias.data.zero_()
    model[1].running_mean.zero_()
    want = model(x)
    assert remove_channels(model, x) == {"0": 4}  # dead for real now
    assert model[3].in_channels == 4
    torch.testing.assert_close(model(x), want, atol=1e-5, rtol=0)


def test_remove_channels_rejects_live_masks_and_bad_masks():
    model = mlp(16)
    method = pruned(model, sparsity=0.5, pattern="channel")
    with pytest.raises(ValueError, match="finalize"):
        remove_channels(model, torch.randn(2, 16))
    method.finalize()
    with pytest.raises(ValueError, match="does not match"):
        remove_channels(model, torch.randn(2, 16), {"0.weight": torch.ones(3, dtype=torch.bool)})


# ---------------------------------------------------------------- 2:4 semi-structured
def test_is_two_four():
    model = mlp(64)
    method = pruned(model, sparsity=0.5, pattern="2:4")
    method.finalize()
    assert is_two_four(model[0].weight) and not is_two_four(torch.ones(4, 8))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU error path")
def test_semi_structured_raises_on_cpu():
    with pytest.raises(RuntimeError, match="CUDA"):
        to_semi_structured(mlp(64))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="2:4 kernels need a CUDA GPU")
def test_semi_structured_on_cuda():
    model = mlp(128).half().cuda()
    method = pruned(model, sparsity=0.5, pattern="2:4")
    method.finalize()
    x = torch.randn(64, 128, device="cuda", dtype=torch.half)
    want = model(x)
    converted = to_semi_structured(model)
    assert converted, "at least one layer should convert on a supported GPU"
    torch.testing.assert_close(model(x), want, atol=1e-2, rtol=1e-2)

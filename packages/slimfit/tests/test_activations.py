"""SlimFit's activation caches: exact gradients where exact, bounded error elsewhere, fewer B."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sparse_slimfit import (
    FrozenLayerNormFunction,
    FrozenLinearFunction,
    QuantizedInputLinearFunction,
    SlimFit,
    dequantize_fixed_point,
    ffn_output_projections,
    patch_activations,
    quantize_fixed_point,
)
from sparse_slimfit.bench import tiny_vit
from sparsecore.bench import tiny_bert
from sparsecore.evaluation import SavedTensorMeter

torch.set_num_threads(1)


def _bert() -> nn.Module:
    return tiny_bert(num_labels=4, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def _tokens(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(1, 1000, (4, 10), generator=gen), torch.randint(0, 4, (4,), generator=gen)


def test_active_unit_grads_equal_full_backprop_without_quant_and_ln_pruning() -> None:
    model = _bert()
    reference = copy.deepcopy(model)  # everything trainable: full backprop
    method = SlimFit(freeze_ratio=0.7, quantize_ffn_output=False, prune_frozen_layernorm=False)
    method.setup(model)
    x, y = _tokens()
    nn.functional.cross_entropy(model(input_ids=x).logits, y).backward()
    nn.functional.cross_entropy(reference(input_ids=x).logits, y).backward()
    ref = dict(reference.named_parameters())
    frozen = set(method.frozen_names())
    checked = 0
    for name, param in model.named_parameters():
        if name in frozen:
            assert param.grad is None, name
        else:
            torch.testing.assert_close(param.grad, ref[name].grad, rtol=1e-5, atol=1e-6)
            checked += 1
    assert checked >= len(method.units) - method.freeze_count


def test_frozen_linear_saves_no_input_and_matches_autograd() -> None:
    lin = nn.Linear(16, 8).requires_grad_(True)
    lin.weight.requires_grad_(False)
    x = torch.randn(3, 5, 16, requires_grad=True)
    meter = SavedTensorMeter(exclude=lin.parameters())
    with meter:
        out = FrozenLinearFunction.apply(x, lin.weight, lin.bias)
    assert meter.bytes == 0 and meter.count == 1  # the weight only
    g = torch.randn_like(out)
    gx, gb = torch.autograd.grad(out, (x, lin.bias), g)
    wx, wb = torch.autograd.grad(lin(x), (x, lin.bias), g)
    torch.testing.assert_close(gx, wx)
    torch.testing.assert_close(gb, wb)


def test_fixed_point_cache_is_int8_and_weight_grad_uses_it() -> None:
    x = torch.tensor([0.03, -0.5, 7.9, 9.0, -8.5, 1.0 / 16])
    q = quantize_fixed_point(x)
    assert q.dtype == torch.int8
    assert dequantize_fixed_point(q, torch.float32).tolist() == [0.0, -0.5, 7.875, 127 / 16, -8.0,
                                                                 1 / 16]  # fmt: skip
    lin = nn.Linear(12, 6)
    inp = torch.randn(2, 7, 12, requires_grad=True)
    meter = SavedTensorMeter(exclude=lin.parameters())
    with meter:
        out = QuantizedInputLinearFunction.apply(inp, lin.weight, lin.bias)
    assert meter.bytes == inp.numel() and meter.by_dtype == {"int8": inp.numel()}  # 1 byte each
    g = torch.randn_like(out)
    gx, gw = torch.autograd.grad(out, (inp, lin.weight), g)
    xq = dequantize_fixed_point(quantize_fixed_point(inp.detach()), torch.float32)
    want_w = g.reshape(-1, 6).T @ xq.reshape(-1, 12)
    torch.testing.assert_close(gw, want_w)
    torch.testing.assert_close(gx, g @ lin.weight)
    exact = g.reshape(-1, 6).T @ inp.detach().reshape(-1, 12)
    bound = g.reshape(-1, 6).abs().sum(0)[:, None] * (1 / 32)  # |x - xq| <= 2^-5 in range
    assert ((gw - exact).abs() <= bound + 1e-6).all()


def _ln_case(keep: float) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 5, 32, generator=gen, requires_grad=True)
    w = torch.rand(32, generator=gen) + 0.5
    b = torch.randn(32, generator=gen, requires_grad=True)
    g = torch.randn(6, 5, 32, generator=gen)
    out = FrozenLayerNormFunction.apply(x, w, b, 1e-5, keep)
    gx, gb = torch.autograd.grad(out, (x, b), g)
    x2 = x.detach().clone().requires_grad_(True)
    b2 = b.detach().clone().requires_grad_(True)
    ref = nn.functional.layer_norm(x2, (32,), w, b2, 1e-5)
    wx, wb = torch.autograd.grad(ref, (x2, b2), g)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    return x.detach(), w, g, gx, gb, wx, wb


def test_frozen_layernorm_exact_when_keeping_everything() -> None:
    _, _, _, gx, gb, wx, wb = _ln_case(1.0)
    torch.testing.assert_close(gx, wx, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gb, wb)


def test_frozen_layernorm_top10_error_is_bounded() -> None:
    x, w, g, gx, gb, wx, wb = _ln_case(0.1)
    torch.testing.assert_close(gb, wb)  # the bias gradient needs no activation
    n = x.shape[-1]
    std = (x.var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt()
    y = (x - x.mean(-1, keepdim=True)) / std
    flat = y.reshape(-1)
    keep = flat.abs().topk(int(flat.numel() * 0.1)).indices
    y_hat = torch.zeros_like(flat).scatter_(0, keep, flat[keep]).reshape(y.shape)
    e = y - y_hat
    a = g * w
    bound = (
        e.abs() * (a * y).sum(-1, keepdim=True).abs()
        + y_hat.abs() * a.norm(dim=-1, keepdim=True) * e.norm(dim=-1, keepdim=True)
    ) / (n * std)
    err = (gx - wx).abs()
    assert (err <= bound + 1e-5).all()
    assert err.max() > 1e-4  # it is an approximation (a fake "exact" path would not be)


def test_frozen_layernorm_cache_size() -> None:
    ln = nn.LayerNorm(32)
    ln.weight.requires_grad_(False)
    patch_activations(ln)
    x = torch.randn(6, 5, 32, requires_grad=True)
    meter = SavedTensorMeter(exclude=ln.parameters())
    with meter:
        ln(x)
    k = int(x.numel() * 0.1)
    assert meter.bytes == k * 4 + k * 4 + 30 * 4  # values, int32 positions, per-row std
    assert meter.by_dtype["int32"] == k * 4


def test_patch_targets_the_ffn_output_projections() -> None:
    assert ffn_output_projections(_bert()) == [
        "bert.encoder.layer.0.output.dense",
        "bert.encoder.layer.1.output.dense",
    ]
    assert ffn_output_projections(tiny_vit()) == [
        "vit.layers.0.mlp.fc2",
        "vit.layers.1.mlp.fc2",
    ]


def _step_bytes(model: nn.Module, run: object) -> int:
    meter = SavedTensorMeter(exclude=model.parameters())
    with meter:
        loss = run(model)  # type: ignore[operator]
    loss.backward()
    return meter.bytes


@pytest.mark.parametrize("family", ["bert", "vit"])
def test_saved_bytes_fall_and_each_mechanism_matters(family: str) -> None:
    if family == "bert":
        x, y = _tokens()

        def make() -> nn.Module:
            return _bert()

        def run(m: nn.Module) -> torch.Tensor:
            return nn.functional.cross_entropy(m(input_ids=x).logits, y)
    else:
        gen = torch.Generator().manual_seed(0)
        px, py = torch.rand(8, 1, 8, 8, generator=gen), torch.randint(0, 10, (8,), generator=gen)

        def make() -> nn.Module:
            return tiny_vit()

        def run(m: nn.Module) -> torch.Tensor:
            return nn.functional.cross_entropy(m(pixel_values=px).logits, py)

    full = _step_bytes(make(), run)
    sizes = {}
    for label, options in {
        "slimfit": {},
        "freeze-only": {"slim_activations": False},
        "no-ln-prune": {"prune_frozen_layernorm": False},
        "no-quant": {"quantize_ffn_output": False, "freeze_ratio": 0.0},
        "quant": {"freeze_ratio": 0.0},
    }.items():
        model = make()
        SlimFit(**{"freeze_ratio": 0.9, "seed": 1, **options}).setup(model)
        sizes[label] = _step_bytes(model, run)
    assert sizes["slimfit"] < sizes["freeze-only"] < full
    assert sizes["slimfit"] < sizes["no-ln-prune"]  # pruning frozen LayerNorm caches matters
    assert sizes["quant"] < sizes["no-quant"] == full  # the 8-bit cache matters (nothing frozen)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_peak_memory_falls_with_slimfit() -> None:
    from sparsecore.evaluation import peak_memory_bytes, reset_peak_memory

    x, y = (t.cuda() for t in _tokens())
    peaks = {}
    for label in ("full", "slimfit"):
        model = _bert().cuda()
        if label == "slimfit":
            SlimFit(freeze_ratio=0.9).setup(model)
        torch.cuda.synchronize()
        reset_peak_memory("cuda")
        base = torch.cuda.memory_allocated()
        nn.functional.cross_entropy(model(input_ids=x).logits, y).backward()
        torch.cuda.synchronize()
        peaks[label] = peak_memory_bytes("cuda") - base
    assert peaks["slimfit"] < peaks["full"]

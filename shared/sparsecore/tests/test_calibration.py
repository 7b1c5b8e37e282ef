"""Layer-by-layer calibration: statistics, sequential inputs, devices."""

from __future__ import annotations

import pytest
import torch

from sparsecore import Wanda
from sparsecore.bench import tiny_gpt2, tiny_llama
from sparsecore.calibration import (
    StatisticsHooks,
    calibrate_decoder,
    calibrate_modules,
    decoder_layers,
)
from sparsecore.testing import tiny_mlp


def _llama():
    return tiny_llama(seed=0, vocab_size=64, hidden_size=32, intermediate_size=64)


def _ids(seed=0):
    return torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(seed))


def test_statistics_equal_direct_sums():
    layer = torch.nn.Linear(6, 3)
    x = torch.randn(4, 5, 6)
    with StatisticsHooks({"l": layer}, hessian=True) as hooks:
        layer(x[:2])
        layer(x[2:])
    stat, flat = hooks.stats["l"], x.reshape(-1, 6)
    assert stat.tokens == 20
    assert torch.allclose(stat.sq_sum, (flat.double() ** 2).sum(0))
    assert torch.allclose(stat.gram, flat.T @ flat, atol=1e-5)
    assert torch.allclose(stat.input_norms, flat.double().norm(dim=0))


def test_layer_i_sees_outputs_of_pruned_layer_i_minus_1():
    model = _llama()
    dense = {n: p.clone() for n, p in model.state_dict().items()}
    batches = [_ids(0), _ids(1)]
    seen = {}

    def prune(index, stats):
        seen[index] = {n: s.gram.clone() for n, s in stats.items()}
        for name in stats:  # prune this layer before the next one is calibrated
            weight = model.get_submodule(name).weight
            weight.data.mul_(weight.abs() > weight.abs().median())

    calibrate_decoder(model, batches, prune, hessian=True)
    assert sorted(seen) == [0, 1] and len(seen[1]) == 7
    name = "model.layers.1.self_attn.q_proj"
    # What layer 1 really receives from the pruned model: recorded by a hook on the final model.
    with StatisticsHooks({name: model.get_submodule(name)}, hessian=True) as pruned_hooks:
        for ids in batches:
            model(input_ids=ids)
    assert torch.allclose(seen[1][name], pruned_hooks.stats[name].gram, rtol=1e-4, atol=1e-5)
    model.load_state_dict(dense)  # ... and not what the dense layer 0 would have given it
    with StatisticsHooks({name: model.get_submodule(name)}, hessian=True) as dense_hooks:
        for ids in batches:
            model(input_ids=ids)
    assert not torch.allclose(seen[1][name], dense_hooks.stats[name].gram, rtol=1e-3)


def test_gpt2_layout_and_layer_discovery():
    model = tiny_gpt2(vocab_size=64, n_embd=32, n_layer=2, n_head=2)
    assert decoder_layers(model) is model.transformer.h
    method = Wanda(sparsity=0.5).setup(model)
    method.calibrate([_ids()])
    assert abs(method.masks.sparsity() - 0.5) < 1e-9
    with pytest.raises(ValueError, match="model: no decoder layer stack"):
        decoder_layers(tiny_mlp())


def test_module_order_calibration_on_an_mlp():
    model = tiny_mlp()
    order = []
    visited = calibrate_modules(
        model,
        [(torch.randn(8, 16), None)],
        {"4": model[4], "0": model[0], "2": model[2]},
        lambda name, stat: order.append((name, stat.tokens)),
    )
    assert visited == ["0", "2", "4"] and order == [("0", 8), ("2", 8), ("4", 8)]
    with pytest.raises(ValueError, match="batches is empty"):
        calibrate_modules(model, [], {"0": model[0]}, lambda *a: None)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_calibration_matches_cpu():
    reference = Wanda(sparsity=0.5).setup(_llama())
    reference.calibrate([_ids()])
    method = Wanda(sparsity=0.5).setup(_llama().cuda())
    method.calibrate([_ids().cuda()])
    for name, mask in method.masks.masks().items():
        assert mask.is_cuda
        agree = (mask.cpu() == reference.masks.mask(name)).float().mean()
        assert agree > 0.99, name  # float rounding may flip near-ties


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_offloaded_layers_run_on_the_calibration_device():
    model = _llama()
    method = Wanda(sparsity=0.5).setup(model)
    method.calibration_device = "cuda"
    method.calibrate([_ids()])
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert abs(method.masks.sparsity() - 0.5) < 1e-9

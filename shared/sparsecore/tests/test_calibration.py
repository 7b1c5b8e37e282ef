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


def test_shared_inputs_are_reduced_once_and_give_each_linear_its_own_sums(monkeypatch):
    """q/k/v (and gate/up) see the same tensor: its Gram matrix is computed once, yet every
    Linear's statistics equal the direct sums over its own recorded inputs."""
    import sparsecore.calibration as calibration

    model = _llama().eval()
    layer = decoder_layers(model)[0]
    linears = {n: m for n, m in layer.named_modules() if isinstance(m, torch.nn.Linear)}
    seen = {n: [] for n in linears}
    for n, m in linears.items():
        m.register_forward_hook(lambda _m, i, _o, n=n: seen[n].append(i[0].detach().clone()))
    calls = []
    real = calibration.batch_terms
    monkeypatch.setattr(calibration, "batch_terms", lambda x, h: calls.append(1) or real(x, h))
    with StatisticsHooks(linears, hessian=True) as hooks, torch.no_grad():
        model(_ids(0))
        model(_ids(1))
    assert len(linears) == 7 and len(calls) == 2 * 4  # 4 distinct inputs per forward
    for n, xs in seen.items():
        flat = torch.cat([x.reshape(-1, x.shape[-1]) for x in xs])
        assert torch.equal(
            hooks.stats[n].sq_sum,
            sum((x.reshape(-1, x.shape[-1]).double() ** 2).sum(0) for x in xs),
        )
        assert torch.allclose(hooks.stats[n].gram, flat.T @ flat, atol=1e-4)
        assert hooks.stats[n].tokens == flat.shape[0]


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

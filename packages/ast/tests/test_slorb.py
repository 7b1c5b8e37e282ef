"""SLoRB: the grouping matrix, the mean-of-pruned initialisation, the boosted forward."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from sparse_ast import AdaptiveSparseTrainer, slorb_init_weight, slorb_projection
from sparse_ast.layers import linear_view

from ._helpers import tiny_gpt2, tiny_llama, tokens

torch.set_num_threads(1)


def test_projection_sums_contiguous_groups() -> None:
    proj = slorb_projection(12, 4)
    assert proj.shape == (3, 12)
    x = torch.arange(12.0)
    assert torch.equal(proj @ x, torch.tensor([0 + 1 + 2 + 3, 4 + 5 + 6 + 7, 8 + 9 + 10 + 11.0]))
    with pytest.raises(ValueError, match="slorb_k"):
        slorb_projection(10, 4)


@pytest.mark.parametrize("init", ["mean", "sum"])
def test_init_is_mean_or_sum_of_pruned_weights(init: str) -> None:
    torch.manual_seed(0)
    w = torch.randn(3, 8)
    keep = torch.rand(3, 8) > 0.5
    got = slorb_init_weight(w, keep, 4, init)
    for i in range(3):
        for g in range(2):
            pruned = [float(w[i, j]) for j in range(4 * g, 4 * g + 4) if not keep[i, j]]
            want = sum(pruned) / (4 if init == "mean" else 1)
            assert got[i, g].item() == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize("build", [tiny_gpt2, tiny_llama])
def test_layer_output_is_masked_output_plus_low_rank_term(build) -> None:
    model = build(0)
    method = AdaptiveSparseTrainer(distill=False, slorb_k=8).setup(
        model, torch.optim.AdamW(model.parameters(), lr=1e-3)
    )
    for name in method.masks.names:
        module = model.get_submodule(name.rpartition(".")[0])
        conv = method._conv1d[name]
        w = linear_view(method.masks.param(name).detach(), conv)
        keep = linear_view(method.masks.mask(name), conv)
        s = module.slorb_weight.detach()
        p = module.slorb_proj.detach()
        assert torch.allclose(s, slorb_init_weight(w, keep, 8, "mean"))
        assert torch.equal(p, slorb_projection(w.shape[1], 8))
        x = torch.randn(2, 5, w.shape[1])
        masked = F.linear(x, w * keep, module.bias.detach() if module.bias is not None else None)
        expected = masked + (x @ p.t()) @ s.t()
        assert torch.allclose(module(x), expected, atol=1e-5), name


def test_constant_inputs_per_group_reproduce_the_dense_output() -> None:
    model = tiny_llama(1)
    dense = tiny_llama(1)
    AdaptiveSparseTrainer(distill=False, slorb_k=4).setup(model)
    layer, ref = model.model.layers[0].mlp.down_proj, dense.model.layers[0].mlp.down_proj
    groups = torch.randn(3, ref.in_features // 4)
    x = groups.repeat_interleave(4, dim=-1)  # constant inside each group of k = 4
    assert torch.allclose(layer(x), ref(x), atol=1e-5)
    y = torch.randn(3, ref.in_features)  # generic inputs: not equal (the mask matters)
    assert not torch.allclose(layer(y), ref(y), atol=1e-3)


def test_slorb_parameters_join_the_optimizer_and_train() -> None:
    model = tiny_gpt2(2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    groups_before = len(opt.param_groups)
    method = AdaptiveSparseTrainer(distill=False, slorb_k=8).setup(model, opt)
    params = method.slorb_parameters()
    assert len(params) == 2 * len(method.masks.names)
    assert len(opt.param_groups) == groups_before + 1
    held = {id(p) for p in opt.param_groups[-1]["params"]}
    assert all(id(p) in held for p in params)
    start = [p.detach().clone() for p in params]
    x = tokens(0)
    model(x, labels=x).loss.backward()
    opt.step()
    assert all(not torch.equal(a, p.detach()) for a, p in zip(start, params, strict=True))


def test_frozen_projection_is_not_trained() -> None:
    model = tiny_llama(3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    AdaptiveSparseTrainer(distill=False, slorb_trainable_projection=False).setup(model, opt)
    proj = model.model.layers[0].self_attn.q_proj.slorb_proj
    assert not proj.requires_grad
    assert all(id(proj) != id(p) for g in opt.param_groups for p in g["params"])


def test_bad_slorb_k_raises_before_touching_model() -> None:
    model = nn.Sequential(nn.Linear(12, 8))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="slorb_k"):
        AdaptiveSparseTrainer(slorb_k=8).setup(model)
    assert model.state_dict().keys() == before.keys()


def test_bench_config_fits_slorb_to_any_2_4_width():
    from sparsecore.bench import make_model, task_spec
    from sparsecore.bench.train import applicability, build_method

    model = make_model("mlp", task_spec("mnist1d"))  # 40 inputs: k = 16 does not divide them
    with pytest.raises(ValueError, match="slorb_k=16"):
        AdaptiveSparseTrainer().setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    assert AdaptiveSparseTrainer.bench_config(100, None)["slorb_k"] == 4
    assert applicability(AdaptiveSparseTrainer, "mnist1d", model) is None
    method = build_method(AdaptiveSparseTrainer, None, seed=0, total_steps=100)
    method.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    assert method.config.slorb_k == 4 and len(method.slorb_parameters()) > 0


def test_bench_config_keeps_the_official_loss_ratio_and_fits_the_decay_ramp():
    """`sparse bench` adds regularization() to the task loss with weight 1: AST's bench hook
    keeps the official 0.33 : 0.67 ratio and ramps the decay over a quarter of the run."""
    from sparsecore.bench.train import build_method

    for total in (400, 40_000):
        config = build_method(AdaptiveSparseTrainer, None, seed=0, total_steps=total).config
        assert config.increase_steps == total // 4  # official: 10k of 40k iterations
        assert config.decay_at(total // 4) == config.srste_decay  # full λ within the run
        assert config.alpha_kl / 1.0 == pytest.approx(0.67 / 0.33)  # task weight 1 in the loop
        assert config.alpha_squarehead == 0.0
    assert AdaptiveSparseTrainer().config.increase_steps == 10_000  # the user-facing default

"""N:M masks: exact counts, input-dimension grouping (Linear and HF Conv1D), the recompute
schedule, Wanda scores against a brute-force computation, default targets."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from sparse_ast import AdaptiveSparseTrainer, default_lm_targets
from sparse_ast.layers import linear_view

from ._helpers import brute_nm_keep, tiny_gpt2, tiny_llama, tokens

torch.set_num_threads(1)


def _lm_step(model: nn.Module, opt: torch.optim.Optimizer, method, seed: int) -> None:
    x = tokens(seed)
    loss = model(x, labels=x).loss + method.regularization()
    opt.zero_grad()
    loss.backward()
    opt.step()


@pytest.mark.parametrize("build", [tiny_gpt2, tiny_llama])
def test_every_row_and_group_keeps_exactly_two_of_the_top(build) -> None:
    model = build(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    method = AdaptiveSparseTrainer(mask_update_every=2, distill=False, slorb=False).setup(
        model, opt
    )
    for step in range(5):
        _lm_step(model, opt, method, step)
    method.recompute_masks()
    for name in method.masks.names:
        conv = method._conv1d[name]
        keep = linear_view(method.masks.mask(name), conv)  # (out, in)
        weight = linear_view(method.masks.param(name).detach(), conv)
        groups = keep.reshape(keep.shape[0], -1, 4)
        assert (groups.sum(-1) == 2).all(), name
        assert torch.equal(keep, brute_nm_keep(weight.abs())), name
    assert method.masks.sparsity() == 0.5


def test_conv1d_groups_run_along_the_input_dimension() -> None:
    model = tiny_gpt2(0)
    method = AdaptiveSparseTrainer(distill=False, slorb=False).setup(model)
    layer = model.transformer.h[0].mlp.c_fc  # Conv1D, weight (in=32, out=128)
    assert method._conv1d["transformer.h.0.mlp.c_fc.weight"]
    mask = method.masks.mask("transformer.h.0.mlp.c_fc.weight")
    assert mask.shape == (32, 128)
    assert (mask.t().reshape(128, 8, 4).sum(-1) == 2).all()
    x = torch.randn(3, 32)
    dense = layer.parametrizations.weight.original.detach()
    expected = F.linear(x, (dense * mask).t(), layer.bias)
    assert torch.allclose(layer(x), expected, atol=1e-6)


def test_masks_recomputed_exactly_every_k_steps_from_dense_weights() -> None:
    k = 3
    model = tiny_llama(1)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    method = AdaptiveSparseTrainer(
        mask_update_every=k, distill=False, slorb=False, srste_decay=0.0
    ).setup(model, opt)
    names = method.masks.names
    previous = {n: method.masks.mask(n).clone() for n in names}
    recomputed_at = []
    for step in range(1, 11):
        _lm_step(model, opt, method, step)
        assert method.step == step
        changed = any(not torch.equal(previous[n], method.masks.mask(n)) for n in names)
        fresh = {
            n: brute_nm_keep(method.masks.param(n).detach().abs()) for n in names
        }  # Llama: nn.Linear, (out, in)
        if (step - 1) % k == 0:
            recomputed_at.append(step)
            for n in names:
                assert torch.equal(method.masks.mask(n), fresh[n]), (step, n)
        else:
            assert not changed, step
        previous = {n: method.masks.mask(n).clone() for n in names}
    assert recomputed_at == [1, 4, 7, 10]
    assert [s for s, _ in method.flip_history] == recomputed_at
    assert sum(f for _, f in method.flip_history) > 0  # lr 0.5 moves weights enough to flip


def test_fixed_mask_when_updates_are_off() -> None:
    model = tiny_llama(2)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    method = AdaptiveSparseTrainer(mask_update_every=None, distill=False, slorb=False)
    method.setup(model, opt)
    start = {n: m.clone() for n, m in method.masks.masks().items()}
    for step in range(4):
        _lm_step(model, opt, method, step)
    assert all(torch.equal(start[n], method.masks.mask(n)) for n in start)
    assert method.flip_history == []


@pytest.mark.parametrize("build", [tiny_gpt2, tiny_llama])
def test_wanda_scores_equal_weight_times_input_norm(build) -> None:
    model = build(3)
    reference = build(3)  # an untouched dense copy to collect the inputs by brute force
    method = AdaptiveSparseTrainer(mask_metric="wanda", distill=False, slorb=True, slorb_k=8)
    method.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    batches = [tokens(50 + i) for i in range(3)]
    seen: dict[str, list[torch.Tensor]] = {}
    hooks = []
    for name in method.masks.names:
        module = reference.get_submodule(name.rpartition(".")[0])

        def hook(_m, inputs, _o, name=name):
            seen.setdefault(name, []).append(inputs[0].reshape(-1, inputs[0].shape[-1]))

        hooks.append(module.register_forward_hook(hook))
    with torch.no_grad():
        for batch in batches:
            reference(batch)
    for h in hooks:
        h.remove()
    method.calibrate(batches)
    scores = method.scores()
    for name in method.masks.names:
        x = torch.cat(seen[name]).double()
        norms = torch.sqrt((x**2).sum(0)).float()  # ||X_j||_2 over all calibration tokens
        conv = method._conv1d[name]
        weight = linear_view(method.masks.param(name).detach(), conv)
        expected = weight.abs() * norms[None, :]
        got = linear_view(scores[name], conv)
        assert torch.allclose(got, expected, rtol=1e-5, atol=1e-7), name
        keep = linear_view(method.masks.mask(name), conv)
        assert torch.equal(keep, brute_nm_keep(expected)), name


def test_wanda_without_calibration_raises_at_first_step() -> None:
    model = tiny_llama(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    method = AdaptiveSparseTrainer(mask_metric="wanda", distill=False, slorb=False)
    method.setup(model, opt)
    with pytest.raises(RuntimeError, match="calibrate"):
        _lm_step(model, opt, method, 0)


def test_default_targets_skip_the_lm_head() -> None:
    gpt2 = default_lm_targets(tiny_gpt2(0))
    assert "lm_head.weight" not in gpt2 and len(gpt2) == 8
    assert all(n.startswith("transformer.h.") for n in gpt2)
    llama = default_lm_targets(tiny_llama(0))
    assert "lm_head.weight" not in llama and len(llama) == 14
    mlp = default_lm_targets(nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4)))
    assert mlp == ["0.weight", "2.weight"]

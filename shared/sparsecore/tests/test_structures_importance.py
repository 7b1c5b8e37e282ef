"""Structured importance (magnitude, Taylor, Wanda-sp) against brute force; budgets; pruning."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("transformers")

from sparsecore.bench.models import tiny_gpt2, tiny_llama
from sparsecore.structures import describe, group_members, group_scores
from sparsecore.structures.importance import (
    budget_masks,
    collect_gradients,
    collect_input_norms,
    group_importance,
    group_parameter_counts,
    prune_structured,
)

KINDS = ("heads", "ffn", "hidden", "layers")


def _model(seed: int = 0):
    return tiny_llama(seed=seed, num_hidden_layers=2, intermediate_size=48).double()


def _batches(seed: int = 5, n: int = 3):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 1000, (2, 16), generator=g) for _ in range(n)]


def _flat(scores):
    return torch.cat(list(scores)) if isinstance(scores, list) else scores


def _brute(model, kind, element):
    """Score each group by gathering its slice elements one group at a time."""
    params = dict(describe(model).model.named_parameters(remove_duplicate=False))
    out = []
    for group in group_members(model, kind):
        total = torch.zeros((), dtype=torch.float64)
        for name, dim, idx in group.slices:
            p = params[name]
            part = p if not idx else p.index_select(dim, torch.tensor(idx))
            total = total + element(name, part, dim, idx)
        out.append(total)
    return torch.stack(out)


def test_magnitude_is_group_scores():
    model = _model()
    for kind in KINDS:
        assert torch.equal(_flat(group_importance(model, kind)), _flat(group_scores(model, kind)))


def test_collect_gradients_sums_batches_and_restores_grad():
    model = _model()
    batches = _batches()
    sentinel = torch.full_like(model.lm_head.weight, 7.0)
    model.lm_head.weight.grad = sentinel.clone()
    grads = collect_gradients(model, batches)
    assert torch.equal(model.lm_head.weight.grad, sentinel)
    model.zero_grad(set_to_none=True)
    total = 0
    for b in batches:
        total = total + model(input_ids=b, labels=b).loss
    total.backward()
    name = "model.layers.1.mlp.down_proj.weight"
    ref = dict(model.named_parameters())[name].grad.float()
    torch.testing.assert_close(grads[name], ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kind", KINDS)
def test_taylor_equals_brute_force(kind):
    model = _model()
    grads = collect_gradients(model, _batches())
    got = _flat(group_importance(model, kind, "taylor", gradients=grads))

    def element(name, part, dim, idx):
        g = grads[name].double()
        g = g if not idx else g.index_select(dim, torch.tensor(idx))
        return (part.detach() * g).abs().sum()

    torch.testing.assert_close(got, _brute(model, kind, element))
    vector = _flat(group_importance(model, kind, "taylor-vector", gradients=grads))

    def signed(name, part, dim, idx):
        g = grads[name].double()
        g = g if not idx else g.index_select(dim, torch.tensor(idx))
        return (part.detach() * g).sum()

    torch.testing.assert_close(vector, _brute(model, kind, signed).abs())
    assert bool((vector <= got + 1e-12).all())  # |Σ wg| ≤ Σ |wg|


def test_taylor_vector_predicts_the_loss_change_of_a_small_group():
    """First order: zeroing a group changes the loss by about -Σ w·g (float64, tiny weights)."""
    model = _model()
    for p in model.parameters():
        p.data.mul_(0.3)
    batch = _batches(n=1)
    grads = collect_gradients(model, batch)
    group = group_members(model, "ffn")[3]
    params = dict(model.named_parameters())
    with torch.no_grad():
        base = float(model(input_ids=batch[0], labels=batch[0]).loss)
        predicted = 0.0
        for name, dim, idx in group.slices:
            index = torch.tensor(idx)
            predicted -= float(
                (
                    params[name].index_select(dim, index)
                    * grads[name].double().index_select(dim, index)
                ).sum()
            )
            params[name].index_fill_(dim, index, 0.0)
        changed = float(model(input_ids=batch[0], labels=batch[0]).loss) - base
    assert abs(changed - predicted) < 0.2 * abs(predicted) + 1e-6


def _down_proj_inputs(model, batches, module):
    seen = []
    handle = module.register_forward_hook(
        lambda _m, a, _o: seen.append(a[0].reshape(-1, a[0].shape[-1]))
    )
    model.eval()
    with torch.no_grad():
        for b in batches:
            model(input_ids=b)
    handle.remove()
    return torch.cat(seen).double()


def test_wanda_ffn_and_heads_equal_brute_force():
    model = _model()
    batches = _batches()
    norms = collect_input_norms(model, batches)
    ffn = group_importance(model, "ffn", "wanda", input_norms=norms)
    heads = group_importance(model, "heads", "wanda", input_norms=norms)
    for i, layer in enumerate(model.model.layers):
        x = _down_proj_inputs(model, batches, layer.mlp.down_proj)
        ref = layer.mlp.down_proj.weight.detach().double().abs().sum(0) * x.norm(dim=0)
        torch.testing.assert_close(ffn[i], ref)
        xo = _down_proj_inputs(model, batches, layer.self_attn.o_proj)
        per_col = layer.self_attn.o_proj.weight.detach().double().abs().sum(0) * xo.norm(dim=0)
        lay = describe(model).layers[i]
        width = lay.group_size * lay.head_dim
        torch.testing.assert_close(heads[i], per_col.reshape(lay.kv_heads, width).sum(1))


def test_wanda_on_gpt2_conv1d_uses_input_rows():
    model = tiny_gpt2(seed=1).double()
    batches = _batches()
    norms = collect_input_norms(model, batches)
    ffn = group_importance(model, "ffn", "wanda", input_norms=norms)
    proj = model.transformer.h[0].mlp.c_proj  # Conv1D, weight stored (in, out)
    x = _down_proj_inputs(model, batches, proj)
    ref = proj.weight.detach().double().abs().sum(1) * x.norm(dim=0)
    torch.testing.assert_close(ffn[0], ref)


def test_parameter_counts_match_slice_sizes():
    model = _model()
    for kind in ("heads", "ffn"):
        counts = group_parameter_counts(model, kind)
        lay = describe(model).layers[0]
        d, h = lay.head_dim, describe(model).hidden
        if kind == "ffn":
            assert int(counts[0][0]) == 3 * h  # gate row, up row, down column
        else:
            assert int(counts[0][0]) == (2 * lay.group_size + 2) * d * h  # q, o and k, v


@pytest.mark.parametrize("fraction", [0.2, 0.45])
def test_budget_masks_hit_the_budget_with_uniform_counts(fraction):
    model = _model()
    scores = {k: group_importance(model, k) for k in ("heads", "ffn")}
    masks, report = budget_masks(model, scores, fraction)
    per_channel = sum(int(c[0]) for c in group_parameter_counts(model, "ffn"))
    assert abs(report["removed"] - report["target"]) <= per_channel // 2 + 1
    for kind in ("heads", "ffn"):
        removed = [int((~m).sum()) for m in masks[kind]]
        assert len(set(removed)) == 1  # the same count in every layer
        for m, s in zip(masks[kind], scores[kind], strict=True):
            if (~m).any() and m.any():  # every removed score ≤ every kept score
                assert float(s[~m].max()) <= float(s[m].min())
    assert report["heads_removed"][0] in (0, 1)  # 2 key/value groups, at least one kept
    heads_share = int(group_parameter_counts(model, "heads")[0][0]) * 2 * 2
    prunable = heads_share + per_channel * 48
    ratio = report["target"] / prunable
    expected = min(1, round(ratio * 2))
    if expected * heads_share // 2 > report["target"]:
        expected = min(1, int(ratio * 2))
    assert report["heads_removed"] == [expected, expected]


@pytest.mark.parametrize("criterion", ["magnitude", "taylor", "wanda"])
def test_prune_structured_shrinks_by_the_reported_count(criterion):
    model = _model().float()
    before = {n: p.clone() for n, p in model.state_dict().items()}
    smaller, report = prune_structured(model, criterion, 0.3, batches=_batches())
    layer_params = lambda m: sum(p.numel() for p in m.model.layers.parameters())  # noqa: E731
    assert layer_params(model) - layer_params(smaller) == report["removed"]
    assert all(torch.equal(before[n], p) for n, p in model.state_dict().items())  # not modified
    assert smaller.config.intermediate_size == 48 - report["ffn_removed"][0]


def test_bad_input_is_refused_before_the_model_is_touched():
    model = _model()
    with pytest.raises(ValueError, match="criterion"):
        group_importance(model, "ffn", "fisher")
    with pytest.raises(ValueError, match="gradients"):
        group_importance(model, "ffn", "taylor")
    with pytest.raises(ValueError, match="input_norms"):
        group_importance(model, "ffn", "wanda")
    with pytest.raises(ValueError, match="remove_fraction"):
        prune_structured(model, "magnitude", 1.0)
    with pytest.raises(ValueError, match="batches"):
        prune_structured(model, "wanda", 0.3)
    with pytest.raises(ValueError, match="kinds"):
        prune_structured(model, "magnitude", 0.3, kinds=("hidden",))
    with pytest.raises(ValueError, match="batches"):
        collect_gradients(model, [])

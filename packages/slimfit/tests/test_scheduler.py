"""SlimFit's scheduler: exact frozen counts, lowest scores frozen, scores as defined, frozen
weights untouched, units as the official code selects them, validation before the model."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sparse_slimfit import SlimFit, freeze_count, frozen_units, relative_change, slimfit_units
from sparse_slimfit.bench import tiny_vit
from sparsecore.bench import tiny_bert

torch.set_num_threads(1)


def _bert(seed: int = 0) -> nn.Module:
    return tiny_bert(
        num_labels=4, seed=seed, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )


def _batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(500 + step)
    return torch.randint(1, 1000, (4, 10), generator=gen), torch.randint(0, 4, (4,), generator=gen)


def test_units_are_matrices_and_layernorm_weights() -> None:
    model = _bert()
    units = slimfit_units(model)
    params = dict(model.named_parameters())
    assert all(params[n].dim() > 1 or n.endswith("LayerNorm.weight") for n in units)
    want = [n for n, p in params.items() if p.dim() > 1 or n.endswith("LayerNorm.weight")]
    assert units == want  # the official regex selection, in parameter order
    assert not any(n.endswith(".bias") for n in units)
    vit_units = slimfit_units(tiny_vit(), ("classifier.weight",))
    assert "vit.layers.0.layernorm_before.weight" in vit_units
    assert "vit.layers.1.layernorm_after.weight" in vit_units
    assert "classifier.weight" not in vit_units


@pytest.mark.parametrize(("rho", "t", "want"), [(0.29, 100, 29), (0.9, 22, 19), (0.0, 5, 0)])
def test_freeze_count_is_floor(rho: float, t: int, want: int) -> None:
    assert freeze_count(rho, t) == want


def test_relative_change_matches_definition() -> None:
    prev = torch.tensor([[1.0, -2.0], [0.0, 4.0]])
    cur = torch.tensor([[1.5, -1.0], [3.0, 4.0]])
    assert relative_change(prev, cur) == pytest.approx((0.5 + 0.5 + 0.0 + 0.0) / 4)


def test_exact_lowest_scores_frozen_every_step_and_scores_refreshed() -> None:
    model = _bert()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    method = SlimFit(freeze_ratio=0.8, seed=3).setup(model, opt)
    params = dict(model.named_parameters())
    t = len(method.units)
    assert method.freeze_count == int(0.8 * t)
    for step in range(6):
        scores = method.scores.clone()
        frozen = [n for n in method.units if not params[n].requires_grad]
        assert len(frozen) == method.freeze_count
        idx = torch.tensor([method.units.index(n) for n in frozen])
        active = torch.tensor([i for i in range(t) if i not in idx.tolist()])
        assert scores[idx].max() <= scores[active].min()  # the lowest-score units
        before = {n: params[n].detach().clone() for n in method.units}
        x, y = _batch(step)
        loss = nn.functional.cross_entropy(model(input_ids=x).logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        for i, name in enumerate(method.units):
            if name in frozen:
                assert torch.equal(params[name], before[name]), name  # untouched
                assert method.scores[i] == scores[i]  # stale score kept
            else:
                want = relative_change(before[name], params[name])
                assert method.scores[i].item() == pytest.approx(want, rel=1e-5), name


def test_frozen_units_stay_unchanged_with_zeroed_not_none_grads() -> None:
    """Even with ``zero_grad(set_to_none=False)`` and momentum/decay, frozen weights do not move."""
    model = _bert()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    method = SlimFit(freeze_ratio=0.5).setup(model, opt)
    params = dict(model.named_parameters())
    for step in range(3):
        frozen = method.frozen_names()
        before = {n: params[n].detach().clone() for n in frozen}
        x, y = _batch(step)
        opt.zero_grad(set_to_none=False)
        nn.functional.cross_entropy(model(input_ids=x).logits, y).backward()
        opt.step()
        assert all(torch.equal(params[n], before[n]) for n in frozen)


def test_frozen_units_helper_tie_break() -> None:
    mask = frozen_units(torch.tensor([3.0, 1.0, 1.0, 0.5]), 2)
    assert mask.tolist() == [False, True, False, True]


def test_finalize_restores_trainability_and_modules() -> None:
    model = _bert()
    method = SlimFit().setup(model, torch.optim.AdamW(model.parameters()))
    assert any(not p.requires_grad for p in model.parameters())
    assert any("forward" in m.__dict__ for m in model.modules())
    method.finalize()
    assert all(p.requires_grad for p in model.parameters())
    assert not any("forward" in m.__dict__ for m in model.modules())


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"freeze_ratio": 1.0}, "freeze_ratio"),
        ({"freeze_ratio": "0.9"}, "freeze_ratio"),
        ({"sparsity": 0.5}, "sparsity"),
        ({"layernorm_keep": 0.0}, "layernorm_keep"),
        ({"score_init_scale": float("inf")}, "score_init_scale"),
        ({"quantize_ffn_output": 1}, "quantize_ffn_output"),
        ({"train_always": 3}, "train_always"),
    ],
)
def test_bad_options_name_the_field(options: dict, field: str) -> None:
    with pytest.raises((TypeError, ValueError), match=field):
        SlimFit(**options)


def test_setup_twice_on_one_model_raises_before_touching_it() -> None:
    model = _bert()
    SlimFit().setup(model)
    state = copy.deepcopy(model.state_dict())
    grads = [p.requires_grad for p in model.parameters()]
    with pytest.raises(ValueError, match="instance forward"):
        SlimFit().setup(model)
    assert [p.requires_grad for p in model.parameters()] == grads
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items() if k in state)


def test_no_trainable_unit_raises() -> None:
    model = _bert().requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable unit"):
        SlimFit().setup(model)

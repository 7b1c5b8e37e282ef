"""ReBalance's online hooks: where and when it injects, the coefficient it uses, exact no-ops."""

from __future__ import annotations

import pytest
import torch

from sparse_rebalance import END_THINK, STEP, THINK, ControlSurface, ReBalance

from ._helpers import make_calibration, make_lm

PROMPT = [81, 58, 49, 50, THINK]  # "Q:12<think>"
STEPS = [49, 50, 43, 51, STEP, 52, 53, 54, STEP, 55, STEP, END_THINK, 65, STEP, 66]


@torch.no_grad()
def decode(model, tokens=STEPS, prompt=PROMPT):
    """Prefill ``prompt`` then feed ``tokens`` one by one with the KV cache; logits per step."""
    out = model(input_ids=torch.tensor([prompt]), use_cache=True)
    logits, cache = [out.logits[:, -1]], out.past_key_values
    for t in tokens:
        out = model(input_ids=torch.tensor([[t]]), past_key_values=cache, use_cache=True)
        logits.append(out.logits[:, -1])
        cache = out.past_key_values
    return torch.cat(logits)


def layer_inputs(model, fn):
    seen = {i: [] for i in range(len(model.model.layers))}
    handles = [
        layer.register_forward_pre_hook(
            lambda _m, a, k, i=i: seen[i].append((a[0] if a else k["hidden_states"]).clone()),
            with_kwargs=True,
        )
        for i, layer in enumerate(model.model.layers)
    ]
    try:
        fn()
    finally:
        for h in handles:
            h.remove()
    return seen


def test_zero_coefficient_leaves_logits_bit_identical(lm, calibration):
    plain = decode(lm)
    steer = ReBalance(calibration, dynamic=False, initial_coef=0.0)
    with steer.attach(lm):
        steered = decode(lm)
    assert torch.equal(plain, steered)
    assert steer.alphas == [0.0, 0.0, 0.0]  # three separators inside <think>


def test_injection_only_at_the_chosen_layer_and_boundary_inside_think(lm, calibration):
    plain = layer_inputs(lm, lambda: decode(lm))
    steer = ReBalance(calibration, dynamic=False, initial_coef=0.7)
    with steer.attach(lm):
        steered = layer_inputs(lm, lambda: decode(lm))
    boundary_calls = [i + 1 for i, t in enumerate(STEPS) if t == STEP][:3]  # inside think
    for call in range(len(plain[0])):
        assert torch.equal(plain[0][call], steered[0][call])  # below the chosen layer
        diff = steered[1][call] - plain[1][call]
        if call in boundary_calls:
            torch.testing.assert_close(diff[0, -1], 0.7 * calibration.vector)
        else:
            assert torch.equal(diff, torch.zeros_like(diff))
    assert len(steer.alphas) == 3  # the separator after </think> is not steered


def test_dynamic_coefficient_is_F_of_step_confidence(lm, calibration):
    plain = decode(lm)
    maxprob = torch.softmax(plain, -1).max(-1).values  # distribution that drew token i is plain[i]
    steer = ReBalance(calibration, initial_coef=0.5)
    with steer.attach(lm):
        decode(lm)
    surface = ControlSurface(0.3, 0.6, 1e-3, 1e-2)
    # step 1 = tokens 0..3 (drawn from plain[0..3]); step 2 = tokens 5..7; step 3 = token 9
    c1 = maxprob[0:4].mean()
    c2 = maxprob[5:8].mean()
    c3 = maxprob[9:10].mean()
    expected = [
        surface(c1, 0.0),
        surface(c2, (c2 - c1) ** 2 / 4),
        surface(c3, (c3 - c2) ** 2 / 4),
    ]
    assert steer.alphas == pytest.approx([float(e) for e in expected], abs=1e-6)


def test_prefill_starts_a_new_round(lm, calibration):
    steer = ReBalance(calibration, initial_coef=0.5)
    with steer.attach(lm):
        decode(lm)
        first = list(steer.alphas)
        decode(lm)
    assert steer.alphas[len(first) :] == pytest.approx(first, abs=1e-6)


def test_no_think_no_injection(lm, calibration):
    steer = ReBalance(calibration, dynamic=False, initial_coef=1.0)
    with steer.attach(lm):
        decode(lm, prompt=[81, 58, 49, 50])  # no <think> in the prompt
    assert steer.alphas == []


def test_final_layer_index_steers_the_final_norm_input(lm):
    cal = make_calibration(layer=3)
    plain = decode(lm)
    with ReBalance(cal, dynamic=False, initial_coef=1.0).attach(lm):
        steered = decode(lm)
    assert not torch.equal(plain, steered)


def test_validation_refuses_before_touching(lm):
    with pytest.raises(ValueError, match="calibration"):
        ReBalance().attach(lm)
    with pytest.raises(ValueError, match=r"calibration\.layer"):
        ReBalance(make_calibration(layer=9)).attach(lm)
    with pytest.raises(ValueError, match=r"calibration\.vector"):
        ReBalance(make_calibration(hidden=16)).attach(lm)
    with pytest.raises(TypeError, match="split_ids"):
        ReBalance(make_calibration(), split_ids=258)
    with pytest.raises(TypeError, match="calibration"):
        ReBalance(calibration={"layer": 1})
    assert not any(layer._forward_pre_hooks for layer in lm.model.layers)


def test_works_inside_generate_with_a_batch(calibration):
    model = make_lm(1)
    ids = torch.tensor([[81, 58, THINK], [81, 59, THINK]])
    steer = ReBalance(calibration, dynamic=False, initial_coef=0.0)
    torch.manual_seed(0)
    plain = model.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=259)
    with steer.attach(model):
        same = model.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=259)
    assert torch.equal(plain, same)

"""The baselines: a thinking budget is never exceeded; suppressed tokens never start a step."""

from __future__ import annotations

import torch

from sparse_rebalance import END_THINK, STEP, THINK, ReflectionSuppression, ThinkingBudget

from ._helpers import make_lm


def test_thinking_budget_forces_the_end_of_thinking():
    model = make_lm(3)
    ids = torch.tensor([[81, 58, THINK]])
    with ThinkingBudget(budget=5).attach(model):
        out = model.generate(ids, max_new_tokens=20, do_sample=False, pad_token_id=259)
    gen = out[0, 3:].tolist()
    assert gen[5] == END_THINK and END_THINK not in gen[:5]


def test_suppression_bans_the_first_token_of_a_step():
    model = make_lm(4)
    prompt = [81, 58, THINK, 49, STEP]
    with torch.no_grad():
        plain = model(input_ids=torch.tensor([prompt])).logits[0, -1]
    banned = int(plain.argmax())
    with ReflectionSuppression(banned_ids=(banned,)).attach(model), torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt])).logits[0, -1]
        outside = model(input_ids=torch.tensor([[81, 58, 49, STEP]])).logits[0, -1]
    assert logits[banned] == float("-inf")
    others = torch.arange(260) != banned
    assert torch.equal(logits[others], plain[others])
    assert torch.isfinite(outside).all()  # no <think>: untouched

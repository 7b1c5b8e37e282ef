"""sparsecore.rl: advantages, dynamic sampling, loss, log-probs, tasks, voting, one GRPO step."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from sparsecore.bench import tiny_llama
from sparsecore.rl import (
    CHAR_VOCAB,
    AdditionTask,
    GRPOConfig,
    ReversalTask,
    dynamic_sampling_mask,
    generate_rollouts,
    group_advantages,
    grpo_step,
    policy_loss,
    sft_warm_start,
    token_logprobs,
    warm_start_path,
    weighted_vote,
)

pytest.importorskip("transformers")


def _model():
    return tiny_llama(
        seed=1, vocab_size=CHAR_VOCAB.size, hidden_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, intermediate_size=64,
        max_position_embeddings=64,
    )  # fmt: skip


def test_group_advantages_formula_and_zero_sum_over_included():
    gen = torch.Generator().manual_seed(0)
    rewards = torch.randint(0, 2, (24,), generator=gen).float()
    groups = torch.arange(3).repeat_interleave(8)
    mask = torch.rand(24, generator=gen) < 0.6
    adv = group_advantages(rewards, groups, mask, eps=1e-6)
    assert (adv[~mask] == 0).all()
    for g in range(3):
        sel = (groups == g) & mask
        r = rewards[sel]
        if sel.any():
            ref = (r - r.mean()) / (r.std(unbiased=False) + 1e-6)
            assert torch.allclose(adv[sel], ref, atol=1e-5)
            assert abs(float(adv[sel].sum())) < 1e-4


def test_dynamic_sampling_drops_uniform_groups():
    rewards = torch.tensor([1.0, 1, 1, 0, 0, 0, 1, 0, 1, 0])
    groups = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 3, 3])
    mask = torch.tensor([True] * 8 + [True, False])
    keep = dynamic_sampling_mask(rewards, groups, mask)
    assert keep.tolist() == [False] * 6 + [True, True, False, False]


def test_policy_loss_on_policy_is_minus_mean_advantage_and_clip_higher():
    logp = torch.randn(4, 5, requires_grad=True)
    adv = torch.tensor([1.0, -1.0, 0.5, 2.0])
    mask = torch.ones(4, 5)
    mask[0, 3:] = 0
    loss = policy_loss(logp, logp.detach(), adv, mask)
    expected = -(adv[:, None] * mask).sum() / mask.sum()
    assert torch.allclose(loss, expected)
    # ratio 1.25 on a positive advantage: clipped at 1.2 (symmetric), not at 1.28 (clip-higher)
    old = torch.zeros(1, 1)
    new = torch.full((1, 1), float(torch.log(torch.tensor(1.25))), requires_grad=True)
    one = torch.ones(1, 1)
    sym = policy_loss(new, old, torch.ones(1), one, 0.2, 0.2)
    sym.backward()
    assert torch.allclose(sym, torch.tensor(-1.2)) and new.grad.abs().max() == 0
    new.grad = None
    high = policy_loss(new, old, torch.ones(1), one, 0.2, 0.28)
    high.backward()
    assert torch.allclose(high, torch.tensor(-1.25)) and new.grad.abs().max() > 0


def test_token_logprobs_match_unpadded_per_row():
    model = _model().eval()
    prompts = [[1, 5, 6], [1, 7, 8, 9, 4]]
    batch = generate_rollouts(
        model, prompts, 2, 5, 2, 0, generator=torch.Generator().manual_seed(0)
    )
    width = int(batch.lengths.max())
    with torch.no_grad():
        got = token_logprobs(model, batch.prompts, batch.prompt_mask,
                             batch.completions[:, :width], batch.lengths, batch_size=3)  # fmt: skip
        for r in range(4):
            p = prompts[r // 2]
            n = int(batch.lengths[r])
            ids = torch.tensor([p + batch.completions[r, :n].tolist()])
            logp = torch.log_softmax(model(input_ids=ids).logits[0], -1)
            ref = logp[len(p) - 1 : -1].gather(-1, ids[0, len(p) :, None]).squeeze(-1)
            assert torch.allclose(got[r, :n], ref, atol=1e-4)
            assert (got[r, n:] == 0).all()


def test_tasks_reward_is_exact_match():
    task = AdditionTask(3)
    (p,) = task.sample(1, torch.Generator().manual_seed(4))
    text = CHAR_VOCAB.decode(p.prompt[1:])
    a, b = text[:-1].split("+")
    assert p.answer == str(int(a) + int(b)) and len(a) == 3
    good = [*CHAR_VOCAB.encode(p.answer), CHAR_VOCAB.eos, 0]
    assert task.reward(p, good) == 1.0
    assert task.reward(p, CHAR_VOCAB.encode(p.answer)) == 0.0  # no EOS
    assert task.reward(p, [*CHAR_VOCAB.encode(p.answer + "1"), CHAR_VOCAB.eos]) == 0.0
    rev = ReversalTask(4, 3)
    (q,) = rev.sample(1, torch.Generator().manual_seed(0))
    assert q.answer == CHAR_VOCAB.decode(q.prompt[1:-1])[::-1]
    with pytest.raises(ValueError, match="digits"):
        AdditionTask(7)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        CHAR_VOCAB.encode("A")


def test_weighted_vote_equal_weights_is_majority():
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        answers = [str(x) for x in torch.randint(0, 4, (7,), generator=gen).tolist()]
        counts = Counter(answers)
        top = max(counts.values())
        first = next(a for a in answers if counts[a] == top)
        assert weighted_vote(answers) == first == weighted_vote(answers, [0.3] * 7)
    assert weighted_vote(["a", "b", "b"], [5.0, 1.0, 1.0]) == "a"
    assert weighted_vote([None, None]) is None
    with pytest.raises(ValueError, match="weights"):
        weighted_vote(["a"], [1.0, 2.0])


def test_grpo_step_updates_and_times_phases():
    task = AdditionTask(1)
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    before = [p.detach().clone() for p in model.parameters()]
    problems = task.sample(4, torch.Generator().manual_seed(0))
    cfg = GRPOConfig(num_samples=4, max_new_tokens=4, temperature=1.0)
    result = grpo_step(model, opt, task, problems, cfg, torch.Generator().manual_seed(0),
                       detect=lambda i: list(range(0, 16, 2)), detect_step=1)  # fmt: skip
    assert set(result.seconds) == {"generation", "logprob", "update"}
    assert int(result.used.sum()) == 8 and result.tokens_generated == result.batch.tokens_generated
    assert result.tokens_trained == int(result.batch.lengths[result.used].sum())
    if (result.advantages != 0).any():
        assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    with pytest.raises(ValueError, match="eps_low"):
        GRPOConfig(eps_low=1.0)
    with pytest.raises(TypeError, match="dynamic_sampling"):
        GRPOConfig(dynamic_sampling=1)


def test_warm_start_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSE_CACHE_DIR", str(tmp_path))
    task = AdditionTask(1)
    model = sft_warm_start(task, size="nano", steps=3, batch=4)
    path = warm_start_path(task, size="nano", steps=3, batch=4)
    meta = json.loads((path / "sparse_meta.json").read_text())
    assert meta["steps"] == 3 and 0.0 <= meta["greedy_accuracy_256"] <= 1.0
    again = sft_warm_start(task, size="nano", steps=3, batch=4)
    for a, b in zip(model.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="size"):
        sft_warm_start(task, size="huge")


def test_grpo_step_dynamic_sampling_drops_uniform_groups():
    task = AdditionTask(1)
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    problems = task.sample(6, torch.Generator().manual_seed(1))
    cfg = GRPOConfig(num_samples=4, max_new_tokens=4, dynamic_sampling=True)
    result = grpo_step(model, opt, task, problems, cfg, torch.Generator().manual_seed(0))
    for g in range(6):
        sel = result.batch.groups == g
        uniform = result.rewards[sel].min() == result.rewards[sel].max()
        assert bool(result.used[sel].any()) == (not uniform)
    assert result.tokens_trained == int(result.batch.lengths[result.used].sum())

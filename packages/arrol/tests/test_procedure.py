"""ARRoL on a tiny Llama: exact survivor counts, no tokens after pruning, head and calibration."""

from __future__ import annotations

import pytest
import torch

from sparse_arrol import (
    ARRoL,
    BucketCalibrator,
    QualityHead,
    RandomRolloutPruning,
    vote_accuracy,
)
from sparsecore.rl import GRPOConfig, ReversalTask, generate_rollouts, weighted_vote

from ._helpers import HIDDEN

TASK = ReversalTask(6, 4)
N, L = 8, 2


def _problems(n=4, seed=0):
    return TASK.sample(n, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("keep_ratio", [0.5, 0.25, 0.4])
@pytest.mark.parametrize("cls", [ARRoL, RandomRolloutPruning])
def test_exact_survivors_and_no_tokens_after_detect(lm, cls, keep_ratio):
    pruner = cls(keep_ratio=keep_ratio, detect_step=L, seed=1).attach(lm)
    rows_per_forward: list[int] = []
    handle = lm.register_forward_pre_hook(
        lambda m, a, k: rows_per_forward.append(k["input_ids"].shape[0]), with_kwargs=True
    )
    cfg = GRPOConfig(num_samples=N, max_new_tokens=TASK.max_answer_tokens + 1)
    opt = torch.optim.SGD(lm.parameters(), lr=0.0)
    result = pruner.step(opt, TASK, _problems(), cfg, torch.Generator().manual_seed(0))
    handle.remove()
    k = int(keep_ratio * N + 0.5)
    batch = result.batch
    assert torch.bincount(batch.groups[batch.survivors]).tolist() == [k] * 4
    pruned = ~batch.survivors
    assert (batch.lengths[pruned] <= L).all()
    assert (batch.completions[pruned][:, L:] == TASK.vocab.pad).all()
    # generation forwards after the detection step carry survivors only
    gen_forwards = rows_per_forward[: 1 + batch.lengths.max()]
    assert gen_forwards[0] == 4 * N and max(gen_forwards[L + 1 :]) <= 4 * k
    assert batch.tokens_generated == int(batch.lengths.sum())
    assert batch.tokens_generated <= 4 * N * L + 4 * k * (cfg.max_new_tokens - L)
    # advantages: zero outside the survivors, zero-sum within each group's survivors
    assert (result.advantages[pruned] == 0).all()
    for g in range(4):
        sel = (batch.groups == g) & batch.survivors
        assert abs(float(result.advantages[sel].sum())) < 1e-4
    # the log-prob/update passes saw the survivors only
    assert result.tokens_trained == int(batch.lengths[batch.survivors].sum())
    pruner.detach()


def test_pruning_saves_tokens_against_full_generation(lm):
    prompts = [p.prompt for p in _problems(8)]
    kw = dict(generator=torch.Generator().manual_seed(0), temperature=1.0)
    full = generate_rollouts(lm, prompts, N, 7, 2, 0, **kw)
    arrol = ARRoL(detect_step=L).attach(lm)
    kw["generator"] = torch.Generator().manual_seed(0)
    cut = generate_rollouts(lm, prompts, N, 7, 2, 0, detect_step=L, detect=arrol.detect, **kw)
    assert cut.tokens_generated < full.tokens_generated
    assert cut.row_forwards < full.row_forwards
    arrol.detach()


def test_head_learns_and_calibration_counts(lm):
    arrol = ARRoL(detect_step=L, head_updates=20, head_lr=1e-2, seed=0).attach(lm)
    gen = torch.Generator().manual_seed(0)
    batch = generate_rollouts(lm, [p.prompt for p in _problems(8)], N, 4, 2, 0, generator=gen,
                              detect_step=L, detect=arrol.detect)  # fmt: skip
    # a learnable label: the sign of one hidden coordinate
    labels = (batch.detect_hidden[:, 0] > batch.detect_hidden[:, 0].median()).float()
    for _ in range(5):
        arrol.observe(batch, labels)
    assert arrol.history[-1]["bce"] < arrol.history[0]["bce"]
    assert abs(float(arrol.calibrator.counts.sum()) - sum(
        int(batch.survivors.sum()) * 0.95**i for i in range(5))) < 1e-6  # fmt: skip
    arrol.detach()


def test_calibrator_is_the_bucketed_posterior():
    cal = BucketCalibrator(bins=4, prior=2.0, decay=1.0)
    cal.update(torch.tensor([0.1, 0.1, 0.1, 0.9]), torch.tensor([1.0, 1.0, 0.0, 0.0]))
    out = cal(torch.tensor([0.1, 0.9, 0.6]))
    assert torch.allclose(out, torch.tensor([(2 + 0.2) / 5, (0 + 1.8) / 3, 0.6]))
    assert torch.allclose(cal.rates()[[0, 3]].float(), torch.tensor([2 / 3, 0.0]))
    with pytest.raises(ValueError, match="bins"):
        BucketCalibrator(bins=0)


def test_equal_weights_give_majority_vote(lm):
    problems = _problems(6)
    gen = torch.Generator().manual_seed(0)
    ones = vote_accuracy(lm, TASK, problems, 5, lambda i: torch.ones(i.hidden.shape[0]), L, 7, gen)
    gen = torch.Generator().manual_seed(0)
    none = vote_accuracy(lm, TASK, problems, 5, None, L, 7, gen)
    assert ones == none and ones["weighted"] == ones["maj"]
    assert weighted_vote(["x", "y", "y"], [1, 1, 1]) == "y"


def test_quality_head_is_seeded():
    a = QualityHead(HIDDEN, 8, torch.Generator().manual_seed(0))
    b = QualityHead(HIDDEN, 8, torch.Generator().manual_seed(0))
    h = torch.randn(3, HIDDEN)
    assert torch.equal(a(h), b(h)) and ((a(h) > 0) & (a(h) < 1)).all()


@pytest.mark.parametrize(
    ("field", "value"),
    [("keep_ratio", 0.0), ("keep_ratio", 1.5), ("target", -0.1), ("detect_step", 0),
     ("head_width", 0), ("head_lr", 0.0), ("bins", 0), ("calibration_decay", 0.0),
     ("head_updates", 0)],
)  # fmt: skip
def test_bad_options_are_refused_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        ARRoL(**{field: value})


def test_validate_refuses_a_non_lm_before_touching_it():
    model = torch.nn.Linear(3, 3)
    before = model.weight.detach().clone()
    with pytest.raises(ValueError, match="model"):
        ARRoL().attach(model)
    assert torch.equal(model.weight, before)


def test_detect_step_must_fit_the_rollout(lm):
    arrol = ARRoL(detect_step=9).attach(lm)
    opt = torch.optim.SGD(lm.parameters(), lr=0.0)
    with pytest.raises(ValueError, match="detect_step"):
        arrol.step(opt, TASK, _problems(), GRPOConfig(max_new_tokens=8), torch.Generator())
    arrol.detach()


def test_head_of_another_hidden_size_is_refused(lm):
    from ._helpers import make_lm as _m

    arrol = ARRoL()
    state = ARRoL().attach(lm).state_dict()
    state["state"]["hidden_size"] = HIDDEN * 2
    arrol.load_state_dict(state | {"state": {**state["state"], "head": {
        k: torch.zeros(v.shape[0], HIDDEN * 2) if k == "net.0.weight" else v
        for k, v in state["state"]["head"].items()}}})  # fmt: skip
    with pytest.raises(ValueError, match="hidden_size"):
        arrol.attach(_m())

"""The code-like corpus, its verifier and the minimal GRPO."""

from __future__ import annotations

import torch

from sparse_ra3 import EOS, FIRST_LATENT, make_programs, reward
from sparse_ra3.corpus import encode, program_value, prompt_ids
from sparse_ra3.latents import expert_ids
from sparse_ra3.rlvr import completions_of, grpo_step, sample_rollouts

from ._helpers import make_lm


def test_programs_compute_their_want_and_the_verifier_agrees():
    for p in make_programs(200, seed=0):
        assert program_value(p.lines) == p.want and 0 <= p.want <= 99
        body = [*encode("".join(p.body)), EOS]
        assert reward(p.want, body) == 1.0
        latent = [FIRST_LATENT, *body[:3], FIRST_LATENT + 2, *body[3:]]
        assert reward(p.want, latent) == 1.0  # latent tokens are stripped


def test_verifier_rejects_malformed_and_shapes_wrong_values():
    assert reward(5, encode("x=5\n")) == 0.0  # no ret
    assert reward(5, encode("x+=5\nret\n")) == 0.0  # no init
    assert reward(5, encode("y=5\nret\n")) == 0.0
    assert reward(5, encode("x=7\nret\n")) == 0.9
    assert reward(5, encode("x=7\nret\n"), shaped=False) == 0.0
    assert reward(5, encode("x=9\nx*=3\nx+=9\nret\n")) == 0.0  # 36 off by 31


def test_rollouts_stop_at_eos_and_grpo_skips_flat_groups():
    model = make_lm(0)
    batch, rewards = sample_rollouts(model, [7, 12], 3, 10, torch.Generator().manual_seed(0))
    comps = completions_of(batch)
    assert len(comps) == 6 and rewards.shape == (6,)
    assert all(len(c) <= 10 and (EOS not in c or c.index(EOS) == len(c) - 1) for c in comps)
    assert batch.prompts[0].tolist() == prompt_ids(7)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.clone() for p in model.parameters()]
    assert grpo_step(model, opt, batch, torch.ones(6)) == 0.0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    grpo_step(model, opt, batch, torch.tensor([1.0, 0, 0, 0, 1, 0]))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_pruned_rollouts_use_only_kept_tokens():
    from sparse_ra3 import ActionPruning

    model = make_lm(0)
    programs = make_programs(20, seed=4)
    pruning = ActionPruning.from_demonstrations(
        [expert_ids(p) for p in programs], FIRST_LATENT + 4, always_keep=(EOS,)
    ).attach(model)
    batch, _ = sample_rollouts(model, [7, 12], 4, 12, torch.Generator().manual_seed(1))
    pruning.detach()
    assert all(pruning.keep[t] for c in completions_of(batch) for t in c)

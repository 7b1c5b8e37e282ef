"""The EM loop: with one abstraction and no switching cost it is next-token SFT, exactly."""

from __future__ import annotations

import copy

import pytest
import torch

from sparse_ra3 import CONT, RA3Config, augment, boundaries, make_programs, ra3_step, sft_loss
from sparse_ra3.latents import expert_ids, sample_latents, score

from ._helpers import make_lm


def _opt(model):
    return torch.optim.AdamW(model.parameters(), lr=1e-2)


def test_one_abstraction_zero_cost_reduces_to_sft():
    programs = make_programs(12, seed=0)
    batches = [programs[:4], programs[4:8], programs[8:]]
    ra3 = make_lm(0, n_latents=1).train()
    sft = copy.deepcopy(ra3)
    e_opt, m_opt, s_opt = _opt(ra3), _opt(ra3), _opt(sft)
    cfg = RA3Config(n_latents=1, switch_cost=0.0, samples=3)
    g = torch.Generator().manual_seed(0)
    for batch in batches:
        info = ra3_step(ra3, e_opt, m_opt, batch, cfg, g)
        assert not info["e_stepped"]
        seqs = [augment(expert_ids(p), boundaries(p), [0] + [CONT] * len(p.body[1:]))[0]
                for p in batch]  # fmt: skip
        s_opt.zero_grad()
        loss = sft_loss(sft, seqs)
        loss.backward()
        s_opt.step()
        assert info["m_loss"] == pytest.approx(float(loss), abs=0)
    for (n, a), (_, b) in zip(ra3.named_parameters(), sft.named_parameters(), strict=True):
        assert torch.equal(a, b), n


def test_one_abstraction_e_step_gradient_is_exactly_zero():
    programs = make_programs(3, seed=1)
    model = make_lm(0, n_latents=1)
    xs = [expert_ids(p) for p in programs]
    bs = [boundaries(p) for p in programs]
    d = sample_latents(model, xs, bs, 1, torch.Generator())
    s = score(model, xs, bs, d, 1)
    s.log_q.sum().backward()
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())


def test_several_abstractions_take_an_e_step_that_moves_the_weights():
    programs = make_programs(4, seed=2)
    model = make_lm(0, n_latents=3).train()
    before = copy.deepcopy(model)
    e_opt = _opt(model)
    m_opt = torch.optim.SGD(model.parameters(), lr=0.0)  # isolate the E-step
    info = ra3_step(model, e_opt, m_opt, programs, RA3Config(3, 0.5, 4), torch.Generator())
    assert info["e_stepped"]
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), before.parameters(),
                                                         strict=True))  # fmt: skip
    assert 0 < info["latents_per_line"] <= 1


@pytest.mark.parametrize(
    ("options", "field"),
    [({"n_latents": 0}, "n_latents"), ({"switch_cost": -1.0}, "switch_cost"),
     ({"samples": 0}, "samples"), ({"temperature": 0.0}, "temperature"),
     ({"n_latents": "2"}, "n_latents")],
)  # fmt: skip
def test_bad_config_refused_naming_the_field(options, field):
    with pytest.raises((TypeError, ValueError), match=field):
        RA3Config(**options)

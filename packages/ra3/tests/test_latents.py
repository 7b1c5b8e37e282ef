"""The sequential ELBO: never above the exact log-likelihood (brute-force enumeration)."""

from __future__ import annotations

import itertools

import pytest
import torch

from sparse_ra3 import CONT, augment, boundaries, elbo, exact_log_marginal, patterns, posterior
from sparse_ra3.corpus import FIRST_LATENT, Program
from sparse_ra3.latents import expert_ids, sample_latents, score

from ._helpers import make_lm

PROGRAM = Program(14, ("x=4", "x+=3", "x*=2"))


def _valid(p, k):
    current = p[0]
    if current == CONT:
        return False
    for d in p[1:]:
        if d == current:
            return False
        current = d if d != CONT else current
    return True


@pytest.mark.parametrize(("t", "k"), [(1, 1), (3, 1), (3, 2), (4, 3)])
def test_patterns_match_brute_force(t, k):
    brute = [list(p) for p in itertools.product([CONT, *range(k)], repeat=t) if _valid(p, k)]
    assert sorted(patterns(t, k)) == sorted(brute)
    assert len(patterns(t, k)) == k * k ** (t - 1)


def test_augment_inserts_latents_before_lines():
    x, b = expert_ids(PROGRAM), boundaries(PROGRAM)
    assert [x[i] for i in b] == [ord("x")] * 3 + [ord("r")]
    ids, lat = augment(x, b, [1, CONT, 0, CONT])
    assert len(ids) == len(x) + 2 and sum(lat) == 2
    assert ids[b[0]] == FIRST_LATENT + 1 and ids[b[2] + 1] == FIRST_LATENT
    assert [t for t, is_lat in zip(ids, lat, strict=True) if not is_lat] == x


@pytest.mark.parametrize("k", [1, 2, 3])
def test_elbo_never_exceeds_the_exact_log_likelihood(k):
    x, b = expert_ids(PROGRAM), boundaries(PROGRAM)
    for seed in range(2):
        model = make_lm(seed, n_latents=3)
        exact = exact_log_marginal(model, x, b, k)
        for temperature in (0.3, 1.0, 3.0):
            assert elbo(model, x, b, k, temperature) <= exact + 1e-9
        pats, post = posterior(model, x, b, k)
        assert elbo(model, x, b, k, q=post) == pytest.approx(exact, abs=1e-6)
        joints = score(model, [x] * len(pats), [b] * len(pats), pats, k).joint.double()
        assert exact == pytest.approx(float(torch.logsumexp(joints, 0)), abs=1e-9)


def test_proposal_is_a_distribution_and_sampling_follows_it():
    model = make_lm(0, n_latents=3)
    x, b = expert_ids(PROGRAM), boundaries(PROGRAM)
    pats = patterns(len(b), 2)
    q = score(model, [x] * len(pats), [b] * len(pats), pats, 2).log_q.exp()
    assert float(q.sum()) == pytest.approx(1.0, abs=1e-5)
    draws = sample_latents(model, [x] * 400, [b] * 400, 2, torch.Generator().manual_seed(0))
    freq = torch.tensor([sum(d == p for d in draws) / 400 for p in pats])
    assert (freq - q.detach()).abs().max() < 0.08
    assert all(d in pats for d in draws)


def test_one_abstraction_has_one_pattern_and_no_switch():
    model = make_lm(0, n_latents=1)
    x, b = expert_ids(PROGRAM), boundaries(PROGRAM)
    assert patterns(len(b), 1) == [[0, CONT, CONT, CONT]]
    s = score(model, [x], [b], [[0, CONT, CONT, CONT]], 1)
    assert float(s.log_q) == 0.0 and float(s.switches) == 0.0
    assert exact_log_marginal(model, x, b, 1) == pytest.approx(float(s.joint), abs=1e-6)

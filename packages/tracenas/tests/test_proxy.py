"""Φ: scale invariance, Φ(full) = active sublayers, decrease with width, Wanda realisation."""

import itertools

import pytest
import torch

from sparse_tracenas import (
    Candidate,
    SearchSpace,
    causal_lm_loss,
    collect_base,
    correlation,
    group_masks_of,
    proxy_score,
)


def _setup(model, batches, **kw):
    space = SearchSpace.from_model(model, kw.pop("target", 0.25), kw.pop("window", 0.5),
                                   mlp_block=16, min_layers=2)  # fmt: skip
    return space, collect_base(model, batches)


def test_correlation_matches_brute_force_pearson():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(50, generator=gen), torch.randn(50, generator=gen)
    ref = torch.corrcoef(torch.stack([a, b]).double())[0, 1]
    assert correlation(a, b) == pytest.approx(float(ref), abs=1e-12)
    assert correlation(a, 3 * a + 1) == pytest.approx(1.0, abs=1e-12)
    assert correlation(a, torch.ones(50)) == 0.0


@pytest.mark.parametrize("kind", ["pearson", "cosine"])
def test_phi_invariant_to_scaling_the_loss(model, batches, kind):
    space, base = _setup(model, batches)
    c = Candidate((True, True, False, True), (1, 2, 2, 1), (2, 3, 4, 4))
    phi, _ = proxy_score(model, c, space, base, batches, kind)
    scaled_base = collect_base(model, batches, lambda lg, ids: 7.5 * causal_lm_loss(lg, ids))
    phi_scaled, _ = proxy_score(
        model, c, space, scaled_base, batches, kind, lambda lg, ids: 0.2 * causal_lm_loss(lg, ids)
    )
    assert phi_scaled == pytest.approx(phi, rel=1e-6)  # float32 gradients


def test_dot_variant_is_not_scale_invariant(model, batches):
    """The mechanism matters: without normalisation Φ scales with the loss (c² here)."""
    space, base = _setup(model, batches)
    c = Candidate((True,) * 4, (1, 2, 1, 2), (2, 2, 3, 4))
    dot, _ = proxy_score(model, c, space, base, batches, "dot")
    scaled = collect_base(model, batches, lambda lg, ids: 3 * causal_lm_loss(lg, ids))
    dot3, _ = proxy_score(
        model, c, space, scaled, batches, "dot", lambda lg, ids: 3 * causal_lm_loss(lg, ids)
    )
    assert dot3 == pytest.approx(9 * dot, rel=1e-6)


def test_phi_of_full_model_is_number_of_active_sublayers(model, batches):
    space, base = _setup(model, batches)
    full = space.full()
    phi, per = proxy_score(model, full, space, base, batches)
    assert phi == pytest.approx(8.0, abs=1e-9) and len(per) == 8
    dropped = Candidate((True, False, True, True), full.attn, full.mlp)
    phi3, per3 = proxy_score(model, dropped, space, base, batches)
    assert len(per3) == 6 and all(k[0] != 1 for k in per3)
    assert phi3 < 6.0 + 1e-9


def test_phi_decreases_on_average_as_width_is_removed(make_model, make_batches):
    model, batches = make_model(seed=3), make_batches(seed=5)
    space, base = _setup(model, batches)
    means = []
    for groups, blocks in ((2, 4), (2, 3), (1, 2), (1, 1)):
        c = Candidate((True,) * 4, (groups,) * 4, (blocks,) * 4)
        means.append(proxy_score(model, c, space, base, batches)[0])
    assert means[0] == pytest.approx(8.0, abs=1e-9)
    assert all(a > b for a, b in itertools.pairwise(means)), means


def test_wanda_keeps_exactly_the_top_score_groups_and_channels(model, batches):
    space, base = _setup(model, batches)
    c = Candidate((True, True, True, False), (1, 2, 1, 1), (1, 2, 3, 1))
    masks = group_masks_of(c, space, base)
    for i in range(3):
        top_g = set(torch.argsort(base.group_scores[i], descending=True)[: c.attn[i]].tolist())
        assert set(torch.nonzero(masks["heads"][i]).flatten().tolist()) == top_g
        n = c.mlp[i] * 16
        top_c = set(torch.argsort(base.channel_scores[i], descending=True)[:n].tolist())
        assert set(torch.nonzero(masks["ffn"][i]).flatten().tolist()) == top_c
    assert masks["layers"].tolist() == [True, True, True, False]
    assert bool(masks["heads"][3].all()) and bool(masks["ffn"][3].all())

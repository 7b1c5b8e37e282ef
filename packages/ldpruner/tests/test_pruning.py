"""LD-Pruner end to end on a random-init micro LDM, and its baselines, at a MAC budget."""

import pytest
import torch

from sparse_ldpruner import (
    Candidate,
    LDPruner,
    enumerate_operators,
    ld_prune,
    magnitude_prune,
    random_prune,
    score_candidates,
    unet_macs,
)


def test_identity_modification_scores_zero(ldm) -> None:
    attn = next(o for o in enumerate_operators(ldm.unet) if o.kind == "self_attn")
    labels, noise = torch.arange(4), ldm.initial_noise(4, 1)
    # 2 heads, keep_ratio 0.75 keeps round(1.5) = 2 heads: the model is unchanged
    scores = score_candidates(ldm, [Candidate(attn, "halve")], labels, noise, 2, keep_ratio=0.75)
    assert scores == {f"halve:{attn.name}": 0.0}
    removed = score_candidates(ldm, [Candidate(attn, "remove")], labels, noise, 2)
    assert next(iter(removed.values())) > 0.0


def test_ld_prune_meets_budget_deterministically_and_preserves_weights(ldm) -> None:
    before = {k: v.clone() for k, v in ldm.unet.state_dict().items()}
    first = ld_prune(ldm, 0.85, n_samples=4, steps=1, seed=3)
    second = ld_prune(ldm, 0.85, n_samples=4, steps=1, seed=3)
    assert first.chosen and first.chosen == second.chosen
    assert first.scores == second.scores
    assert len(first.scores) == 2 * len(enumerate_operators(ldm.unet))
    assert min(first.scores.values()) >= 0.0
    assert first.macs <= 0.85 * first.dense_macs == 0.85 * unet_macs(ldm)
    assert first.macs == unet_macs(first.ldm)
    ranked = sorted(first.scores, key=lambda k: (first.scores[k], k))
    assert first.chosen[0] == ranked[0]  # the lowest score is taken first
    assert all(torch.equal(before[k], v) for k, v in ldm.unet.state_dict().items())  # untouched
    touched = tuple(c.split(":", 1)[1] + "." for c in first.chosen)
    after = first.ldm.unet.state_dict()
    for key, value in before.items():
        if not key.startswith(touched):
            assert torch.equal(after[key], value), key
    out = first.ldm.generate(torch.arange(3), ldm.initial_noise(3, 0), steps=1)
    assert out.shape == (3, 1, 16, 16)


def test_baselines_meet_the_same_budget(ldm) -> None:
    target = 0.7 * unet_macs(ldm)
    rnd = random_prune(ldm, 0.7, seed=1)
    mag = magnitude_prune(ldm, 0.7, iters=5)
    assert rnd.macs <= target and mag.macs <= target
    assert rnd.chosen != random_prune(ldm, 0.7, seed=2).chosen
    assert mag.macs > 0.5 * target  # bisection lands near the budget, not at an empty model


def test_method_prune_ldm_uses_its_own_seed_stream(ldm) -> None:
    options = {"n_samples": 3, "steps": 1, "actions": ("remove",)}
    a = LDPruner(seed=0, **options).prune_ldm(ldm, 0.95)
    b = LDPruner(seed=0, **options).prune_ldm(ldm, 0.95)
    assert a.chosen == b.chosen and a.mac_ratio <= 0.95
    assert all(label.startswith("remove:") for label in a.scores)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"mac_ratio": 0.0}, "mac_ratio"), ({"mac_ratio": 0.5, "n_samples": 1}, "n_samples"),
     ({"mac_ratio": 0.5, "keep_ratio": 1.0}, "keep_ratio"),
     ({"mac_ratio": 0.5, "actions": ("drop",)}, "actions")],
)  # fmt: skip
def test_bad_options_raise_before_running(ldm, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        ld_prune(ldm, **kwargs)

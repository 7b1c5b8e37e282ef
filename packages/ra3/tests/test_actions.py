"""ActionPruning: -inf exactly on pruned tokens, kept logits untouched, options refused by name."""

from __future__ import annotations

import pytest
import torch

from sparse_ra3 import ActionPruning, token_counts
from sparse_ra3.corpus import EOS, FIRST_LATENT, make_programs
from sparse_ra3.latents import expert_ids
from sparsecore.testing import model_fingerprint

from ._helpers import make_counts, make_lm

VOCAB = FIRST_LATENT + 4


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_logits_are_minus_inf_exactly_on_pruned_tokens(lm):
    counts = make_counts()
    ids = torch.randint(0, 256, (3, 7), generator=torch.Generator().manual_seed(1))
    plain = _logits(lm, ids)
    before = model_fingerprint(lm)
    pruning = ActionPruning(counts).attach(lm)
    pruned = _logits(lm, ids)
    assert pruning.detach() is lm
    keep = counts >= 1
    assert torch.equal(pruning.keep, keep)
    assert torch.isneginf(pruned[..., ~keep]).all()
    assert torch.isfinite(pruned[..., keep]).all()
    assert torch.equal(pruned[..., keep], plain[..., keep])  # kept logits bit-identical
    assert torch.equal(_logits(lm, ids), plain)  # detached: the plain model
    after = model_fingerprint(lm)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before if torch.is_tensor(before[k]))
    assert not lm.get_output_embeddings()._forward_hooks


def test_sampling_stays_inside_the_kept_set(lm):
    pruning = ActionPruning(make_counts()).attach(lm)
    ids = torch.randint(0, 256, (4, 5), generator=torch.Generator().manual_seed(2))
    probs = torch.softmax(_logits(lm, ids)[:, -1], -1)
    draws = torch.multinomial(probs, 200, replacement=True, generator=pruning.generator)
    assert pruning.keep[draws].all()
    assert torch.allclose(probs[:, pruning.keep].sum(-1), torch.ones(4))
    pruning.detach()


def test_sigma_and_min_count_rules_and_always_keep():
    counts = torch.tensor([0, 1, 2, 5, 12, 0])  # total 20
    assert ActionPruning(counts).keep.tolist() == [False, True, True, True, True, False]
    assert ActionPruning(counts, min_count=3).keep.tolist() == [0, 0, 0, 1, 1, 0]
    # sigma 0.3: frequency >= 0.15, i.e. count >= 3
    assert ActionPruning(counts, sigma=0.3).keep.tolist() == [0, 0, 0, 1, 1, 0]
    assert ActionPruning(counts, sigma=0.3, always_keep=(0, 5)).keep.tolist() == [1, 0, 0, 1, 1, 1]


def test_from_demonstrations_counts_exactly():
    programs = make_programs(30, seed=3)
    seqs = [expert_ids(p) for p in programs]
    counts = token_counts(seqs, VOCAB)
    brute = torch.zeros(VOCAB, dtype=torch.long)
    for s in seqs:
        for t in s:
            brute[t] += 1
    assert torch.equal(counts, brute)
    pruning = ActionPruning.from_demonstrations(seqs, VOCAB, always_keep=(EOS,))
    assert set(pruning.kept_ids.tolist()) == {t for s in seqs for t in s}
    assert len(pruning.kept_ids) + len(pruning.pruned_ids) == VOCAB
    with pytest.raises(ValueError, match="sequences"):
        token_counts([[VOCAB]], VOCAB)


@pytest.mark.parametrize(
    ("options", "field"),
    [({"sigma": -0.1}, "sigma"), ({"sigma": 1.5}, "sigma"), ({"min_count": 0}, "min_count"),
     ({"always_keep": [1]}, "always_keep"), ({"always_keep": (-1,)}, "always_keep"),
     ({"always_keep": (10_000,)}, "always_keep"), ({"seed": 1.5}, "seed")],
)  # fmt: skip
def test_bad_options_are_refused_naming_the_field(options, field):
    with pytest.raises((TypeError, ValueError), match=field):
        ActionPruning(make_counts(), **options)


def test_bad_counts_refused():
    for bad in (torch.zeros(2, 3), torch.tensor([1.0, 2.0]), torch.tensor([-1, 2]), [1, 2]):
        with pytest.raises(ValueError, match="counts"):
            ActionPruning(bad)


def test_validate_refuses_before_touching(lm):
    before = model_fingerprint(lm)
    with pytest.raises(ValueError, match="counts"):
        ActionPruning(torch.ones(10, dtype=torch.long)).attach(lm)
    with pytest.raises(ValueError, match="prunes every token"):
        ActionPruning(torch.zeros(VOCAB, dtype=torch.long)).attach(lm)
    with pytest.raises(ValueError, match="output head"):
        ActionPruning(make_counts()).attach(torch.nn.Linear(3, 3))
    assert not lm.get_output_embeddings()._forward_hooks
    after = model_fingerprint(lm)
    assert all(torch.equal(before[k], after[k]) for k in before if torch.is_tensor(before[k]))


def test_state_counts_and_calls_resume():
    lm = make_lm()
    first = ActionPruning(make_counts()).attach(lm)
    _logits(lm, torch.zeros(1, 3, dtype=torch.long))
    state = first.state_dict()
    first.detach()
    assert state["state"]["calls"] == 1
    twin = ActionPruning(make_counts())
    twin.load_state_dict(state)
    assert twin.calls == 1
    other = make_counts()
    other[0] += 1
    with pytest.raises(ValueError, match="counts"):
        ActionPruning(other).load_state_dict(state)

"""Losslessness: the speculative output distribution is the target's, greedy is exact."""

from __future__ import annotations

import itertools

import pytest
import torch
from scipy.stats import chisquare

from sparse_vocabtrim import (
    autoregressive_generate,
    speculative_generate,
    top_k_vocab,
    trim_drafter,
    verify_block,
)

V = 4


def bigram_tables(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Target logits ``P`` and a different drafter ``Q`` (V = 4), both exact bigram tables."""
    gen = torch.Generator().manual_seed(seed)
    target = torch.randn(V, V, generator=gen)
    drafter = target + 0.6 * torch.randn(V, V, generator=gen)
    return target, drafter


def joint(table: torch.Tensor, start: int, length: int) -> torch.Tensor:
    """Exact probability of every continuation of ``length`` tokens after ``start``."""
    probs = table.softmax(-1)
    out = []
    for seq in itertools.product(range(V), repeat=length):
        prob, prev = 1.0, start
        for token in seq:
            prob *= float(probs[prev, token])
            prev = token
        out.append(prob)
    return torch.tensor(out, dtype=torch.float64)


def histogram(tokens: torch.Tensor) -> torch.Tensor:
    index = torch.zeros(tokens.shape[0], dtype=torch.long)
    for j in range(tokens.shape[1]):
        index = index * V + tokens[:, j]
    return torch.bincount(index, minlength=V ** tokens.shape[1]).double()


def chi2_pvalue(tokens: torch.Tensor, expected: torch.Tensor) -> float:
    observed = histogram(tokens)
    expected = expected.double() / expected.double().sum()
    return float(chisquare(observed.numpy(), (expected * observed.sum()).numpy()).pvalue)


def trimmed_runner(runner_cls, drafter: torch.Tensor, keep: list[int]):
    ids = torch.tensor(keep)
    return runner_cls(drafter[:, ids], token_ids=ids)


def test_verify_block_first_token_is_distributed_as_the_target() -> None:
    """One position, 40k rows, a drafter trimmed to 2 of 4 tokens: the output follows p."""
    gen = torch.Generator().manual_seed(0)
    p = torch.tensor([0.1, 0.4, 0.2, 0.3])
    q = torch.tensor([0.0, 0.25, 0.0, 0.75])  # trimmed: zero outside {1, 3}
    rows = 40_000
    drafts = torch.multinomial(q.expand(rows, V), 1, replacement=True, generator=gen)
    p_rows = torch.stack([p, torch.full((V,), 0.25)]).expand(rows, 2, V)
    accepted, fallback = verify_block(p_rows, q.expand(rows, 1, V), drafts, gen)
    first = torch.where(accepted > 0, drafts[:, 0], fallback)
    assert chi2_pvalue(first.unsqueeze(1), p.double()) > 1e-3
    # power: the drafter's own samples are rejected by the same test
    assert chi2_pvalue(drafts, p.double()) < 1e-6


@pytest.mark.parametrize("batch", [8, 6000])
def test_speculative_loop_is_lossless_on_exact_bigrams(runner_cls, batch: int) -> None:
    """The whole batched loop (γ = 3, drafter trimmed to 3 of 4 tokens) samples the target's
    exact joint of 3 tokens; batch 8 exercises per-row acceptance, 6000 the batch minimum.
    """
    target, drafter = bigram_tables()
    gen = torch.Generator().manual_seed(1)
    samples, total = [], 6000
    for _ in range(total // batch):
        prompt = torch.full((batch, 1), 2, dtype=torch.long)
        out = speculative_generate(
            runner_cls(target), trimmed_runner(runner_cls, drafter, [0, 1, 3]), prompt, 3, 3,
            1.0, gen,
        )  # fmt: skip
        samples.append(out.tokens)
    tokens = torch.cat(samples)
    assert chi2_pvalue(tokens, joint(target, 2, 3)) > 1e-3
    drafted = autoregressive_generate(
        trimmed_runner(runner_cls, drafter, [0, 1, 3]), torch.full((total, 1), 2), 3, 1.0, gen
    )[0]
    assert chi2_pvalue(drafted, joint(target, 2, 3)) < 1e-6  # the test has power


def test_acceptance_rises_with_k_on_average(runner_cls) -> None:
    """Exact bigrams, counts from target samples: mean acceptance is non-decreasing in k."""
    gen = torch.Generator().manual_seed(3)
    target = torch.randn(16, 16, generator=gen) * 2
    drafter = target + 0.7 * torch.randn(16, 16, generator=gen)
    tokens, _ = autoregressive_generate(runner_cls(target), torch.zeros(64, 1, dtype=torch.long),
                                        32, 1.0, gen)  # fmt: skip
    counts = torch.bincount(tokens.flatten(), minlength=16)
    rates = []
    for k in (2, 4, 8, 16):
        keep = top_k_vocab(counts, k).tolist()
        out = speculative_generate(
            runner_cls(target), trimmed_runner(runner_cls, drafter, keep),
            torch.zeros(2000, 1, dtype=torch.long), 8, 4, 1.0, torch.Generator().manual_seed(5),
        )  # fmt: skip
        rates.append(float(torch.stack(out.accepted_per_block).double().mean()))
    assert all(b >= a - 0.01 for a, b in itertools.pairwise(rates)), rates
    assert rates[-1] > rates[0] + 0.1, rates


def test_greedy_speculative_equals_target_greedy(pair) -> None:
    """Greedy with a trimmed drafter returns exactly the target's greedy tokens (HF models)."""
    target, drafter = pair
    prompt = torch.randint(0, 64, (3, 6), generator=torch.Generator().manual_seed(4))
    reference, _ = autoregressive_generate(target, prompt, 20, temperature=0.0)
    hf = target.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=20,
                         do_sample=False)  # fmt: skip
    assert torch.equal(hf[:, 6:], reference)  # our KV-cached baseline is HF's greedy
    small = trim_drafter(drafter, torch.arange(0, 64, 4))
    for gamma in (1, 3, 5):
        out = speculative_generate(target, small, prompt, 20, gamma, 0.0)
        assert torch.equal(out.tokens, reference), gamma
        assert out.target_calls == len(out.accepted_per_block)
        assert out.drafter_calls == gamma * out.target_calls


def test_transformers_assisted_generation_accepts_the_full_width_trimmed_drafter(pair) -> None:
    """HF assisted generation with the trimmed drafter (``full_width=True``) is lossless too."""
    target, drafter = pair
    prompt = torch.randint(0, 64, (1, 6), generator=torch.Generator().manual_seed(6))
    reference, _ = autoregressive_generate(target, prompt, 16, temperature=0.0)
    small = trim_drafter(drafter, torch.arange(32), full_width=True)
    hf = target.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=16,
                         do_sample=False, assistant_model=small)  # fmt: skip
    assert torch.equal(hf[:, 6:], reference)


def test_bad_arguments_raise_clear_errors(pair) -> None:
    target, drafter = pair
    prompt = torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="gamma"):
        speculative_generate(target, drafter, prompt, 4, gamma=0)
    with pytest.raises(ValueError, match="temperature"):
        speculative_generate(target, drafter, prompt, 4, temperature=-1.0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        speculative_generate(target, drafter, prompt, 0)
    with pytest.raises(ValueError, match="prompt"):
        speculative_generate(target, drafter, torch.zeros(3, dtype=torch.long), 4)

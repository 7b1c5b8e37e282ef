"""The trim itself: exact counts, top-k with ties, trimmed logits, k = V, bytes."""

from __future__ import annotations

import pytest
import torch

from sparse_vocabtrim import (
    TrimmedLMHead,
    decode_bytes,
    memory_bound_speedup,
    speculative_generate,
    token_counts,
    top_k_vocab,
    trim_drafter,
)

VOCAB = 64


def test_token_counts_are_exact() -> None:
    counts = token_counts([torch.tensor([[0, 3, 3], [5, 3, 0]]), torch.tensor([5])], 6)
    assert counts.tolist() == [2, 0, 0, 3, 0, 2]
    with pytest.raises(ValueError, match="tokens"):
        token_counts(torch.tensor([6]), 6)


def test_top_k_breaks_ties_by_lower_id_and_sorts_by_id() -> None:
    counts = torch.tensor([1, 5, 0, 5, 2, 0])
    assert top_k_vocab(counts, 2).tolist() == [1, 3]
    assert top_k_vocab(counts, 4).tolist() == [0, 1, 3, 4]
    assert top_k_vocab(counts, 5).tolist() == [0, 1, 2, 3, 4]  # tie at 0: id 2 before 5
    with pytest.raises(ValueError, match="k"):
        top_k_vocab(counts, 7)


def test_trimmed_logits_equal_original_at_kept_ids(pair) -> None:
    _, drafter = pair
    ids = torch.tensor([3, 9, 17, 40, 63])
    small = trim_drafter(drafter, ids)
    x = torch.randint(0, VOCAB, (2, 7), generator=torch.Generator().manual_seed(1))
    full = drafter(input_ids=x).logits
    trimmed = small(input_ids=x).logits
    assert trimmed.shape == (2, 7, 5)
    torch.testing.assert_close(trimmed, full[..., ids], rtol=0, atol=1e-6)
    wide = trim_drafter(drafter, ids, full_width=True)(input_ids=x).logits
    assert wide.shape == full.shape
    assert torch.isneginf(wide[..., [i for i in range(VOCAB) if i not in ids.tolist()]]).all()
    torch.testing.assert_close(wide[..., ids], full[..., ids], rtol=0, atol=1e-6)
    # the source drafter is untouched, the body weights are equal copies
    assert drafter.lm_head.weight.shape == (VOCAB, 16)
    assert torch.equal(small.model.embed_tokens.weight, drafter.model.embed_tokens.weight)


def test_k_equal_v_reproduces_the_untrimmed_drafter(pair) -> None:
    target, drafter = pair
    full = trim_drafter(drafter, torch.arange(VOCAB))
    prompt = torch.randint(0, VOCAB, (3, 5), generator=torch.Generator().manual_seed(2))
    a = speculative_generate(target, drafter, prompt, 12, 3, 1.0, torch.Generator().manual_seed(7))
    b = speculative_generate(target, full, prompt, 12, 3, 1.0, torch.Generator().manual_seed(7))
    assert torch.equal(a.tokens, b.tokens)
    assert [x.tolist() for x in a.accepted_per_block] == [x.tolist() for x in b.accepted_per_block]


def test_decode_bytes_count_the_head_rows_and_not_the_embedding(pair) -> None:
    _, drafter = pair
    total = sum(p.numel() * 4 for p in drafter.parameters())
    buffers = sum(b.numel() * b.element_size() for b in drafter.buffers())
    embedding = VOCAB * 16 * 4
    assert decode_bytes(drafter) == total - embedding + buffers
    small = trim_drafter(drafter, torch.arange(10))
    assert decode_bytes(drafter) - decode_bytes(small) == (VOCAB - 10) * 16 * 4 - 10 * 8
    assert memory_bound_speedup(2.0, 4, 25, 100) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="block_efficiency"):
        memory_bound_speedup(0.5, 4, 25, 100)


def test_trimmed_head_rejects_bad_ids(pair) -> None:
    _, drafter = pair
    with pytest.raises(ValueError, match="token_ids"):
        trim_drafter(drafter, torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="token_ids"):
        trim_drafter(drafter, torch.tensor([VOCAB]))
    with pytest.raises(TypeError, match="full_width"):
        TrimmedLMHead(torch.zeros(2, 3), torch.tensor([0, 1]), 4, full_width=1)  # type: ignore[arg-type]

"""sparsecore.rl.rollout: cached generation equals a no-cache reference, rows really leave."""

from __future__ import annotations

import pytest
import torch

from sparsecore.bench import tiny_llama
from sparsecore.rl import CHAR_VOCAB, DetectInfo, generate_rollouts, left_pad

pytest.importorskip("transformers")

EOS, PAD = CHAR_VOCAB.eos, CHAR_VOCAB.pad


def _model():
    return tiny_llama(
        seed=3, vocab_size=CHAR_VOCAB.size, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, intermediate_size=64,
        max_position_embeddings=64,
    ).eval()  # fmt: skip


def _reference_greedy(model, prompt, steps):
    """Greedy decoding without a cache: full forward pass per token."""
    ids = list(prompt)
    out = []
    with torch.no_grad():
        for _ in range(steps):
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
            tok = int(logits.argmax())
            out.append(tok)
            ids.append(tok)
            if tok == EOS:
                break
    return out


PROMPTS = [[1, 5, 6, 7], [1, 9], [1, 4, 4, 4, 4, 8]]


def test_left_pad():
    ids, mask = left_pad(PROMPTS, PAD)
    assert ids.shape == (3, 6) and mask.sum(1).tolist() == [4, 2, 6]
    assert ids[1].tolist() == [PAD] * 4 + [1, 9]
    with pytest.raises(ValueError, match="empty"):
        left_pad([[1], []], PAD)


def test_greedy_cached_matches_reference_with_left_padding():
    model = _model()
    batch = generate_rollouts(model, PROMPTS, 2, 7, EOS, PAD, temperature=0.0)
    for r in range(6):
        ref = _reference_greedy(model, PROMPTS[r // 2], 7)
        got = batch.completions[r, : batch.lengths[r]].tolist()
        assert got == ref
    assert batch.tokens_generated == int(batch.lengths.sum())
    assert batch.groups.tolist() == [0, 0, 1, 1, 2, 2]


def test_rows_stop_on_eos_and_counts_are_exact():
    model = _model()
    calls: list[int] = []
    handle = model.register_forward_pre_hook(
        lambda m, a, k: calls.append(k["input_ids"].shape[0]), with_kwargs=True
    )
    gen = torch.Generator().manual_seed(0)
    batch = generate_rollouts(model, PROMPTS, 16, 10, EOS, PAD, generator=gen, temperature=3.0)
    handle.remove()
    ended = batch.finished
    assert ended.any() and (~ended).any()
    for r in range(batch.lengths.shape[0]):
        n = int(batch.lengths[r])
        row = batch.completions[r]
        assert (row[n:] == PAD).all()
        if ended[r]:
            assert int(row[n - 1]) == EOS and EOS not in row[: n - 1].tolist()
        else:
            assert n == 10
    # every forward after the prompt's processes exactly the rows still running
    assert calls[0] == 48
    assert sum(calls[1:]) == batch.row_forwards
    running = [int((batch.lengths > s).sum() - ((batch.lengths == s + 1) & ended).sum())
               for s in range(10)]  # fmt: skip
    assert calls[1:] == [n for n in running[:-1] if n > 0]


def test_detect_prunes_rows_and_they_generate_nothing_more():
    model = _model()
    seen: list[DetectInfo] = []

    def detect(info: DetectInfo):
        seen.append(info)
        return torch.arange(0, info.hidden.shape[0], 2)  # keep the even rows

    calls: list[int] = []
    handle = model.register_forward_pre_hook(
        lambda m, a, k: calls.append(k["input_ids"].shape[0]), with_kwargs=True
    )
    batch = generate_rollouts(
        model, PROMPTS, 4, 9, EOS, PAD, generator=torch.Generator().manual_seed(1),
        detect_step=3, detect=detect,
    )  # fmt: skip
    handle.remove()
    assert len(seen) == 1 and seen[0].step == 3 and seen[0].hidden.shape == (12, 32)
    assert batch.survivors.tolist() == [r % 2 == 0 for r in range(12)]
    pruned = ~batch.survivors
    assert (batch.lengths[pruned] <= 3).all()
    assert (batch.completions[pruned][:, 3:] == PAD).all()
    # forward passes after the detection step hold survivors only
    assert max(calls[4:], default=0) <= 6
    assert batch.tokens_generated == int(batch.lengths.sum())
    assert torch.equal(batch.detect_hidden, seen[0].hidden)


def test_survivors_continue_exactly_as_without_pruning():
    """Pruning must not disturb the survivors' cache: greedy outputs unchanged."""
    model = _model()
    full = generate_rollouts(model, PROMPTS, 2, 8, EOS, PAD, temperature=0.0)
    pruned = generate_rollouts(
        model, PROMPTS, 2, 8, EOS, PAD, temperature=0.0, detect_step=2, detect=lambda i: [1, 4],
    )  # fmt: skip
    for r in (1, 4):
        assert torch.equal(full.completions[r], pruned.completions[r, : full.completions.shape[1]])
    assert pruned.tokens_generated < full.tokens_generated


def test_hidden_state_is_the_forward_over_prompt_and_detect_tokens():
    model = _model()
    box = {}

    def detect(info):
        box["info"] = info
        return list(range(info.hidden.shape[0]))

    batch = generate_rollouts(
        model, PROMPTS[:1], 1, 6, EOS, PAD, temperature=0.0, detect_step=2, detect=detect
    )
    info = box["info"]
    assert int(info.lengths[0]) == 2 and not info.finished[0]
    ids = torch.tensor([PROMPTS[0] + batch.completions[0, :2].tolist()])
    with torch.no_grad():
        ref = model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0, -1]
    assert torch.allclose(info.hidden[0], ref, atol=1e-5)


def test_bad_arguments_are_named():
    model = _model()
    with pytest.raises(ValueError, match="detect_step"):
        generate_rollouts(model, PROMPTS, 2, 4, EOS, PAD, detect_step=4, detect=lambda i: [0])
    with pytest.raises(ValueError, match="together"):
        generate_rollouts(model, PROMPTS, 2, 4, EOS, PAD, detect_step=2)
    with pytest.raises(ValueError, match="num_samples"):
        generate_rollouts(model, PROMPTS, 0, 4, EOS, PAD)
    with pytest.raises(ValueError, match="outside"):
        generate_rollouts(model, PROMPTS, 1, 4, EOS, PAD, detect_step=1, detect=lambda i: [99])


def test_detect_logprobs_are_the_sampling_logprobs():
    from sparsecore.rl import token_logprobs

    model = _model()
    box = {}

    def detect(info):
        box["info"] = info
        return list(range(info.hidden.shape[0]))

    batch = generate_rollouts(
        model, PROMPTS, 3, 6, EOS, PAD, generator=torch.Generator().manual_seed(2),
        detect_step=3, detect=detect,
    )  # fmt: skip
    info = box["info"]
    with torch.no_grad():
        ref = token_logprobs(model, batch.prompts, batch.prompt_mask, batch.completions,
                             batch.lengths)  # fmt: skip
    upto = torch.arange(batch.completions.shape[1])[None, :] < info.lengths[:, None]
    assert torch.allclose(info.logprobs, (ref * upto).sum(1), atol=1e-4)
    assert torch.equal(batch.detect_logprobs, info.logprobs)

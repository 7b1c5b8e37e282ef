"""The offline pass: spans and confidences, the labelling rule, S, the layer choice, the lexicon."""

from __future__ import annotations

import pytest
import torch

from sparse_rebalance import (
    END_THINK,
    STEP,
    ReasoningTokenizer,
    TraceSteps,
    calibrate,
    choose_layer,
    has_reflection,
    label_steps,
    trace_steps,
)

from ._helpers import make_lm

TOK = ReasoningTokenizer()


def test_lexicon_follows_the_official_regex_rules():
    assert has_reflection("wait, check 12+34=46")
    assert has_reflection("Let me double-check that")
    assert has_reflection("ALTERNATIVELY we add")
    assert not has_reflection("12+34=46")
    assert not has_reflection("butter and waiter")  # word boundaries


def test_trace_steps_spans_confidences_and_positions():
    model = make_lm(2)
    prompt = TOK.encode("Q:1+2+3=?<think>")
    gen = TOK.encode("1+2=3\n\n3+3=6\n\nwait\n\n</think>A:6<eos>")
    steps = trace_steps(model, prompt, gen, split_ids=(STEP,), think_end_id=END_THINK,
                        decode=TOK.decode)  # fmt: skip
    assert steps.texts == ["1+2=3", "3+3=6", "wait"]
    with torch.no_grad():
        out = model(input_ids=torch.tensor([prompt + gen]), output_hidden_states=True)
    logp = torch.log_softmax(out.logits[0], -1)
    start = len(prompt)
    first = [logp[start - 1 + i, gen[i]] for i in range(5)]
    assert steps.confidences[0] == pytest.approx(float(torch.exp(torch.stack(first).mean())))
    # boundaries at generated positions 5 and 11 (the one before </think> is excluded)
    positions = [start + 6, start + 12]
    assert steps.hidden.shape == (4, 2, 32)
    for layer, h in enumerate(out.hidden_states):
        assert torch.equal(steps.hidden[layer], h[0, positions])


def _trace(texts, confs, seed):
    g = torch.Generator().manual_seed(seed)
    return TraceSteps(list(texts), list(confs), torch.randn(3, len(texts) - 1, 8, generator=g))


def test_labels_and_steering_vector_follow_the_exact_rule():
    traces = [
        _trace(["a", "wait x", "b", "c"], [0.5, 0.9, 0.1, 0.95], 0),
        _trace(["a", "d", "e", "maybe"], [0.5, 0.5, 0.99, 0.2], 1),
    ]
    vectors, labels, confs = label_steps(traces, q25=0.3, q75=0.8)
    # offset 1: segment j+1 labels vector j; middle band without a hit dropped
    assert labels == [1, 1, 0, 0, 1]
    assert confs == [0.9, 0.1, 0.95, 0.99, 0.2]
    kept = torch.stack(vectors)
    assert torch.equal(kept[0], traces[0].hidden[:, 0])
    assert torch.equal(kept[3], traces[1].hidden[:, 1])  # 'd' (0.5, no hit) was dropped


def test_calibrate_steering_vector_is_the_mean_difference():
    traces = [
        _trace(["s"] + [("wait" if i % 3 == 0 else "x") for i in range(9)],
               [0.5] + [0.1 * (i % 10) for i in range(9)], seed)
        for seed in range(8)
    ]  # fmt: skip
    cal = calibrate(traces)
    all_c = torch.tensor([c for t in traces for c in t.confidences], dtype=torch.float64)
    assert cal.q25c == pytest.approx(float(all_c.quantile(0.25)))
    vectors, labels, _ = label_steps(traces, cal.q25c, cal.q75c)
    lab = torch.tensor(labels)
    stacked = torch.stack(vectors)[:, cal.layer]
    torch.testing.assert_close(cal.vector, stacked[lab == 1].mean(0) - stacked[lab == 0].mean(0))
    assert (cal.positives, cal.negatives) == (int((lab == 1).sum()), int((lab == 0).sum()))


def test_choose_layer_finds_the_layer_that_encodes_confidence():
    g = torch.Generator().manual_seed(0)
    c = torch.rand(200, generator=g)
    features = torch.randn(4, 200, 16, generator=g)
    features[2, :, 3] += 20 * c
    layer, r2 = choose_layer(features, c)
    assert layer == 2
    assert r2[2] > 0.8 > max(r2[0], r2[1], r2[3])


def test_calibrate_refuses_too_little_data():
    with pytest.raises(ValueError, match="too few"):
        calibrate([_trace(["a", "b"], [0.5, 0.6], 0)])


def test_paired_quartiles_leave_out_the_first_segment():
    traces = [
        _trace(["copy"] + [("wait" if i % 3 == 0 else "x") for i in range(9)],
               [0.999] + [0.1 * (i % 10) for i in range(9)], seed)
        for seed in range(8)
    ]  # fmt: skip
    paired = calibrate(traces, quartiles="paired")
    later = torch.tensor([c for t in traces for c in t.confidences[1:]], dtype=torch.float64)
    assert paired.q75c == pytest.approx(float(later.quantile(0.75)))
    with pytest.raises(ValueError, match="quartiles"):
        calibrate(traces, quartiles="median")

"""The reasoning toy: tokenizer round trip, traces of the three kinds, answer parsing."""

from __future__ import annotations

import random

import pytest

from sparse_rebalance import (
    END_THINK,
    EOS,
    STEP,
    THINK,
    Problem,
    ReasoningTokenizer,
    has_reflection,
    make_problems,
    parse_answer,
    training_trace,
)


def test_tokenizer_round_trip_and_single_special_tokens():
    tok = ReasoningTokenizer()
    text = "Q:12+34=?<think>12+34=46\n\n</think>A:46<eos>"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert ids.count(THINK) == ids.count(END_THINK) == ids.count(STEP) == ids.count(EOS) == 1
    assert max(ids) < tok.vocab_size


def test_trace_kinds():
    problem = Problem((12, 34, 56, 78))
    clean = training_trace(problem, random.Random(0), over=0.0, under=0.0)
    assert clean == (
        "Q:12+34+56+78=?<think>12+34=46\n\n46+56=102\n\n102+78=180\n\n</think>A:180<eos>"
    )
    over = training_trace(problem, random.Random(1), over=1.0, under=0.0)
    steps = over.split("<think>")[1].split("</think>")[0].split("\n\n")[:-1]
    assert any(has_reflection(s) for s in steps) and parse_answer(over) == 180
    assert [s for s in steps if not has_reflection(s)] == clean.split("<think>")[1].split(
        "</think>")[0].split("\n\n")[:-1]  # fmt: skip
    under = training_trace(problem, random.Random(2), over=0.0, under=1.0)
    assert parse_answer(under) != 180
    assert under.count("\n\n") < 3


def test_problems_are_seeded_and_validated():
    assert make_problems(5, seed=3) == make_problems(5, seed=3)
    assert make_problems(5, seed=3) != make_problems(5, seed=4)
    with pytest.raises(ValueError, match="count"):
        make_problems(0, seed=0)
    with pytest.raises(ValueError, match="under"):
        training_trace(Problem((1, 2)), random.Random(0), over=0.8, under=0.5)
    assert parse_answer("no answer") is None

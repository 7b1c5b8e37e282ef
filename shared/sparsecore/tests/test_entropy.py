"""sparsecore.export.entropy: the discretised logistic table and the range coder round trip."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("constriction")

from sparsecore.export.entropy import (
    RangeCoder,
    decode_range,
    fit_logistic,
    ideal_bits,
    logistic_pmf,
)


def test_pmf_brute_force_and_folded_tails():
    pmf = logistic_pmf(0.4, 1.3, -3, 4)
    assert pmf.sum() == pytest.approx(1.0, abs=1e-12)
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    loc, scale = float(np.float32(0.4)), float(np.float32(1.3))  # parameters are stored as f32
    for k in range(-2, 4):  # interior bins
        ref = sig((k + 0.5 - loc) / scale) - sig((k - 0.5 - loc) / scale)
        assert pmf[k + 3] == pytest.approx(ref, rel=1e-9)
    assert pmf[0] == pytest.approx(sig((-3 + 0.5 - loc) / scale), rel=1e-9)  # left tail folded


def test_round_trip_is_bit_exact_and_size_matches_estimate():
    rng = np.random.default_rng(0)
    a = np.round(rng.laplace(0, 2.0, 4000)).astype(np.int64)
    b = np.round(rng.normal(5, 0.7, 3000)).astype(np.int64)
    tables = []
    coder = RangeCoder()
    for x in (a, b):
        loc, scale = fit_logistic(x)
        pmf = logistic_pmf(loc, scale, int(x.min()), int(x.max()))
        coder.encode(x, pmf, int(x.min()))
        tables.append((pmf, int(x.min()), x.size))
    data = coder.finish()
    back = decode_range(data, tables)
    assert np.array_equal(back[0], a) and np.array_equal(back[1], b)
    estimate = sum(ideal_bits(x, t[0], t[1]) for x, t in zip((a, b), tables, strict=True))
    assert coder.estimate_bits == pytest.approx(estimate)
    assert estimate <= 8 * len(data) <= estimate * 1.01 + 32


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="scale"):
        logistic_pmf(0.0, 0.0, 0, 3)
    with pytest.raises(ValueError, match="hi"):
        logistic_pmf(0.0, 1.0, 3, 0)
    coder = RangeCoder()
    with pytest.raises(ValueError, match="support"):
        coder.encode(np.array([5]), logistic_pmf(0.0, 1.0, 0, 3), 0)
    with pytest.raises(ValueError, match="32-bit"):
        decode_range(b"abc", [])

"""The control surface F(c, v) against the official boundary constraints."""

from __future__ import annotations

import math

import pytest
import torch

from sparse_rebalance import HIGH_VAL_1, ControlSurface, solve_k

SURFACE = ControlSurface(q25c=0.662, q75c=0.948, q25v=5.6e-4, q75v=0.0116, low_val_1=-1.02,
                         low_val_2=-1.91, high_val_2=0.1)  # the paper's 1.5B preset  # fmt: skip


def test_f1_meets_its_two_constraints():
    assert float(SURFACE.f1(SURFACE.q25c)) == pytest.approx(-1.02, abs=1e-5)
    assert float(SURFACE.f1(1.0)) == pytest.approx(HIGH_VAL_1, abs=1e-4)


def test_f1_is_increasing_and_clamps_confidence():
    c = torch.linspace(0, 1, 101)
    f = SURFACE.f1(c)
    assert bool((f[1:] >= f[:-1]).all())
    assert float(SURFACE.f1(2.0)) == float(SURFACE.f1(1.0))
    assert float(SURFACE.f1(float("nan"))) == float(SURFACE.f1(0.5))


def test_solve_k_solves_the_ratio():
    k = solve_k(0.662, 0.948, -1.02, HIGH_VAL_1, HIGH_VAL_1)
    m, s = 0.805, 0.143
    target = 2 * (HIGH_VAL_1 - 0.5 * (-1.02 + HIGH_VAL_1)) / (HIGH_VAL_1 + 1.02)
    assert math.tanh(k * (1 - m)) / math.tanh(k * s) == pytest.approx(target, rel=1e-6)


def test_low_confidence_high_variance_gives_low_val_2():
    assert float(SURFACE(SURFACE.q25c, 0.05)) == pytest.approx(-1.91, abs=1e-4)
    assert float(SURFACE(0.2, 0.05)) == pytest.approx(-1.91, abs=1e-6)  # at the clamp


def test_high_confidence_low_variance_gives_high_val_2():
    assert float(SURFACE(1.0, 0.0)) == pytest.approx(0.1, abs=1e-4)


def test_middle_band_is_the_one_dimensional_map():
    c, v = torch.tensor([0.8]), torch.tensor([0.005])
    assert float(SURFACE(c, v)) == pytest.approx(float(SURFACE.f1(c)), abs=1e-6)


def test_alpha_always_within_the_clamp():
    c = torch.linspace(-0.2, 1.2, 57).repeat_interleave(41)
    v = torch.logspace(-6, 0, 41).repeat(57)
    alpha = SURFACE(c, v)
    low, high = SURFACE.bounds
    assert (low, high) == (-1.91, 0.1)
    assert bool(((alpha >= low) & (alpha <= high)).all())


def test_swapped_quartiles_are_sorted_and_bad_values_refused():
    s = ControlSurface(q25c=0.9, q75c=0.6, q25v=0.1, q75v=0.01)
    assert (s.q25c, s.q75c, s.q25v, s.q75v) == (0.6, 0.9, 0.01, 0.1)
    with pytest.raises(TypeError, match="q25c"):
        ControlSurface(q25c="low", q75c=0.9, q25v=0.0, q75v=0.1)
    with pytest.raises(ValueError, match="low_val_2"):
        ControlSurface(q25c=0.1, q75c=0.9, q25v=0.0, q75v=0.1, low_val_2=float("inf"))

"""Fixtures: a tiny random Llama on the toy vocabulary and a synthetic calibration."""

from __future__ import annotations

import pytest

from ._helpers import make_calibration, make_lm


@pytest.fixture
def lm():
    return make_lm()


@pytest.fixture
def calibration():
    return make_calibration()

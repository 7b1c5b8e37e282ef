"""Fixtures: a tiny random Llama on the toy vocabulary."""

from __future__ import annotations

import pytest

from ._helpers import make_lm


@pytest.fixture
def lm():
    return make_lm()

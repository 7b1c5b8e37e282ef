"""Fixtures: a tiny patch INR."""

from __future__ import annotations

import pytest

from ._helpers import tiny_inr


@pytest.fixture
def inr():
    return tiny_inr()

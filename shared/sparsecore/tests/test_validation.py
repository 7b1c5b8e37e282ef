"""The shared config checks: the right exception type, the parameter named, bounds exact."""

from __future__ import annotations

import math

import pytest

from sparsecore.validation import check_bool, check_choice, check_int, check_number, check_shape


def test_check_int() -> None:
    assert check_int(3, "steps", 1) == 3 and check_int(-5, "offset") == -5
    with pytest.raises(TypeError, match="steps must be an integer"):
        check_int(True, "steps", 1)
    with pytest.raises(TypeError, match="steps"):
        check_int(2.0, "steps", 1)
    with pytest.raises(ValueError, match="steps must be >= 1, got 0"):
        check_int(0, "steps", 1)


@pytest.mark.parametrize(
    ("value", "bounds", "ok"),
    [
        (0.0, {"low": 0.0, "high": 1.0}, True),
        (1.0, {"low": 0.0, "high": 1.0}, True),
        (0.0, {"low": 0.0, "high": 1.0, "open_low": True}, False),
        (1.0, {"low": 0.0, "high": 1.0, "open_high": True}, False),
        (1.5, {"low": 0.0, "high": 1.0}, False),
        (-1e-9, {"low": 0.0}, False),
        (1e300, {"low": 0.0}, True),
        (math.inf, {"low": 0.0}, True),
        (math.inf, {"low": 0.0, "finite": True}, False),
        (-math.inf, {}, True),
        (5, {"high": 5, "open_high": True}, False),
    ],
)
def test_check_number_bounds(value: float, bounds: dict, ok: bool) -> None:
    if ok:
        result = check_number(value, "lr", **bounds)
        assert result == value and isinstance(result, float)
    else:
        with pytest.raises(ValueError, match=r"^lr must be "):
            check_number(value, "lr", **bounds)


def test_check_number_messages_and_types() -> None:
    with pytest.raises(ValueError, match=r"lr must be in \(0, 1\], got 0"):
        check_number(0, "lr", 0, 1, open_low=True)
    with pytest.raises(ValueError, match="lr must be > 0"):
        check_number(-1, "lr", 0, open_low=True)
    with pytest.raises(ValueError, match="lr must be <= 2"):
        check_number(3, "lr", high=2)
    with pytest.raises(ValueError, match="NaN"):
        check_number(math.nan, "lr")
    for bad in (True, "0.1", None, [0.1]):
        with pytest.raises(TypeError, match="lr must be a number"):
            check_number(bad, "lr")


def test_check_bool_and_choice() -> None:
    assert check_bool(False, "flag") is False
    with pytest.raises(TypeError, match="flag must be a bool"):
        check_bool(1, "flag")
    assert check_choice("erk", "distribution", ("erk", "uniform")) == "erk"
    with pytest.raises(ValueError, match=r"distribution must be one of \('erk', 'uniform'\)"):
        check_choice("global", "distribution", iter(["erk", "uniform"]))


def test_check_shape() -> None:
    assert check_shape([1, 8, 8], "input_shape") == (1, 8, 8)
    assert check_shape((3,), "input_shape") == (3,)
    for bad in (None, 8, "1x8", (1, 0), (1, True), (1, 2.0), (-1,)):
        with pytest.raises(ValueError, match=r"input_shape must be a tuple of positive ints"):
            check_shape(bad, "input_shape")
    with pytest.raises(TypeError):
        check_shape(8.0, "input_shape")  # not iterable

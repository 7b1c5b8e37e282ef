"""Argument checks for method configs: one clear exception that names the parameter.

Every method config validates its fields in ``__post_init__``, before a model is touched. These
functions are the shared vocabulary for that: a wrong *type* raises ``TypeError``, a value of the
right type outside its range raises ``ValueError``, and both messages start with the parameter's
name (``"update_every must be >= 1, got 0"``). ``bool`` is never accepted as a number, since
``True`` silently passing as ``1`` hides a misplaced argument.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

__all__ = ["check_bool", "check_choice", "check_int", "check_number", "check_shape"]


def check_int(value: Any, name: str, minimum: int | None = None) -> int:
    """``value`` as an ``int``, at least ``minimum``.

    Raises:
        TypeError: Not an integer (``bool`` included).
        ValueError: Below ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_number(
    value: Any,
    name: str,
    low: float | None = None,
    high: float | None = None,
    *,
    open_low: bool = False,
    open_high: bool = False,
    finite: bool = False,
) -> float:
    """``value`` as a ``float`` within the given bounds (closed unless ``open_*``).

    Args:
        value: The value to check.
        name: The parameter's name, for the message.
        low: Lower bound, or ``None``.
        high: Upper bound, or ``None``.
        open_low: Exclude ``low`` itself.
        open_high: Exclude ``high`` itself.
        finite: Also reject ``±inf``.

    Raises:
        TypeError: Not an ``int`` or ``float`` (``bool`` included).
        ValueError: NaN, infinite when ``finite``, or outside the bounds.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name} must be a number, got NaN")
    if finite and math.isinf(value):
        raise ValueError(f"{name} must be finite, got {value}")
    below = low is not None and (value <= low if open_low else value < low)
    above = high is not None and (value >= high if open_high else value > high)
    if below or above:
        raise ValueError(f"{name} must be {_interval(low, high, open_low, open_high)}, got {value}")
    return value


def _interval(low: float | None, high: float | None, open_low: bool, open_high: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
    if low is not None:
        return f"{'>' if open_low else '>='} {low}"
    return f"{'<' if open_high else '<='} {high}"


def check_bool(value: Any, name: str) -> bool:
    """``value`` if it is a ``bool`` (``0``/``1`` are refused: flags must be explicit)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return value


def check_choice(value: Any, name: str, choices: Iterable[str]) -> str:
    """``value`` if it is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_shape(value: Any, name: str) -> tuple[int, ...]:
    """``value`` as a tuple if it is a sequence of positive ints (one example's shape).

    Args:
        value: The option's value (e.g. a config's ``input_shape``).
        name: The option's name, for the message.

    Returns:
        ``tuple(value)``.

    Raises:
        ValueError: ``None``, an int or a string, or an entry that is not a positive int.
        TypeError: ``value`` is not iterable (a float).
    """
    if (
        value is None
        or isinstance(value, int | str)
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in value)
    ):
        raise ValueError(f"{name} must be a tuple of positive ints, got {value!r}")
    return tuple(value)

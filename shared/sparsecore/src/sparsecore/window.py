"""Pruning windows: when a scheduled method updates its masks, and when its schedule is done.

A *pruning window* is the stretch of training ``[begin, end]`` in which a gradual method moves
its sparsity from an initial to a final value with an update every ``every`` steps. Two grids
are in use in this repository; both are lifted here so that every method follows one of them:

* ``grid="begin"`` (GMP, DynST, LAPP, SMS's gradual variant): updates at ``begin``,
  ``begin + every``, ``begin + 2 every``, ... and **always at** ``end`` **itself**, so the last
  update lands exactly on ``end`` and the final value is reached there, whatever
  ``end - begin`` is (the last interval is shorter when it is not a multiple of ``every``).
  Any window with ``end > begin`` therefore completes; ``end <= begin`` raises.
* ``grid="multiples"`` (GraNet, as its official code runs it): updates at the multiples of
  ``every``; the schedule is indexed by the update count ``c = step // every`` over
  ``[begin // every, end // every]``, so the final value is reached at the last multiple of
  ``every`` not after ``end``. A window holding no multiple of ``every`` after ``begin`` raises.

Errors name the user's fields (``WindowNames``: ``begin_step`` / ``end_step`` /
``update_every`` / ``total_steps`` by default), never the internal ``begin`` / ``end`` /
``every``. When the training length is known (``total``), a window ending after it raises: the
schedule could not complete.

``step`` counts completed optimizer steps (the first step is ``1``), as everywhere in sparsecore.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from sparsecore.validation import check_choice, check_int

__all__ = [
    "GRIDS",
    "PruningWindow",
    "ScheduleIncompleteWarning",
    "WindowNames",
    "on_begin_grid",
]

#: The two update grids (see the module docstring).
GRIDS = ("begin", "multiples")


class ScheduleIncompleteWarning(UserWarning):
    """``finalize()`` ran before the method's schedule completed (see ``schedule_complete``)."""


@dataclass(frozen=True)
class WindowNames:
    """The user-facing names of a window's fields, for error messages.

    Attributes:
        begin: Name of the first step of the window.
        end: Name of the last step of the window.
        every: Name of the update period.
        total: Name of the training length.
    """

    begin: str = "begin_step"
    end: str = "end_step"
    every: str = "update_every"
    total: str = "total_steps"


def on_begin_grid(step: int, begin: int, end: int, every: int) -> bool:
    """Whether ``step`` is an update of the ``"begin"`` grid: ``begin + k every`` or ``end``."""
    return begin <= step <= end and ((step - begin) % every == 0 or step == end)


@dataclass(frozen=True)
class PruningWindow:
    """A validated pruning window and its update steps.

    Args:
        begin: First step of the window (an update happens there when ``begin >= 1`` on the
            ``"begin"`` grid; the schedule's initial value holds from it).
        end: Step at which the final value is reached (``"begin"`` grid: the last update is
            exactly ``end``; ``"multiples"`` grid: the last multiple of ``every`` up to ``end``).
        every: Steps between updates.
        total: Training length in steps, when known: ``end`` must not be after it.
        grid: ``"begin"`` or ``"multiples"``.
        names: The user's field names, for error messages.

    Raises:
        TypeError: A field is not an integer (``bool`` and ``2.5`` included).
        ValueError: A field is out of range, the window is empty (``end <= begin``), holds no
            update (``"multiples"`` grid), or ends after ``total``.
    """

    begin: int
    end: int
    every: int
    total: int | None = None
    grid: str = "begin"
    names: WindowNames = field(default_factory=WindowNames, compare=False, repr=False)

    def __post_init__(self) -> None:
        n = self.names
        check_int(self.begin, n.begin, 0)
        check_int(self.end, n.end, 0)
        check_int(self.every, n.every, 1)
        check_choice(self.grid, "grid", GRIDS)
        if self.total is not None:
            check_int(self.total, n.total, 1)
        if self.end <= self.begin:
            raise ValueError(
                f"{n.end} ({self.end}) must be > {n.begin} ({self.begin}): the pruning window "
                f"[{n.begin}, {n.end}] is empty"
            )
        if self.grid == "multiples" and self.end // self.every <= self.begin // self.every:
            raise ValueError(
                f"{n.end} ({self.end}) must leave at least one pruning update after "
                f"{n.begin} ({self.begin}) at {n.every}={self.every}: updates run at multiples "
                f"of {n.every}, so {n.end} must reach at least "
                f"{(self.begin // self.every + 1) * self.every}"
            )
        if self.total is not None and self.end > self.total:
            raise ValueError(
                f"{n.end} ({self.end}) must be <= {n.total} ({self.total}): the schedule would "
                f"not complete within training"
            )

    # ------------------------------------------------------------------ the grid
    @property
    def first_index(self) -> int:
        """``"multiples"`` grid: ``c0 = begin // every``, the index where the schedule starts."""
        return self.begin // self.every

    @property
    def last_index(self) -> int:
        """``"multiples"`` grid: ``cf = end // every``, the index where the final value holds."""
        return self.end // self.every

    @property
    def last_update(self) -> int:
        """The step of the last update, where the final value is reached."""
        if self.grid == "begin":
            return self.end
        return self.last_index * self.every

    def is_update(self, step: int) -> bool:
        """Whether a window update runs after ``step`` completed steps."""
        if step < 1:
            return False
        if self.grid == "begin":
            return on_begin_grid(step, self.begin, self.end, self.every)
        return step >= self.begin and step % self.every == 0 and step <= self.last_update

    def updates(self) -> Iterator[int]:
        """Every update step of the window, in order (steps ``>= 1``)."""
        if self.grid == "begin":
            start = self.begin if self.begin >= 1 else self.every
            yield from range(start, self.end, self.every)
            yield self.end
            return
        first = -(-max(self.begin, 1) // self.every) * self.every
        yield from range(first, self.last_update + 1, self.every)

    def progress(self, step: int) -> float:
        """Fraction of the window done after ``step`` steps, in ``[0, 1]`` (1 from the last
        update on). ``"begin"`` grid: ``(step - begin) / (end - begin)``; ``"multiples"``:
        ``(c - c0) / (cf - c0)`` with ``c = step // every``.
        """
        if self.grid == "begin":
            value = (step - self.begin) / (self.end - self.begin)
        else:
            value = (step // self.every - self.first_index) / (self.last_index - self.first_index)
        return min(max(value, 0.0), 1.0)

    def complete(self, step: int) -> bool:
        """Whether the last update has run after ``step`` completed steps."""
        return step >= self.last_update

    def gap(self, step: int, owner: str) -> str | None:
        """Why the window is not complete after ``step`` steps (naming the field), or ``None``.

        Args:
            step: Completed optimizer steps.
            owner: The method's name, to start the message with.
        """
        if self.complete(step):
            return None
        return (
            f"{owner}: finalize() after {step} steps, but the pruning window ends at step "
            f"{self.last_update} ({self.names.end}={self.end}); the final masks were set early. "
            f"Set {self.names.end} to fit the training length"
        )

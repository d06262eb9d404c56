"""The only way time enters the scheduler.

Times are wall-clock epoch seconds (floats), because the daily quota resets at midnight in the
account's time zone. Logic takes a `Clock` (or a `now` argument) and never calls `time.time()`,
so tests move a `FakeClock` instead of sleeping.
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "FakeClock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    def now(self) -> float:
        """Current time, epoch seconds."""
        ...


class SystemClock:
    """The real wall clock."""

    __slots__ = ()

    def now(self) -> float:
        return time.time()


class FakeClock:
    """A clock that only moves when told to; for tests and simulations."""

    __slots__ = ("_now",)

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        """Move forward by `seconds` (>= 0) and return the new time."""
        if seconds < 0:
            raise ValueError(f"a clock cannot go back: advance({seconds})")
        self._now += seconds
        return self._now

    def set(self, t: float) -> None:
        """Jump to `t` (tests may also move backwards to model a wall-clock step)."""
        self._now = float(t)

    def __repr__(self) -> str:
        return f"FakeClock({self._now!r})"

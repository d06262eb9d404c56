"""The emulator's rate limits: HubSpot's plans, the rolling window per token, the daily budget.

Pure and clock-injected: every method takes `now` (seconds); nothing here sleeps or reads time.
"""

from __future__ import annotations

import math
from collections import deque

from crm.plans import PLANS, Plan

__all__ = ["PLANS", "DailyBudget", "Plan", "RollingWindow"]


class RollingWindow:
    """At most `limit` accepted calls in ANY interval of `seconds` (exact, not bucketed).

    A call at time t counts for the half-open interval (t - seconds, t]. `peak` is the largest
    number of recorded calls ever seen inside one window, i.e. the figure a test compares to
    the limit to prove it was never exceeded.
    """

    __slots__ = ("_calls", "peak", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._calls: deque[float] = deque()
        self.peak = 0

    def _expire(self, now: float) -> None:
        horizon = now - self.seconds
        calls = self._calls
        while calls and calls[0] <= horizon:
            calls.popleft()

    def count(self, now: float) -> int:
        self._expire(now)
        return len(self._calls)

    def record(self, now: float) -> int:
        """Record one call at `now`; returns the number of calls now inside the window."""
        self._expire(now)
        self._calls.append(now)
        n = len(self._calls)
        if n > self.peak:
            self.peak = n
        return n

    def seconds_until_free(self, now: float, limit: int) -> float:
        """How long until fewer than `limit` calls remain in the window."""
        self._expire(now)
        excess = len(self._calls) - limit
        if excess < 0:
            return 0.0
        return max(0.0, self._calls[excess] + self.seconds - now)


class DailyBudget:
    """Calls per account per UTC day (the emulated account's time zone is UTC)."""

    __slots__ = ("_day", "used")

    def __init__(self) -> None:
        self._day = -1
        self.used = 0

    def _roll(self, now: float) -> None:
        day = math.floor(now / 86_400)
        if day != self._day:
            self._day = day
            self.used = 0

    def remaining(self, now: float, limit: int) -> int:
        self._roll(now)
        return max(0, limit - self.used)

    def record(self, now: float) -> None:
        self._roll(now)
        self.used += 1

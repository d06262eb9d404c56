"""DailyQuota: the account's daily call budget, reset at midnight in the account's time zone."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

__all__ = ["DailyQuota"]


def next_midnight(now: float, tz: dt.tzinfo) -> float:
    """Epoch seconds of the first local midnight strictly after `now` in `tz`."""
    local = dt.datetime.fromtimestamp(now, tz)
    tomorrow = local.date() + dt.timedelta(days=1)
    return dt.datetime.combine(tomorrow, dt.time(0), tzinfo=tz).timestamp()


class DailyQuota:
    """At most `limit - headroom` calls per local day; `reserve(now)` like RollingWindow."""

    def __init__(self, limit: int, tz: str = "UTC", *, headroom: int = 0) -> None:
        if limit - headroom <= 0:
            raise ValueError(
                f"a daily quota of {limit} calls with {headroom} held back can never grant a "
                "call; configure a larger limit or a smaller headroom"
            )
        self._limit = limit
        self._headroom = headroom
        self._tz = ZoneInfo(tz)
        self._used = 0
        self._resets_at = float("-inf")
        self._blocked_until = float("-inf")

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def capacity(self) -> int:
        return self._limit - self._headroom

    def resets_at(self, now: float) -> float:
        """When the current day's budget resets."""
        self._roll(now)
        return self._resets_at

    def _roll(self, now: float) -> None:
        if now >= self._resets_at:
            self._used = 0
            self._resets_at = next_midnight(now, self._tz)

    def used(self, now: float) -> int:
        self._roll(now)
        return self._used

    def remaining(self, now: float) -> int:
        return max(0, self.capacity - self.used(now))

    def wait_time(self, now: float) -> float:
        if now < self._blocked_until:
            return self._blocked_until - now
        self._roll(now)
        if self._used < self.capacity:
            return 0.0
        return self._resets_at - now

    def reserve(self, now: float) -> float:
        """0.0: one call granted and counted; > 0: seconds until the reset (or end of block)."""
        wait = self.wait_time(now)
        if wait == 0.0:
            self._used += 1
        return wait

    def release(self, now: float) -> None:
        """Give back an unused grant made today."""
        self._roll(now)
        if self._used:
            self._used -= 1

    def observe(
        self, *, now: float, limit: int | None = None, remaining: int | None = None
    ) -> None:
        """Learn from `X-HubSpot-RateLimit-Daily/-Daily-Remaining` (None: header absent)."""
        self._roll(now)
        if limit is not None and limit > self._headroom and limit != self._limit:
            self._limit = limit
        if remaining is not None and remaining >= 0:
            self._used = max(self._used, self._limit - remaining)

    def refused(self, now: float, retry_after: float | None = None) -> None:
        """A 429 DAILY: nothing more today; Retry-After, when sent, is the server's word."""
        self._roll(now)
        if retry_after is not None:
            self._blocked_until = max(self._blocked_until, now + retry_after)
        else:
            self._used = max(self._used, self._limit)

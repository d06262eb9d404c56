"""TokenBudget: everything one access token may spend, for the RateGovernor to consult.

One RollingWindow (per app/token burst limit) and one DailyQuota (per account) together; a call
is granted only when both have room, and both are charged. HubSpot's headers refine both, and a
429 is routed by its `policyName` (see docs/hubspot-api.md section 3.3):

- `TEN_SECONDLY_ROLLING` (and `SECONDLY`, or an unknown policy): block the window for a full
  interval from the refusal (or Retry-After, if longer);
- `DAILY`: wait until the daily reset (or Retry-After, when HubSpot sends one).
"""

from __future__ import annotations

from scheduler.daily import DailyQuota
from scheduler.window import RollingWindow

__all__ = ["TokenBudget"]

DAILY_POLICY = "DAILY"


class TokenBudget:
    def __init__(self, window: RollingWindow, daily: DailyQuota | None = None) -> None:
        self.window = window
        self.daily = daily

    @classmethod
    def for_plan(
        cls,
        per_interval: int = 100,
        per_day: int | None = 250_000,
        *,
        interval: float = 10.0,
        tz: str = "UTC",
        headroom: int = 0,
        daily_headroom: int = 0,
    ) -> TokenBudget:
        """E.g. Free/Starter 100 / 250,000; Professional 190 / 625,000; Enterprise 190 /
        1,000,000; the API add-on 250 per 10 s (ARCHITECTURE.md)."""
        daily = None if per_day is None else DailyQuota(per_day, tz, headroom=daily_headroom)
        return cls(RollingWindow(per_interval, interval, headroom=headroom), daily)

    def wait_time(self, now: float) -> float:
        """Seconds until a call could be granted; 0.0 if now. Records nothing."""
        wait = self.window.wait_time(now)
        if self.daily is not None:
            wait = max(wait, self.daily.wait_time(now))
        return wait

    def reserve(self, now: float) -> float:
        """0.0: one call granted and charged to both limits; > 0: seconds to wait."""
        wait = self.wait_time(now)
        if wait == 0.0:
            self.window.reserve(now)
            if self.daily is not None:
                self.daily.reserve(now)
        return wait

    def release(self, granted_at: float, now: float) -> None:
        """Give back a grant that was not used (nothing was due by the time it came)."""
        self.window.release(granted_at)
        if self.daily is not None:
            self.daily.release(now)

    def observe(
        self,
        *,
        now: float,
        max: int | None = None,
        remaining: int | None = None,
        interval_ms: int | None = None,
        daily: int | None = None,
        daily_remaining: int | None = None,
    ) -> None:
        """Learn from one response's `X-HubSpot-RateLimit-*` headers; None = not sent."""
        self.window.observe(now=now, limit=max, remaining=remaining, interval_ms=interval_ms)
        if self.daily is not None:
            self.daily.observe(now=now, limit=daily, remaining=daily_remaining)

    def refused(
        self, now: float, policy: str | None = None, retry_after: float | None = None
    ) -> float:
        """A 429 with this `policyName`; returns the seconds until the next call may go."""
        if policy is not None and policy.upper() == DAILY_POLICY and self.daily is not None:
            self.daily.refused(now, retry_after)
        else:
            self.window.refused(now, retry_after)
        return self.wait_time(now)

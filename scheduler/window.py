"""RollingWindow: at most `limit` calls in ANY rolling `interval` (HubSpot's 10-second burst limit).

Exact, not approximated: the grant times of the last interval are kept (a deque of at most
`limit` floats). A grant at `t` is allowed only if fewer than `limit` grants lie in
(t - interval, t], so every half-open interval [s, s + interval) holds at most `limit` grants.

`reserve(now)` returns 0.0 when the call is granted (and recorded), or the seconds until a slot
frees (nothing recorded); the caller sleeps that long and asks again. HubSpot's headers refine
the limit (`observe`) and a 429 blocks the window for a full interval (`refused`).
"""

from __future__ import annotations

import bisect
from collections import deque

__all__ = ["RollingWindow"]


class RollingWindow:
    def __init__(self, limit: int, interval: float = 10.0, *, headroom: int = 0) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval}")
        self._interval = float(interval)
        self._headroom = headroom
        self._set_limit(limit)
        self._grants: deque[float] = deque()
        self._blocked_until = float("-inf")

    def _set_limit(self, limit: int) -> None:
        if limit - self._headroom <= 0:
            raise ValueError(
                f"a rolling window of {limit} calls with {self._headroom} held back as headroom "
                "can never grant a call; configure a larger limit or a smaller headroom"
            )
        self._limit = limit

    @property
    def limit(self) -> int:
        """Calls allowed per interval (ours, or the server's once observed)."""
        return self._limit

    @property
    def capacity(self) -> int:
        """Calls this window actually grants per interval: `limit - headroom`."""
        return self._limit - self._headroom

    @property
    def interval(self) -> float:
        return self._interval

    @property
    def blocked_until(self) -> float | None:
        """End of a block after a 429, or None."""
        return None if self._blocked_until == float("-inf") else self._blocked_until

    def _expire(self, now: float) -> None:
        grants, interval = self._grants, self._interval
        while grants and grants[0] + interval <= now:
            grants.popleft()

    def used(self, now: float) -> int:
        """Grants in the interval ending at `now`."""
        self._expire(now)
        return len(self._grants)

    def remaining(self, now: float) -> int:
        return max(0, self.capacity - self.used(now))

    def wait_time(self, now: float) -> float:
        """Seconds until `reserve` would grant; 0.0 if it would now. Records nothing."""
        if now < self._blocked_until:
            return self._blocked_until - now
        self._expire(now)
        excess = len(self._grants) - self.capacity
        if excess < 0:
            return 0.0
        # The grant that must expire for one slot to free up.
        return max(self._grants[excess] + self._interval - now, 0.0) or 1e-9

    def reserve(self, now: float) -> float:
        """0.0: one call granted at `now` and recorded; > 0: seconds to wait, nothing recorded."""
        wait = self.wait_time(now)
        if wait == 0.0:
            if self._grants and now < self._grants[-1]:
                now = self._grants[-1]  # a clock step back must not unsort the deque
            self._grants.append(now)
        return wait

    def release(self, granted_at: float) -> None:
        """Give back a grant that was not used (the newest one made at `granted_at`)."""
        grants = self._grants
        for i in range(len(grants) - 1, -1, -1):
            if grants[i] == granted_at:
                del grants[i]
                return
        if grants and granted_at > grants[-1]:
            grants.pop()

    def newest(self) -> float | None:
        """The latest grant's time (None: none in the window)."""
        return self._grants[-1] if self._grants else None

    def retime(self, granted_at: float, at: float) -> None:
        """Move a grant recorded at `granted_at` to `at` (later or earlier), keeping the grants in
        order; nothing happens if no grant was recorded at `granted_at` (it expired already)."""
        grants = self._grants
        for i in range(len(grants) - 1, -1, -1):
            if grants[i] == granted_at:
                del grants[i]
                grants.insert(bisect.bisect_right(grants, at), at)
                return
            if grants[i] < granted_at:
                return

    def observe(
        self,
        *,
        now: float,
        limit: int | None = None,
        remaining: int | None = None,
        interval_ms: int | None = None,
    ) -> None:
        """Learn from `X-HubSpot-RateLimit-Max/-Remaining/-Interval-Milliseconds`.

        None means the header was absent (unknown), never zero. A server limit different
        from ours is adopted; a server Remaining lower than ours wins: the missing calls are
        counted as made at `now` (the conservative choice, they expire a full interval later).
        """
        if interval_ms is not None and interval_ms > 0:
            self._interval = interval_ms / 1000.0
        if limit is not None and limit - self._headroom > 0 and limit != self._limit:
            self._limit = limit
        if remaining is not None and remaining >= 0:
            self._expire(now)
            missing = (self._limit - remaining) - len(self._grants)
            if missing > 0:
                at = max(now, self._grants[-1]) if self._grants else now
                self._grants.extend([at] * missing)

    def refused(self, now: float, retry_after: float | None = None) -> None:
        """A 429 TEN_SECONDLY_ROLLING: block for a full interval from the refusal, or for
        Retry-After if that is longer, so no retry lands in the window that refused it."""
        wait = self._interval if retry_after is None else max(self._interval, retry_after)
        self._blocked_until = max(self._blocked_until, now + wait)

    def grants(self) -> tuple[float, ...]:
        """Grant times still inside the window (for tests and metrics)."""
        return tuple(self._grants)

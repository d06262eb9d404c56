"""A short history of each activation's calls per 10-second window and lag, kept in memory by the
API server, so the activation page can draw its charts the moment it opens (the status stream
only says what is true now). Sampled every few seconds; the last ten minutes are kept; nothing
is written to Redis and a restart starts it afresh."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec

__all__ = ["History", "HistoryPoint", "point_of"]

log = logging.getLogger("hubsync.console")
SAMPLE_EVERY_S = 2.0
KEEP_POINTS = 300  # ten minutes at one point every 2 s


class HistoryPoint(msgspec.Struct, kw_only=True, array_like=False):
    at: float
    calls_window: int | None
    """Calls the activation's token used in HubSpot's current 10-second window."""
    window_limit: int | None
    calls_today: int | None
    daily_limit: int | None
    lag_s: float | None
    pending: int | None


def point_of(at: float, status: dict[str, Any], budget: dict[str, Any] | None) -> HistoryPoint:
    """One sample from an activation's live status and its token's budget (None: not running)."""
    budget = budget or {}
    limit, left = budget.get("window_limit"), budget.get("window_left")
    daily, daily_left = budget.get("daily_limit"), budget.get("daily_left")
    lag = status.get("lag_s")
    return HistoryPoint(
        at=at,
        calls_window=None if limit is None or left is None else max(0, int(limit) - int(left)),
        window_limit=None if limit is None else int(limit),
        calls_today=None if daily is None or daily_left is None else max(0, daily - daily_left),
        daily_limit=None if daily is None else int(daily),
        lag_s=None if lag is None else round(float(lag), 3),
        pending=status.get("pending"),
    )


class History:
    """Per activation, the last KEEP_POINTS samples."""

    def __init__(self, keep: int = KEEP_POINTS) -> None:
        self._keep = keep
        self._points: dict[str, deque[HistoryPoint]] = {}

    def add(self, activation_id: str, point: HistoryPoint) -> None:
        self._points.setdefault(activation_id, deque(maxlen=self._keep)).append(point)

    def forget_all_but(self, activation_ids: Sequence[str]) -> None:
        for gone in set(self._points) - set(activation_ids):
            del self._points[gone]

    def points(self, activation_id: str) -> list[HistoryPoint]:
        return list(self._points.get(activation_id, ()))

    async def run(
        self,
        views: Callable[[], Awaitable[Sequence[Any]]],
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        every: float = SAMPLE_EVERY_S,
    ) -> None:
        """Sample ``views()`` (the API's activation views) every ``every`` seconds, forever."""
        while True:
            try:
                current = await views()
                now = clock()
                for view in current:
                    self.add(view.id, point_of(now, view.status, view.budget))
                self.forget_all_but([v.id for v in current])
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("console history: sampling failed; trying again")
            await sleep(every)

"""Lanes: realtime changes go before backfill, and backfill never starves.

`LaneSelector` is the one place that decides which lane a grant goes to when both are waiting;
the Coalescer (lanes of one activation) and the FairQueue (lanes across activations) share it.
"""

from __future__ import annotations

import enum

__all__ = ["Lane", "LaneSelector"]


class Lane(enum.StrEnum):
    REALTIME = "realtime"
    BACKFILL = "backfill"


class LaneSelector:
    """Realtime first; when both lanes wait, every `backfill_every`-th grant goes to backfill.

    The counter only advances while both lanes are waiting, so a lone backfill lane gets every
    grant and a lone realtime lane never pays for a backfill that is not there.
    """

    __slots__ = ("_backfill_every", "_streak")

    def __init__(self, backfill_every: int = 5) -> None:
        if backfill_every < 1:
            raise ValueError(f"backfill_every must be >= 1, got {backfill_every}")
        self._backfill_every = backfill_every
        self._streak = 0  # realtime grants in a row while backfill was also waiting

    @property
    def backfill_every(self) -> int:
        return self._backfill_every

    def choose(self, realtime: bool, backfill: bool) -> Lane | None:
        """The lane the next grant goes to, given which lanes have work; None if neither."""
        if realtime and backfill:
            if self._streak + 1 >= self._backfill_every:
                self._streak = 0
                return Lane.BACKFILL
            self._streak += 1
            return Lane.REALTIME
        if realtime:
            return Lane.REALTIME
        if backfill:
            return Lane.BACKFILL
        return None

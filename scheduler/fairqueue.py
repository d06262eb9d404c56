"""FairQueue: calls of the activations sharing one token, shared out fairly.

Deficit round robin per lane: each activation with work gets `weight` calls per round (weights
may be fractional: the deficit carries over), in turn, so a huge backfill of one activation
never delays another's calls by more than one round. Realtime work of every activation goes
before backfill work of any, except that every `backfill_every`-th pop goes to backfill when
both wait (see LaneSelector), so backfills never starve.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Any

from scheduler.lanes import Lane, LaneSelector

__all__ = ["FairQueue"]


class _Ring:
    """Deficit round robin over the activations with work in one lane."""

    __slots__ = ("deficit", "queues", "ring")

    def __init__(self) -> None:
        self.ring: deque[Hashable] = deque()
        self.queues: dict[Hashable, deque[Any]] = {}
        self.deficit: dict[Hashable, float] = {}

    def push(self, aid: Hashable, item: Any) -> None:
        queue = self.queues.get(aid)
        if queue is None:
            self.queues[aid] = queue = deque()
            self.ring.append(aid)
            self.deficit[aid] = 0.0
        queue.append(item)

    def pop(self, weight_of: dict[Hashable, float]) -> tuple[Hashable, Any] | None:
        ring = self.ring
        while ring:
            aid = ring[0]
            if self.deficit[aid] < 1.0:
                self.deficit[aid] += weight_of.get(aid, 1.0)  # a new turn
                if self.deficit[aid] < 1.0:
                    ring.rotate(-1)
                    continue
            queue = self.queues[aid]
            item = queue.popleft()
            self.deficit[aid] -= 1.0
            if not queue:
                ring.popleft()
                del self.queues[aid], self.deficit[aid]
            elif self.deficit[aid] < 1.0:
                ring.rotate(-1)
            return aid, item
        return None

    def remove(self, aid: Hashable) -> list[Any]:
        queue = self.queues.pop(aid, None)
        if queue is None:
            return []
        del self.deficit[aid]
        self.ring.remove(aid)
        return list(queue)

    def __len__(self) -> int:
        return sum(len(q) for q in self.queues.values())


class FairQueue:
    def __init__(self, *, backfill_every: int = 5) -> None:
        self._lanes = {Lane.REALTIME: _Ring(), Lane.BACKFILL: _Ring()}
        self._selector = LaneSelector(backfill_every)
        self._weights: dict[Hashable, float] = {}
        self._len = 0

    def set_weight(self, activation_id: Hashable, weight: float) -> None:
        """Calls per round for this activation (default 1)."""
        if weight <= 0:
            raise ValueError(f"a weight must be > 0, got {weight}")
        self._weights[activation_id] = weight

    def push(self, activation_id: Hashable, lane: Lane, item: Any) -> None:
        """Queue one call request of an activation in a lane."""
        self._lanes[Lane(lane)].push(activation_id, item)
        self._len += 1

    def pop(self) -> tuple[Hashable, Lane, Any] | None:
        """The next request to grant: (activation id, lane, item), or None if empty."""
        rt, bf = self._lanes[Lane.REALTIME], self._lanes[Lane.BACKFILL]
        lane = self._selector.choose(bool(rt.ring), bool(bf.ring))
        if lane is None:
            return None
        popped = self._lanes[lane].pop(self._weights)
        assert popped is not None  # the selector chose a lane with requests: it yields one
        aid, item = popped
        self._len -= 1
        return aid, lane, item

    def remove(self, activation_id: Hashable) -> list[tuple[Lane, Any]]:
        """Drop every request of an activation (it stopped); returns them."""
        out = [
            (lane, item)
            for lane, ring in self._lanes.items()
            for item in ring.remove(activation_id)
        ]
        self._weights.pop(activation_id, None)
        self._len -= len(out)
        return out

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def pending(self, activation_id: Hashable, lane: Lane | None = None) -> int:
        lanes = self._lanes.values() if lane is None else (self._lanes[Lane(lane)],)
        return sum(len(r.queues.get(activation_id, ())) for r in lanes)

    def activations(self) -> set[Hashable]:
        return {aid for ring in self._lanes.values() for aid in ring.queues}

"""Dispatcher: who may make the next HubSpot call with one token, and when. Pure: state and `now`
in, decisions out; no asyncio, no clock of its own (the RateGovernor is the async shell around it).

A call goes in three steps:

1. `request(activation, lane, now)` queues a ticket in the FairQueue (deficit round robin between
   the activations sharing the token, realtime before backfill, backfill never starved).
2. `next_grant(now)` is asked again and again: it answers a `Grant` (the ticket and its `Permit`,
   charged to the TokenBudget), or the seconds to wait before asking again, or None (nothing to
   grant). It holds a grant back while
   - the window or the daily quota is spent, or HubSpot's last 429 blocks the window;
   - a (re)started governor has one probing call out (it knows nothing of the last window until
     HubSpot's headers say what is left: `observe`), for at most `probe_timeout`;
   - backfills would take the last `realtime_reserve` of the window while the token had realtime
     traffic in the last `realtime_memory` seconds.
3. The permit travels with the call and is checked at the last moment, `use(permit, now)`:
   - void if it was granted before HubSpot's last 429 (it must not carry a call into the window
     that refused one), or if the dispatcher does not know it (used already, released, expired,
     or granted by an earlier incarnation of the governor);
   - used late (more than `margin / 2` after its grant: its caller was busy, or the process was
     starved of CPU), it is moved in the window to `now`, since HubSpot counts the call when it
     arrives, or refused if the window has no room now.
   A refused permit means: ask for another. A permit not used is given back (`release`) or
   expires `permit_ttl` after its grant.
4. The answer re-times the grant, `answered(now, permit)`. HubSpot counted the call when it
   arrived, which is some time after we sent it and no later than its answer came back: from then
   on the call counts in our window until `now` + HubSpot's interval. Until its answer comes, a
   call counts from when it was sent for the interval plus `margin`. So a request slowed by a busy
   machine or network (it arrives late, so HubSpot counts it late) keeps its slot for as long as
   HubSpot does, and a fast one frees its slot as soon as HubSpot's does: the window is never
   overrun because requests' delays vary, and never wasted by a margin sized for the slowest.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable

import msgspec

from scheduler.budget import TokenBudget
from scheduler.fairqueue import FairQueue
from scheduler.lanes import Lane

__all__ = ["Dispatcher", "Grant", "Permit"]

# A call counts in HubSpot's window when HubSpot receives it, some time after we grant it; a
# grant also counts this long beyond the window so a slow request never lands in a full window.
WINDOW_MARGIN = 0.25
REALTIME_RESERVE = 0.1  # share of the window backfills leave free while realtime traffic flows
REALTIME_MEMORY = 60.0  # seconds after the last realtime turn that the reserve still applies
PROBE_TIMEOUT = 5.0  # a probing call not answered by then (its caller died): let another go
PROBE_POLL = 0.02  # how often a dispatcher waiting on the probe looks again


class Permit(msgspec.Struct, frozen=True):
    """The right to make one HubSpot call with one token: granted to `activation` for `lane` at
    `granted_at` (epoch seconds), under the dispatcher's `id`. It crosses processes (the
    activation takes it with `turn` and hands it back with its write) and is checked where the
    call is made."""

    id: int
    activation: str
    lane: Lane
    granted_at: float


class Grant(msgspec.Struct, frozen=True):
    """`next_grant`'s decision: the queued ticket served, and the permit it gets."""

    ticket: int
    permit: Permit


class Dispatcher:
    def __init__(
        self,
        budget: TokenBudget,
        *,
        margin: float = WINDOW_MARGIN,
        realtime_reserve: float = REALTIME_RESERVE,
        realtime_memory: float = REALTIME_MEMORY,
        probe_timeout: float = PROBE_TIMEOUT,
        permit_ttl: float | None = None,
        backfill_every: int = 5,
    ) -> None:
        self.budget = budget
        self._margin = margin
        self._realtime_reserve = realtime_reserve
        self._realtime_memory = realtime_memory
        self._probe_timeout = probe_timeout
        # Past this a permit's grant has left our window anyway: nothing left to give back.
        self._permit_ttl = budget.window.interval if permit_ttl is None else permit_ttl
        self._queue = FairQueue(backfill_every=backfill_every)
        self._tickets = itertools.count(1)
        self._ids = itertools.count(1)
        self._withdrawn: set[int] = set()
        self._outstanding: dict[int, Permit] = {}  # granted, neither used nor released yet
        # Permit id -> where its grant stands in the window, while its request awaits an answer.
        self._in_flight: dict[int, float] = {}
        # When HubSpot last refused a call (429): a permit granted before it is void.
        self._refused_at = float("-inf")
        self._warm = False  # HubSpot's headers have told us what is left of the window
        self._probe_at = float("-inf")  # when the probing call was granted
        self._realtime_seen_at = float("-inf")

    # --- the queue -------------------------------------------------------------------------------

    def request(self, activation: str, lane: Lane, now: float, *, data: bool = False) -> int:
        """Queue a request for one permit; returns its ticket. `data`: a turn for the
        activation's own data writes; realtime ones keep the realtime reserve alive (a schema
        call, a read or a retry does not)."""
        lane = Lane(lane)  # a typo raises here, it never means backfill
        if data and lane is Lane.REALTIME:
            self._realtime_seen_at = now
        ticket = next(self._tickets)
        self._queue.push(activation, lane, ticket)
        return ticket

    def withdraw(self, ticket: int) -> None:
        """Its caller stopped waiting: the ticket is skipped, nothing is charged for it."""
        self._withdrawn.add(ticket)

    def withdraw_all(self) -> list[int]:
        """Drop every queued ticket (the token was refused); returns them, to fail their callers."""
        tickets = [
            t
            for activation in list(self._queue.activations())
            for _, t in self._queue.remove(activation)
            if t not in self._withdrawn
        ]
        self._withdrawn.clear()
        return tickets

    @property
    def waiting(self) -> int:
        """Tickets queued (withdrawn ones included until they are skipped)."""
        return len(self._queue)

    # --- granting --------------------------------------------------------------------------------

    def next_grant(self, now: float) -> Grant | float | None:
        """The next permit to hand out now, or the seconds to wait before asking again, or None
        when no ticket waits."""
        self._expire(now)
        if not self._queue:
            self._withdrawn.clear()
            return None
        if not self._warm and now - self._probe_at < self._probe_timeout:
            return PROBE_POLL
        wait = self._backfill_wait(now)
        if wait > 0:
            return wait
        wait = self.budget.reserve(now)
        if wait > 0:
            return wait
        while (popped := self._queue.pop()) is not None:
            activation, lane, ticket = popped
            if ticket in self._withdrawn:
                self._withdrawn.discard(ticket)
                continue
            permit = Permit(next(self._ids), str(activation), lane, now)
            self._outstanding[permit.id] = permit
            if not self._warm:
                self._probe_at = now
            return Grant(ticket, permit)
        self.budget.release(now, now)  # every ticket had been withdrawn: charge nothing
        self._withdrawn.clear()
        return None

    def _backfill_wait(self, now: float) -> float:
        """While some activation of this token has realtime traffic, backfills leave the last
        slots of the window to it, so a huge backfill never makes realtime changes wait a window."""
        if now - self._realtime_seen_at > self._realtime_memory:
            return 0.0
        queue = self._queue
        if any(queue.pending(a, Lane.REALTIME) for a in queue.activations()):
            return 0.0
        window = self.budget.window
        reserve = max(1, int(window.capacity * self._realtime_reserve))
        grants = window.grants()
        excess = len(grants) - (window.capacity - reserve)
        if excess < 0:
            return 0.0
        return max(grants[excess] + window.interval - now, 0.0) or 1e-3

    # --- the permit's life -------------------------------------------------------------------------

    def use(self, permit: Permit, now: float) -> bool:
        """The call is going out now on this permit: True if it may (the permit is spent), False
        if it is void or stale with no room in the window now (ask for another)."""
        if self._outstanding.get(permit.id) != permit:
            return False  # unknown: used, released, expired, or another governor's
        del self._outstanding[permit.id]
        if now - permit.granted_at > self._permit_ttl:
            return False  # expired: its grant has left the window, the call takes a new turn
        if permit.granted_at <= self._refused_at:
            return False  # granted before HubSpot's last 429: its slot stays charged
        if now - permit.granted_at < self._margin / 2:
            self._in_flight[permit.id] = permit.granted_at
            return True
        # Used late: HubSpot counts the call when it arrives, so move it to now in our window,
        # or give it up if the window has no room now.
        window = self.budget.window
        window.release(permit.granted_at)
        if window.reserve(now) != 0.0:
            return False
        self._in_flight[permit.id] = window.newest() or now
        return True

    def release(self, permit: Permit, now: float) -> None:
        """Give back a permit that will not be used: its slot in the budget is free again."""
        if self._outstanding.pop(permit.id, None) != permit:
            return  # used, released or expired already: there is nothing to give back
        self.budget.release(permit.granted_at, now)
        self._probe_at = float("-inf")  # if it was the probe, let another call probe

    def outstanding(self) -> int:
        """Permits granted, neither used nor released nor expired."""
        return len(self._outstanding)

    def _expire(self, now: float) -> None:
        ttl = self._permit_ttl
        stale = [i for i, p in self._outstanding.items() if now - p.granted_at > ttl]
        for i in stale:
            del self._outstanding[i]
        if self._in_flight:  # answers that never came (their caller was cancelled)
            for i in [i for i, at in self._in_flight.items() if now - at > ttl]:
                del self._in_flight[i]

    # --- what HubSpot answered ------------------------------------------------------------------

    def answered(self, now: float, permit: Permit | None = None, *, reply: bool = True) -> None:
        """The request sent on `permit` got its answer now (`reply`), or failed without one. The
        probe, if it was one, is over. The request's grant counts from now on for HubSpot's
        interval after its answer (HubSpot counted it no later), or, with no answer (it may still
        arrive), for a whole window of ours from now."""
        self._probe_at = float("-inf")
        sent_at = None if permit is None else self._in_flight.pop(permit.id, None)
        if sent_at is not None:
            self.budget.window.retime(sent_at, now - self._margin if reply else now)

    def observe(
        self,
        now: float,
        *,
        max: int | None = None,
        remaining: int | None = None,
        interval_ms: int | None = None,
        daily: int | None = None,
        daily_remaining: int | None = None,
    ) -> None:
        """HubSpot's rate-limit headers: from now on the budget knows what is left."""
        self._warm = True
        self.budget.observe(
            now=now,
            max=max,
            remaining=remaining,
            interval_ms=None if interval_ms is None else interval_ms + int(self._margin * 1000),
            daily=daily,
            daily_remaining=daily_remaining,
        )

    def refused(
        self, now: float, policy: str | None = None, retry_after: float | None = None
    ) -> None:
        """A 429: every permit granted until now is void, and the budget waits as the policy says."""
        self._refused_at = now
        self.budget.refused(now, policy, retry_after)

    def activations(self) -> set[Hashable]:
        return self._queue.activations()

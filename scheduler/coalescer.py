"""The Coalescer: one activation's pending HubSpot writes, per contact and property.

It owns the answer to "what must still be written to HubSpot, and in which order":

- For each (contact, property) the change with the highest stream position wins, whatever order
  changes arrive in; a change that is not newer than the pending one, or than the value HubSpot
  is known to hold, is dropped. A pending value equal to the known value is dropped too, and the
  known entry takes its position, so an older change arriving late cannot resurrect anything.
- Contacts wait in two lanes (realtime, backfill) in the order they became pending; `drain`
  hands out the oldest first, each contact at most once per batch and in at most one batch at a
  time (changes for a contact in flight wait until its batch is acknowledged or retried).
- `acknowledge(batch)` records what HubSpot now holds ("known"); `retry(batch)` puts a failed
  batch back in front of its lane without overwriting anything newer.
- With a `DampingPolicy` (see `damping`), a realtime change waits `settle` before it can join a
  batch, and a contact that flaps is held aside (out of its lane, still coalescing) until its
  penalty decays or its hold ceiling passes; then it goes in front of its lane. Held contacts
  count as pending.

Memory layout (see `_records`): per lane an insertion-ordered dict `email bytes -> record` is
the queue; a contact whose pending values all cancel out leaves a tombstone (None) in place
until the head of the queue passes it, and a contact that becomes pending again before that
reuses its place. Arrival times are kept per run of contacts that arrived within `resolution`
seconds of each other (a deque aligned with the queue), never per contact; the head's time is
therefore at most `resolution` early, which only ever makes a flush slightly early.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, cast

import msgspec

from scheduler._records import MAX_POSITION, MAX_PROPERTY_ID, Entry, KeyCodec, RecordCodec
from scheduler.clock import Clock, SystemClock
from scheduler.damping import Damper, DampingPolicy
from scheduler.flush import FlushPolicy
from scheduler.lanes import Lane, LaneSelector

__all__ = [
    "SNAPSHOT_CHUNK",
    "Batch",
    "Coalescer",
    "CoalescerStats",
    "ContactWrite",
    "DampingSnapshot",
    "LaneFront",
    "LaneV1",
    "SnapshotContact",
    "SnapshotHeader",
    "SnapshotV1",
    "SnapshotVersionError",
]

_LANES = (Lane.REALTIME, Lane.BACKFILL)
_SNAPSHOT_VERSION = 1  # to_builtins: one msgpack map, every contact as [email, entries]
_PIECES_VERSION = 2  # snapshot_pieces: a header, then chunks of raw keys and records
SNAPSHOT_CHUNK = 10_000  # contacts per piece: ~2 ms of encoding, ~0.3 MB
_KNOWN, _QUEUE = "k", "q"
_ACK, _RETRY, _DISCARD = 0, 1, 2
# Positions are (ms << 20) | seq; the compact record form covers 2**47 around the base.
_BASE_MARGIN = 1 << 46

Record = int | bytes
_Values = dict[int, tuple[int, str]]  # property id -> (position, value)


class ContactWrite(msgspec.Struct, frozen=True, array_like=True):
    """One input of a HubSpot batch upsert: a contact and the properties to set on it."""

    email: str
    values: tuple[tuple[str, str, int], ...]
    """(property internal name, value, stream position); "" clears the property."""

    @property
    def properties(self) -> dict[str, str]:
        return {name: value for name, value, _ in self.values}


class Batch(msgspec.Struct, frozen=True):
    """Distinct contacts drained together; hand it back with `acknowledge` or `retry`."""

    id: int
    lane: Lane
    contacts: tuple[ContactWrite, ...]
    oldest: float
    """Arrival time of the oldest change in the batch (epoch seconds)."""

    def __len__(self) -> int:
        return len(self.contacts)


class CoalescerStats(msgspec.Struct, frozen=True):
    offered: int
    """Changes offered."""
    coalesced: int
    """Changes that will never be written: superseded, stale, duplicate, or equal to known."""
    written: int
    """Property values acknowledged as written."""
    forgotten: int
    """Pending values dropped by `forget_property`."""
    parked: int
    """Values HubSpot rejected (`discard`)."""
    pending_realtime: int
    pending_backfill: int
    in_flight: int
    known: int
    """Contacts with at least one value known to be in HubSpot."""
    held: int = 0
    """Pending contacts held back by damping (counted in pending_realtime/backfill too)."""
    damped: int = 0
    """Contacts carrying a flap penalty (held or not)."""


# ------------------------------------------------------------------------ snapshot format
#
# What a snapshot holds is typed below; msgspec encodes each Struct as a map of its fields (the
# header) or an array (a piece), in the order they are declared, so version 2 as written before
# these types existed (a plain map, the same keys in the same order) reads as the same Struct,
# and is written again byte for byte: the code before reads what this code writes. Evolve it as
# msgspec's schema evolution allows (new fields with defaults, no field changing type) and bump
# the version on any other change: a reader refuses a version it does not know
# (`SnapshotVersionError`) and its owner rebuilds the state from its log instead.

SnapshotContact = tuple[str, list[Entry]]
"""A contact in a snapshot: its email and its (property id, position, value) entries."""


class SnapshotVersionError(ValueError):
    """A snapshot of a version this code does not read (an older hubsync reading a newer one's,
    say): rebuild the state from the log instead of loading it."""

    def __init__(self, version: object, expected: int) -> None:
        self.version = version
        super().__init__(
            f"unknown Coalescer snapshot version {version!r} (this hubsync reads version "
            f"{expected}); rebuild the activation state from its log"
        )


class LaneFront(msgspec.Struct, frozen=True):
    """A lane's front: contacts that go before its queue (retried, in flight at the cut,
    held), and the arrival time of the oldest of them."""

    front_since: float | None
    front: list[SnapshotContact]


class LaneV1(msgspec.Struct, frozen=True):
    """A lane in version 1: its front and its queue, as (arrival time, contacts) runs."""

    front_since: float | None
    front: list[SnapshotContact]
    queue: list[tuple[float, list[SnapshotContact]]]


class DampingSnapshot(msgspec.Struct, frozen=True):
    """The damping state: flap penalties (email, penalty, at, held since) and who is held."""

    penalties: list[tuple[str, float, float, float | None]]
    held: list[str]


class SnapshotHeader(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The first piece of a version 2 snapshot: everything but the known values and the
    lanes' queues, which follow in `_Piece`s. Positions in entries are absolute; property ids
    index `properties` (None: a property forgotten since)."""

    version: int
    base: int | None  # the record codec's base position (None: nothing offered yet)
    properties: list[str | None]
    next_batch: int
    counters: tuple[int, int, int, int, int]  # offered, coalesced, written, forgotten, parked
    damping: DampingSnapshot | None = None  # absent without damping
    lanes: tuple[LaneFront, LaneFront]  # realtime, backfill
    known_extra: list[SnapshotContact]  # known values of contacts in flight, after a retry
    domains: list[str]  # the KeyCodec's interned domains: piece keys refer to them


class SnapshotV1(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Version 1 (`Coalescer.to_builtins`): the whole state in one map, every contact by email."""

    version: int
    base: int | None
    properties: list[str | None]
    next_batch: int
    counters: tuple[int, int, int, int, int]
    damping: DampingSnapshot | None = None
    known: list[SnapshotContact]
    lanes: tuple[LaneV1, LaneV1]


class _Versioned(msgspec.Struct):
    version: object = None


_version_decoder = msgspec.msgpack.Decoder(_Versioned)
_header_decoder = msgspec.msgpack.Decoder(SnapshotHeader)


def _check_version(version: object, expected: int) -> None:
    if version != expected or isinstance(version, bool):
        raise SnapshotVersionError(version, expected)


def _lane_index(lane: Lane) -> int:
    if lane == Lane.REALTIME:
        return 0
    if lane == Lane.BACKFILL:
        return 1
    raise ValueError(f"unknown lane {lane!r}: a lane is {' or '.join(map(repr, Lane))}")


class Coalescer:
    """Pending changes of one activation, coalesced per contact and property (see module doc)."""

    def __init__(
        self,
        clock: Clock | None = None,
        policy: FlushPolicy | None = None,
        *,
        resolution: float | None = None,
        damping: DampingPolicy | None = None,
    ) -> None:
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._policy = policy if policy is not None else FlushPolicy()
        self._resolution = (
            resolution if resolution is not None else min(0.01, self._policy.linger / 10)
        )
        self._selector = LaneSelector(self._policy.backfill_every)
        self._codec: RecordCodec | None = None
        self._keys = KeyCodec()
        self._prop_ids: dict[str, int] = {}
        self._prop_names: list[str | None] = []
        self._known: dict[bytes, Record] = {}
        self._queue: list[dict[bytes, Record | None]] = [{}, {}]
        self._runs: list[deque[list[float]]] = [deque(), deque()]  # [since, count]
        self._holes = [0, 0]
        self._front: list[dict[bytes, Record]] = [{}, {}]  # retried: before the queue
        self._front_since: list[float | None] = [None, None]
        self._count = [0, 0]  # pending contacts (front + live queue entries)
        # In flight: key -> (batch id, lane index, record sent); changes meanwhile wait aside.
        self._inflight: dict[bytes, tuple[int, int, Record]] = {}
        self._blocked: dict[bytes, tuple[int, list[Entry], float]] = {}
        self._next_batch = 1
        self._offered = 0
        self._coalesced = 0
        self._written = 0
        self._forgotten = 0
        self._parked = 0
        # Damping: penalties of contacts that flipped, the pending values of those held
        # (key -> [lane index, record, since]) and when to look at each hold again (a heap).
        self._damper = Damper(damping) if damping is not None else None
        self._settle = damping.settle if damping is not None else 0.0
        self._held: dict[bytes, list[Any]] = {}
        self._releases: list[tuple[float, bytes]] = []
        # Released and not drained yet: not held again before they are written, so that the
        # ceiling really bounds how long a contact that never stops flipping goes unwritten.
        self._released: set[bytes] = set()

    # ------------------------------------------------------------------ intake

    def offer(
        self,
        email: str,
        prop: str,
        value: str,
        position: int,
        lane: Lane = Lane.REALTIME,
    ) -> None:
        """Offer one change: set `prop` of contact `email` to `value` as of `position`."""
        self.offer_all(((email, prop, value, position),), lane)

    def offer_all(
        self,
        changes: Iterable[tuple[str, str, str, int]],
        lane: Lane = Lane.REALTIME,
        *,
        force: bool = False,
    ) -> None:
        """Offer (email, property, value, position) changes of any contacts, in order: the same
        as `offer` (or `offer_many` with ``force``) for each, with what they share worked out
        once (the lane, and one arrival time: they arrived together). The intake's path: a
        Router step's changes, or a page of a backfill, at once."""
        li = _lane_index(lane)
        now = self._clock.now()
        key_of = self._keys.key
        prop_ids = self._prop_ids
        for email, prop, value, position in changes:
            if not 0 <= position <= MAX_POSITION:
                raise ValueError(f"position must be in [0, 2**63), got {position}")
            pid = prop_ids.get(prop)
            if pid is None:
                pid = self._intern(prop)
            self._offer_entries(key_of(email), [(pid, position, value)], li, now, force=force)

    def offer_many(
        self,
        email: str,
        changes: Iterable[tuple[str, str, int]],
        lane: Lane = Lane.REALTIME,
        *,
        force: bool = False,
    ) -> None:
        """Offer several (property, value, position) changes of one contact.

        ``force`` re-sends values HubSpot is known to hold already (a resync after someone
        edited HubSpot by hand): equal values and the known position itself are sent again;
        anything older than what is known is still dropped.
        """
        li = _lane_index(lane)
        entries: list[Entry] = []
        for prop, value, position in changes:
            if not 0 <= position <= MAX_POSITION:
                raise ValueError(f"position must be in [0, 2**63), got {position}")
            entries.append((self._intern(prop), position, value))
        if entries:
            self._offer_entries(self._keys.key(email), entries, li, self._clock.now(), force=force)

    def _offer_entries(
        self, key: bytes, entries: list[Entry], li: int, now: float, *, force: bool = False
    ) -> None:
        """Fold one contact's checked entries (property ids interned) into its pending values."""
        self._offered += len(entries)
        if self._codec is None:
            self._codec = RecordCodec(max(0, entries[0][1] - _BASE_MARGIN))

        if key in self._inflight:
            # Resolved against what the batch in flight turns out to have done.
            held = self._blocked.get(key)
            if held is None:
                self._blocked[key] = (li, entries, now)
            else:
                held[1].extend(entries)
                if li < held[0]:
                    self._blocked[key] = (li, held[1], held[2])
            return

        where, record = self._find(key)
        hold = self._held.get(key)
        if hold is not None:
            record = hold[1]
        pending = self._values(record) if record is not None else {}
        known_rec = self._known.get(key)
        known = self._values(known_rec) if known_rec is not None else {}
        known_changed, flips, changed = self._merge(known, pending, entries, force=force)
        if known_changed:
            self._known[key] = self._encode(known)
        damper = self._damper
        if damper is not None:
            if key in self._released:
                if not pending:
                    self._released.discard(key)  # flipped back: nothing left to write
                elif not force and (flips or changed):
                    damper.count(key, now)  # counted, but it goes out before it is held again
            elif not force and (flips or (changed and damper.tracks(key))):
                was_held = damper.held(key)
                if damper.flip(key, now) and not was_held:
                    # held now, so release_at is a time, never None
                    heapq.heappush(self._releases, (cast(float, damper.release_at(key)), key))
            if damper.held(key):
                self._hold(key, where, hold, pending, li, now)
                return
        self._place(key, where, pending, li, now)

    # ------------------------------------------------------------------ flush policy

    @property
    def policy(self) -> FlushPolicy:
        return self._policy

    @property
    def damping(self) -> DampingPolicy | None:
        return None if self._damper is None else self._damper.policy

    def pending(self, lane: Lane | None = None) -> int:
        """Pending contacts in `lane`, or in both lanes, held ones included (not counting those
        in flight)."""
        held = self._held_count()
        if lane is None:
            return self._count[0] + self._count[1] + held[0] + held[1]
        li = _lane_index(lane)
        return self._count[li] + held[li]

    def __len__(self) -> int:
        return self.pending()

    def held(self) -> int:
        """Pending contacts held back by damping."""
        return len(self._held)

    def hold_of(self, email: str) -> tuple[float, float] | None:
        """(since, until) of the damping hold of `email`: when it began, and when it ends unless
        the contact flips again (at most `max_hold` after it began); None if not held."""
        if self._damper is None:
            return None
        key = self._keys.find(email)
        if key is None:
            return None
        until = self._damper.release_at(key)
        since = self._damper.held_since(key)
        return None if until is None or since is None else (since, until)

    def oldest(self, lane: Lane) -> float | None:
        """When the oldest pending change of `lane` arrived (never later than the truth)."""
        li = _lane_index(lane)
        if not self._count[li]:
            return None
        since = self._front_since[li] if self._front[li] else None
        if self._live_in_queue(li):
            self._trim(li)
            head = self._runs[li][0][0]
            since = head if since is None else min(since, head)
        return since

    def due_at(self, lane: Lane, now: float | None = None) -> float | None:
        """When `lane` has a batch to send: now-or-past if full, else oldest + linger.

        With damping, realtime changes count from `settle` after they arrived: "full" means
        that many contacts have settled, and the linger starts when the first one has."""
        li = _lane_index(lane)
        settle = self._settle if li == 0 else 0.0
        if not settle:
            since = self.oldest(lane)
            if since is None:
                return None
            if self._count[li] >= self._policy.batch_size:
                return since
            return since + self._policy.linger
        if not self._count[li]:
            return None
        now = self._clock.now() if now is None else now
        front = self._front[li]
        first = self._front_since[li] if front else None
        settled = len(front)
        if self._live_in_queue(li):
            self._trim(li)
            head = self._runs[li][0][0] + settle
            first = head if first is None else min(first, head)
            settled += self._settled(li, now - settle, self._policy.batch_size - settled)
        if first is None:
            return None
        if settled >= self._policy.batch_size:
            return first
        return first + self._policy.linger

    def next_flush_at(self) -> float | None:
        """The earliest time any lane has a batch due, or a held contact is to be looked at
        again; None when nothing is pending."""
        now = self._clock.now()
        self._release_due(now)
        times = [
            t
            for t in (self.due_at(Lane.REALTIME, now), self.due_at(Lane.BACKFILL, now))
            if t is not None
        ]
        if self._releases:
            times.append(self._releases[0][0])
        return min(times) if times else None

    def due_lanes(self, now: float | None = None) -> tuple[Lane, ...]:
        """The lanes with a batch due at `now` (default: the clock), realtime first."""
        now = self._clock.now() if now is None else now
        self._release_due(now)
        return tuple(
            lane for lane in _LANES if (at := self.due_at(lane, now)) is not None and at <= now
        )

    def ready(self, now: float | None = None) -> bool:
        """True when some lane has a batch due at `now`."""
        return bool(self.due_lanes(now))

    def take(self, now: float | None = None, *, force: bool = False) -> Batch | None:
        """Drain the next batch for a grant: the lane is chosen by the LaneSelector among due
        lanes (all non-empty lanes with `force`, held contacts released, unsettled ones
        included); None if nothing is due."""
        if force:
            self.release_held()
            rt, bf = self._count[0] > 0, self._count[1] > 0
        else:
            due = self.due_lanes(now)
            rt, bf = Lane.REALTIME in due, Lane.BACKFILL in due
        lane = self._selector.choose(rt, bf)
        if lane is None:
            return None
        return self.drain(self._policy.batch_size, lane=lane, now=now, settled_only=not force)

    def release_held(self) -> int:
        """End every damping hold now (their contacts go in front of their lanes); returns how
        many pending contacts were released. For a final flush."""
        if self._damper is None:
            return 0
        released = len(self._held)
        for _, key in self._releases:
            self._damper.release(key)  # held ones with nothing pending too
        for key, hold in self._held.items():
            self._damper.release(key)
            self._unhold(key, hold)
        self._held.clear()
        self._releases.clear()
        self._released.clear()
        return released

    # ------------------------------------------------------------------ drain and outcome

    def drain(
        self,
        n: int,
        lane: Lane = Lane.REALTIME,
        *,
        now: float | None = None,
        settled_only: bool = True,
    ) -> Batch | None:
        """Up to `n` distinct contacts of `lane`, oldest first, now in flight; None if empty.
        With damping, realtime changes younger than `settle` stay (unless not `settled_only`)."""
        li = _lane_index(lane)
        if n < 1 or not self._count[li]:
            return None
        cutoff = math.inf
        if li == 0 and self._settle and settled_only:
            cutoff = (self._clock.now() if now is None else now) - self._settle
        taken: list[tuple[bytes, Record]] = []
        oldest = math.inf
        front = self._front[li]
        live_in_queue = self._count[li] > len(front)
        if front:
            oldest = self._front_since[li]  # type: ignore[assignment]
            for key in list(itertools.islice(front, n)):
                taken.append((key, front.pop(key)))
            if not front:
                self._front_since[li] = None
        queue = self._queue[li]
        if len(taken) < n and live_in_queue:
            self._trim(li)
            queue = self._queue[li]
            runs = self._runs[li]
            if runs[0][0] <= cutoff:
                oldest = min(oldest, runs[0][0])
            settled = True
            while settled and len(taken) < n and queue:
                for key in list(itertools.islice(queue, n - len(taken) + 16)):
                    run = runs[0]
                    if run[0] > cutoff:
                        settled = False  # the rest arrived later still
                        break
                    record = queue.pop(key)
                    self._holes[li] += 1
                    run[1] -= 1
                    if not run[1]:
                        runs.popleft()
                    if record is not None:
                        taken.append((key, record))
                        if len(taken) == n:
                            break
            self._compact(li)
        if not taken:
            return None
        self._count[li] -= len(taken)
        batch_id = self._next_batch
        self._next_batch += 1
        # queued records name no forgotten (None) property: forget_property strips them
        names = cast("list[str]", self._prop_names)
        contacts = []
        released = self._released
        for key, record in taken:
            released.discard(key)
            self._inflight[key] = (batch_id, li, record)
            values = tuple((names[prop], value, pos) for prop, pos, value in self._decode(record))
            contacts.append(ContactWrite(self._keys.email(key), values))
        return Batch(batch_id, _LANES[li], tuple(contacts), oldest)

    def acknowledge(self, batch: Batch, only: Iterable[str] | None = None) -> None:
        """HubSpot holds the batch's values now (or only those of the contacts in `only`):
        record them as known, unless superseded. Idempotent."""
        self._resolve(batch, only, _ACK)

    def retry(self, batch: Batch, only: Iterable[str] | None = None) -> None:
        """The batch (or `only` these contacts) was not written, or may not have been: its
        contacts go back in front of their lane, and a newer change that arrived meanwhile
        wins over the value that was sent. Idempotent."""
        self._resolve(batch, only, _RETRY)

    restore = retry  # "put the failed batch back"

    def discard(self, batch: Batch, only: Iterable[str] | None = None) -> None:
        """HubSpot rejected these contacts' inputs (parked as bad input): nothing was written,
        nothing is retried; changes that arrived meanwhile stay pending."""
        self._resolve(batch, only, _DISCARD)

    def _resolve(self, batch: Batch, only: Iterable[str] | None, outcome: int) -> None:
        chosen = None if only is None else set(only)
        for contact in batch.contacts:
            if chosen is not None and contact.email not in chosen:
                continue
            key = self._keys.find(contact.email)
            if key is None:
                continue  # never offered
            flight = self._inflight.get(key)
            if flight is None or flight[0] != batch.id:
                continue  # resolved twice, or not ours
            del self._inflight[key]
            known_rec = self._known.get(key)
            known = self._values(known_rec) if known_rec is not None else {}
            sent = [e for e in self._decode(flight[2]) if self._prop_names[e[0]] is not None]
            if outcome == _ACK:
                for prop, pos, value in sent:
                    self._written += 1
                    held = known.get(prop)
                    if held is None or held[0] < pos:
                        known[prop] = (pos, value)
                sent = []
            elif outcome == _RETRY:
                # A failed call may still have been applied: HubSpot's value is unknown until
                # the resend is acknowledged. The pending resend (newer than the old known
                # position) now guards against late older changes.
                for prop, _, _ in sent:
                    known.pop(prop, None)
            else:
                self._parked += len(sent)
                sent = []
            self._release_blocked(key, known, sent, flight[1], batch.oldest)

    def in_flight(self) -> int:
        """Contacts drained and neither acknowledged nor retried yet."""
        return len(self._inflight)

    # ------------------------------------------------------------------ queries and upkeep

    def known_value(self, email: str, prop: str) -> tuple[str, int] | None:
        """(value, position) HubSpot is known to hold for this contact property, or None."""
        pid = self._prop_ids.get(prop)
        key = self._keys.find(email)
        record = None if key is None else self._known.get(key)
        if pid is None or record is None:
            return None
        held = self._values(record).get(pid)
        return None if held is None else (held[1], held[0])

    def pending_values(self, email: str) -> dict[str, tuple[str, int]]:
        """The pending {property: (value, position)} of one contact (queued, retried or held)."""
        key = self._keys.find(email)
        if key is None:
            return {}
        _, record = self._find(key)
        if record is None and key in self._held:
            record = self._held[key][1]
        if record is None:
            return {}
        return {self._prop_names[p]: (v, pos) for p, pos, v in self._decode(record)}  # type: ignore[misc]

    def forget_property(self, prop: str) -> None:
        """Drop `prop` everywhere (its audience or attribute was removed from the activation);
        values of it in flight are neither recorded nor retried."""
        pid = self._prop_ids.pop(prop, None)
        if pid is None:
            return
        self._prop_names[pid] = None

        def strip(record: Record) -> tuple[Record | None, int]:
            entries = self._decode(record)
            kept = [e for e in entries if e[0] != pid]
            if len(kept) == len(entries):
                return record, 0
            return (self._encode_entries(kept) if kept else None), len(entries) - len(kept)

        for li in (0, 1):
            queue = self._queue[li]
            for key, record in queue.items():
                if record is not None:
                    new, dropped = strip(record)
                    if dropped:
                        queue[key] = new
                        self._forgotten += dropped
                        self._count[li] -= new is None
            front = self._front[li]
            for key in list(front):
                new, dropped = strip(front[key])
                if dropped:
                    self._forgotten += dropped
                    if new is None:
                        del front[key]
                        self._count[li] -= 1
                    else:
                        front[key] = new
        for key, hold in list(self._held.items()):
            new, dropped = strip(hold[1])
            self._forgotten += dropped
            if new is None:
                del self._held[key]
            else:
                hold[1] = new
        for key in list(self._known):
            new, _ = strip(self._known[key])
            if new is None:
                del self._known[key]
            else:
                self._known[key] = new
        for held in self._blocked.values():
            before = len(held[1])
            held[1][:] = [e for e in held[1] if e[0] != pid]
            self._forgotten += before - len(held[1])

    def stats(self) -> CoalescerStats:
        held = self._held_count()
        return CoalescerStats(
            offered=self._offered,
            coalesced=self._coalesced,
            written=self._written,
            forgotten=self._forgotten,
            parked=self._parked,
            pending_realtime=self._count[0] + held[0],
            pending_backfill=self._count[1] + held[1],
            in_flight=len(self._inflight),
            known=len(self._known),
            held=held[0] + held[1],
            damped=0 if self._damper is None else len(self._damper),
        )

    # ------------------------------------------------------------------ snapshots

    def to_builtins(self) -> dict[str, Any]:
        """Plain, msgpack-able state: `SnapshotV1` as builtins (format version 1, one map, every
        contact as [email, entries]; `snapshot` writes version 2). Contacts in flight are saved
        as if their batch had failed (they go back in front of their lane): resending is
        harmless, losing is not."""
        fronts, known_after = self._fronts()
        lanes: list[LaneV1] = []
        for li in (0, 1):
            queue: list[tuple[float, list[SnapshotContact]]] = []
            items = iter(self._queue[li].items())
            for since, count in self._runs[li]:
                group = [
                    (self._keys.email(k), self._decode(r))
                    for k, r in itertools.islice(items, int(count))
                    if r is not None
                ]
                if group:
                    queue.append((since, group))
            lanes.append(LaneV1(fronts[li].front_since, fronts[li].front, queue))
        known_out = [
            (self._keys.email(k), self._decode(r))
            for k, r in self._known.items()
            if k not in known_after
        ]
        known_out.extend(_known_extra(known_after, self._keys))
        snap = SnapshotV1(
            version=_SNAPSHOT_VERSION,
            base=None if self._codec is None else self._codec.base,
            properties=list(self._prop_names),
            next_batch=self._next_batch,
            counters=self._counters(),
            damping=self._damping_out(),
            known=known_out,
            lanes=(lanes[0], lanes[1]),
        )
        return cast(dict[str, Any], msgspec.to_builtins(snap))

    def _counters(self) -> tuple[int, int, int, int, int]:
        return (self._offered, self._coalesced, self._written, self._forgotten, self._parked)

    def _damping_out(self) -> DampingSnapshot | None:
        if self._damper is None:
            return None
        return DampingSnapshot(
            penalties=[
                (self._keys.email(key.encode()), penalty, at, held_since)
                for key, penalty, at, held_since in self._damper.to_builtins()
            ],
            held=[self._keys.email(k) for k in self._held],
        )

    def _fronts(self) -> tuple[tuple[LaneFront, LaneFront], dict[bytes, _Values]]:
        """Each lane's front as a snapshot holds it: the contacts retried, then those in flight
        (resolved as `retry` would) and the held ones; and the known values of the contacts in
        flight as that retry leaves them. It observes: nothing in the Coalescer changes."""
        fronts: list[list[SnapshotContact]] = [
            [(self._keys.email(k), self._decode(r)) for k, r in self._front[li].items()]
            for li in (0, 1)
        ]
        since_of: list[float | None] = list(self._front_since)

        def put(li: int, contact: SnapshotContact, at: float) -> None:
            fronts[li].append(contact)
            fs = since_of[li]
            since_of[li] = at if fs is None else min(fs, at)

        known_after: dict[bytes, _Values] = {}
        for key, (_, li, record) in self._inflight.items():
            known_rec = self._known.get(key)
            known = self._values(known_rec) if known_rec is not None else {}
            sent = [e for e in self._decode(record) if self._prop_names[e[0]] is not None]
            for prop, _, _ in sent:
                known.pop(prop, None)
            pending: _Values = {}
            self._merge(known, pending, sent, count=False)
            lane_i, since = li, None
            held = self._blocked.get(key)
            if held is not None:
                self._merge(known, pending, held[1], count=False)
                lane_i, since = min(li, held[0]), held[2]
            known_after[key] = known
            if pending:
                entries = [(p, pos, v) for p, (pos, v) in pending.items()]
                at = since if since is not None else self._clock.now()
                put(lane_i, (self._keys.email(key), entries), at)
        # Held contacts are saved in front of their lane, and listed apart: a Coalescer
        # without damping (or older code) writes them, one with damping holds them again.
        for key, (li, record, since) in self._held.items():
            put(li, (self._keys.email(key), self._decode(record)), since)
        lanes = (LaneFront(since_of[0], fronts[0]), LaneFront(since_of[1], fronts[1]))
        return lanes, known_after

    def snapshot(self) -> bytes:
        """The state as one bytes object: `snapshot_pieces` framed as a msgpack array."""
        return msgspec.msgpack.encode(list(self.snapshot_pieces()))

    def snapshot_pieces(self, chunk: int = SNAPSHOT_CHUNK) -> Iterator[bytes]:
        """The state at this moment (format version 2) as pieces to store in order: a
        `SnapshotHeader`, then the known values and the lanes' queues, `chunk` contacts per
        piece.

        The cut is taken now, in this call: shallow copies of the big dicts (their keys and
        records are immutable, so a copy is a frozen view; C speed, ~15-30 ns per contact) and
        the small state. The pieces are encoded as the iterator is consumed, so an
        async caller can yield to its event loop between pieces while changes keep arriving;
        they do not reach the pieces.
        """
        if chunk < 1:
            raise ValueError(f"chunk must be at least 1, got {chunk}")
        fronts, known_after = self._fronts()
        header = SnapshotHeader(
            version=_PIECES_VERSION,
            base=None if self._codec is None else self._codec.base,
            properties=list(self._prop_names),
            next_batch=self._next_batch,
            counters=self._counters(),
            damping=self._damping_out(),
            lanes=fronts,
            known_extra=list(_known_extra(known_after, self._keys)),
            domains=self._keys.domains,
        )
        # Dict copies, not lists of keys and records: half the time to make, but a list of a
        # million is a young container the next gc collections walk (~30 ms each, on this
        # loop), while a copy of a dict of bytes and ints is untracked like the original. Run
        # counts change in place: copied as pairs.
        known = (dict(self._known), set(known_after))
        queues = [
            (dict(self._queue[li]), [(since, int(n)) for since, n in self._runs[li]])
            for li in (0, 1)
        ]
        return _encode_pieces(_encode_piece(header), known, queues, chunk)

    @classmethod
    def from_builtins(
        cls,
        data: dict[str, Any] | SnapshotV1,
        clock: Clock | None = None,
        policy: FlushPolicy | None = None,
        *,
        resolution: float | None = None,
        damping: DampingPolicy | None = None,
    ) -> Coalescer:
        """Restore `to_builtins` output (version 1); snapshots without damping state (older
        ones) load too. Raises `SnapshotVersionError` for another version, `ValueError` for a
        map that is not a snapshot."""
        if isinstance(data, SnapshotV1):
            snap = data
        else:
            _check_version(
                data.get("version") if isinstance(data, dict) else None, _SNAPSHOT_VERSION
            )
            try:
                snap = msgspec.convert(data, SnapshotV1)
            except msgspec.ValidationError as exc:
                raise ValueError(f"not a Coalescer snapshot (version 1): {exc}") from None
        _check_version(snap.version, _SNAPSHOT_VERSION)
        self = cls(clock, policy, resolution=resolution, damping=damping)
        self._restore_small(snap.base, snap.properties, snap.next_batch, snap.counters)
        for email, entries in snap.known:
            self._known[self._keys.key(email)] = self._encode_entries(entries)
        for li, lane in enumerate(snap.lanes):
            for since, group in lane.queue:
                for email, entries in group:
                    self._queue[li][self._keys.key(email)] = self._encode_entries(entries)
                self._runs[li].append([since, len(group)])
        self._restore_fronts(snap.lanes, snap.damping)
        return self

    @classmethod
    def from_snapshot(
        cls,
        data: bytes,
        clock: Clock | None = None,
        policy: FlushPolicy | None = None,
        *,
        resolution: float | None = None,
        damping: DampingPolicy | None = None,
    ) -> Coalescer:
        decoded = msgspec.msgpack.decode(data)
        if isinstance(decoded, list):  # version 2: the pieces, framed
            return cls.from_pieces(decoded, clock, policy, resolution=resolution, damping=damping)
        return cls.from_builtins(decoded, clock, policy, resolution=resolution, damping=damping)

    @classmethod
    def from_pieces(
        cls,
        pieces: Iterable[bytes],
        clock: Clock | None = None,
        policy: FlushPolicy | None = None,
        *,
        resolution: float | None = None,
        damping: DampingPolicy | None = None,
    ) -> Coalescer:
        """Restore `snapshot_pieces` output (all of it, in order). Raises `SnapshotVersionError`
        when the header is of another version (a newer hubsync's, say), `ValueError` when the
        pieces are not a snapshot."""
        it = iter(pieces)
        first = next(it, b"\xc0")
        try:
            version = _version_decoder.decode(first).version
        except msgspec.DecodeError:
            version = None
        _check_version(version, _PIECES_VERSION)
        try:
            header = _header_decoder.decode(first)
        except msgspec.DecodeError as exc:
            raise ValueError(f"not a Coalescer snapshot header: {exc}") from None
        self = cls(clock, policy, resolution=resolution, damping=damping)
        self._restore_small(header.base, header.properties, header.next_batch, header.counters)
        self._keys = KeyCodec(header.domains)
        for piece in it:
            section, li, runs, keys, records = _decode_piece(piece)
            if section == _KNOWN:
                self._known.update(zip(keys, records, strict=True))
                continue
            self._queue[li].update(zip(keys, records, strict=True))
            lane_runs = self._runs[li]
            for since, count in runs:
                if lane_runs and lane_runs[-1][0] == since:
                    lane_runs[-1][1] += count  # one run split across two pieces
                else:
                    lane_runs.append([since, count])
        for email, entries in header.known_extra:
            self._known[self._keys.key(email)] = self._encode_entries(entries)
        self._restore_fronts(header.lanes, header.damping)
        return self

    def _restore_small(
        self,
        base: int | None,
        properties: list[str | None],
        next_batch: int,
        counters: tuple[int, int, int, int, int],
    ) -> None:
        if base is not None:
            self._codec = RecordCodec(base)
        self._prop_names = list(properties)
        self._prop_ids = {n: i for i, n in enumerate(self._prop_names) if n is not None}
        self._next_batch = next_batch
        (
            self._offered,
            self._coalesced,
            self._written,
            self._forgotten,
            self._parked,
        ) = counters

    def _restore_fronts(
        self, lanes: Sequence[LaneFront | LaneV1], saved: DampingSnapshot | None
    ) -> None:
        """The lanes' fronts (after their queues), then the damping state, which holds again
        the contacts it held."""
        for li, lane in enumerate(lanes):
            for email, entries in lane.front:
                self._front[li][self._keys.key(email)] = self._encode_entries(entries)
            self._front_since[li] = lane.front_since if lane.front else None
            self._count[li] = len(self._front[li]) + len(self._queue[li])
        if self._damper is not None and saved is not None:
            self._restore_damping(saved)

    # ------------------------------------------------------------------ internals

    def _intern(self, prop: str) -> int:
        pid = self._prop_ids.get(prop)
        if pid is None:
            pid = len(self._prop_names)
            if pid > MAX_PROPERTY_ID:
                raise ValueError("more than 65536 distinct properties offered to one Coalescer")
            self._prop_ids[prop] = pid
            self._prop_names.append(prop)
        return pid

    def _decode(self, record: Record) -> list[Entry]:
        return self._codec.decode(record)  # type: ignore[union-attr]

    def _encode_entries(self, entries: list[Entry]) -> Record:
        return self._codec.encode(entries)  # type: ignore[union-attr]

    def _values(self, record: Record) -> _Values:
        return {prop: (pos, value) for prop, pos, value in self._codec.decode(record)}  # type: ignore[union-attr]

    def _encode(self, values: _Values) -> Record:
        return self._codec.encode([(p, pos, v) for p, (pos, v) in values.items()])  # type: ignore[union-attr]

    def _merge(
        self,
        known: _Values,
        pending: _Values,
        entries: Iterable[Entry],
        *,
        force: bool = False,
        count: bool = True,
    ) -> tuple[bool, int, int]:
        """Fold `entries` into `pending` (in place). Returns whether `known` changed, the flips
        (a waiting value superseded by another value, or cancelled) and the changes (pending
        values set or cancelled). Values that will never be written add to the `coalesced`
        count, unless `count` is false (a snapshot folds to observe, it does not count)."""
        known_changed = False
        flips = changed = coalesced = 0
        for prop, pos, value in entries:
            held = pending.get(prop)
            if held is not None and held[0] >= pos:
                coalesced += 1  # older than (or the same as) what is pending
                continue
            have = known.get(prop)
            if have is not None and (have[0] > pos or (have[0] == pos and not force)):
                coalesced += 1  # older than what HubSpot is known to hold
                continue
            if held is not None:
                coalesced += 1  # the pending value is superseded
                if held[1] != value:
                    flips += 1
                    changed += 1
            else:
                changed += 1
            if have is not None and have[1] == value and not force:
                # HubSpot already holds it: nothing to write, but remember the position so a
                # late older change cannot bring the other value back.
                known[prop] = (pos, value)
                known_changed = True
                if held is not None:
                    del pending[prop]
                else:
                    changed -= 1  # nothing was waiting: not a change
                coalesced += 1
                continue
            pending[prop] = (pos, value)
        if count:
            self._coalesced += coalesced
        return known_changed, flips, changed

    def _find(self, key: bytes) -> tuple[tuple[bool, int] | None, Record | None]:
        """Where `key` is pending: ((in_front, lane index), record), or (None, None)."""
        for li in (0, 1):
            record = self._front[li].get(key)
            if record is not None:
                return (True, li), record
            record = self._queue[li].get(key)
            if record is not None:
                return (False, li), record
        return None, None

    def _place(
        self, key: bytes, where: tuple[bool, int] | None, pending: _Values, li: int, now: float
    ) -> None:
        """Store `pending` for `key`, which was pending at `where`; a realtime change promotes."""
        if where is not None:
            in_front, at = where
            if pending and at <= li:
                record = self._encode(pending)
                if in_front:
                    self._front[at][key] = record
                else:
                    self._queue[at][key] = record
                return
            if in_front:
                del self._front[at][key]
                if not self._front[at]:
                    self._front_since[at] = None
            else:
                self._queue[at][key] = None  # tombstone: keeps the run counts aligned
            self._count[at] -= 1
            if not pending:
                return
            li = min(li, at)
        elif not pending:
            return
        queue = self._queue[li]
        if key not in queue:
            runs = self._runs[li]
            if runs and now - runs[-1][0] < self._resolution:
                runs[-1][1] += 1
            else:
                runs.append([now, 1])
        queue[key] = self._encode(pending)
        self._count[li] += 1

    def _release_blocked(
        self, key: bytes, known: _Values, sent: list[Entry], li: int, oldest: float
    ) -> None:
        """After a batch resolved: fold what was sent back (on failure) and what arrived
        meanwhile into pending, in front of the lane."""
        held = self._blocked.pop(key, None)
        pending: _Values = {}
        since = oldest
        self._merge(known, pending, sent)
        if held is not None:
            self._merge(known, pending, held[1])
            if not sent:
                since = held[2]
            li = min(li, held[0])
        if known:
            self._known[key] = self._encode(known)
        else:
            self._known.pop(key, None)
        if pending and self._damper is not None and self._damper.held(key):
            self._held[key] = [li, self._encode(pending), since]
        elif pending:
            self._front[li][key] = self._encode(pending)
            fs = self._front_since[li]
            self._front_since[li] = since if fs is None else min(fs, since)
            self._count[li] += 1

    def _hold(
        self,
        key: bytes,
        where: tuple[bool, int] | None,
        hold: list[Any] | None,
        pending: _Values,
        li: int,
        now: float,
    ) -> None:
        """Keep `pending` of held `key` aside (taking it out of its lane, if it was in one)."""
        since = now
        if where is not None:
            li = min(li, where[1])
            self._place(key, where, {}, li, now)  # leaves the lane (a tombstone in the queue)
        if hold is not None:
            li, since = min(li, hold[0]), hold[2]
        if pending:
            self._held[key] = [li, self._encode(pending), since]
        else:
            self._held.pop(key, None)  # flipped back to what HubSpot holds: nothing to write

    def _unhold(self, key: bytes, hold: list[Any], since: float | None = None) -> None:
        """A released contact goes in front of its lane: it has waited long enough. With `since`
        (its release) it waits a linger there for company: holds end one by one, and each
        would otherwise cost a call of its own."""
        li, record, held_since = hold
        since = held_since if since is None else since
        self._front[li][key] = record
        fs = self._front_since[li]
        self._front_since[li] = since if fs is None else min(fs, since)
        self._count[li] += 1

    def _release_due(self, now: float) -> None:
        """Release the held contacts whose penalty decayed below reuse or whose hold ceiling
        passed; forget penalties that decayed away."""
        damper = self._damper
        if damper is None:
            return
        heap = self._releases
        while heap and heap[0][0] <= now:
            _, key = heapq.heappop(heap)
            at = damper.release_at(key)
            if at is None:
                continue  # released already (an older entry of the same key)
            if at > now:
                heapq.heappush(heap, (at, key))  # flipped again meanwhile
                continue
            damper.release(key)
            hold = self._held.pop(key, None)
            if hold is not None:
                self._unhold(key, hold, since=now)
                self._released.add(key)
        damper.sweep(now)

    def _held_count(self) -> tuple[int, int]:
        if not self._held:
            return 0, 0
        backfill = sum(1 for hold in self._held.values() if hold[0])
        return len(self._held) - backfill, backfill

    def _settled(self, li: int, cutoff: float, limit: int) -> int:
        """Queued contacts (tombstones counted too) that arrived by `cutoff`, up to `limit`."""
        total = 0
        for since, count in self._runs[li]:
            if since > cutoff or total >= limit:
                break
            total += int(count)
        return total

    def _restore_damping(self, saved: DampingSnapshot) -> None:
        damper = self._damper
        assert damper is not None
        damper.load([[self._keys.key(email).decode(), *rest] for email, *rest in saved.penalties])
        now = self._clock.now()
        for email in saved.held:
            key = self._keys.key(email)
            if not damper.held(key):
                continue
            for li in (0, 1):
                record = self._front[li].pop(key, None)
                if record is not None:
                    self._count[li] -= 1
                    since = self._front_since[li]
                    if not self._front[li]:
                        self._front_since[li] = None
                    self._held[key] = [li, record, now if since is None else since]
                    break
        for text, *_ in damper.to_builtins():
            damped = str(text).encode()
            at = damper.release_at(damped)
            if at is not None:
                heapq.heappush(self._releases, (at, damped))

    def _live_in_queue(self, li: int) -> bool:
        return self._count[li] > len(self._front[li])

    def _trim(self, li: int) -> None:
        """Drop tombstones at the head of the queue, so the head run time is a live one."""
        queue, runs = self._queue[li], self._runs[li]
        while queue:
            removed = False
            for key in list(itertools.islice(queue, 64)):
                if queue[key] is not None:
                    self._compact(li)
                    return
                del queue[key]
                self._holes[li] += 1
                runs[0][1] -= 1
                if not runs[0][1]:
                    runs.popleft()
                removed = True
            if not removed:
                break
        self._compact(li)

    def _compact(self, li: int) -> None:
        # Deleting from the head of a dict leaves holes that every later scan from the head
        # walks over (fast, in C); a rebuild costs O(len) slow inserts, so wait for many holes.
        queue = self._queue[li]
        if self._holes[li] > max(4096, len(queue) // 8):
            self._queue[li] = dict(queue)
            self._holes[li] = 0


# --------------------------------------------------------------------- snapshot pieces


class _Piece(msgspec.Struct, array_like=True):
    """One chunk of a version 2 snapshot: contacts of one section, in order, with their
    records as the Coalescer holds them (relative to the header's codec base and property
    ids). For the queue, `runs` are the (arrival time, contacts) runs of this chunk."""

    section: str
    lane: int
    runs: list[tuple[float, int]]
    keys: list[bytes]
    records: list[Record]


_encode_piece = msgspec.msgpack.Encoder().encode
_piece_decoder = msgspec.msgpack.Decoder(_Piece)


def _decode_piece(
    data: bytes,
) -> tuple[str, int, list[tuple[float, int]], list[bytes], list[Record]]:
    piece = _piece_decoder.decode(data)
    if piece.section not in (_KNOWN, _QUEUE) or piece.lane not in (0, 1):
        raise ValueError(f"not a Coalescer snapshot piece: section {piece.section!r}")
    if len(piece.keys) != len(piece.records) or (
        piece.section == _QUEUE and sum(c for _, c in piece.runs) != len(piece.keys)
    ):
        raise ValueError("corrupt Coalescer snapshot piece: counts do not match")
    return piece.section, piece.lane, piece.runs, piece.keys, piece.records


def _known_extra(known_after: dict[bytes, _Values], keys: KeyCodec) -> Iterator[SnapshotContact]:
    return (
        (keys.email(k), [(p, pos, v) for p, (pos, v) in values.items()])
        for k, values in known_after.items()
        if values
    )


def _known_pieces(values: dict[bytes, Record], skip: set[bytes], chunk: int) -> Iterator[bytes]:
    """The known values but those of `skip`, `chunk` contacts per piece."""
    items = iter(values.items())
    for _ in range(0, len(values), chunk):
        keys: list[bytes] = []
        records: list[Record] = []
        # Unpacked at once, dict items reuse one tuple: no million young tuples for the gc.
        for key, record in itertools.islice(items, chunk):
            if key not in skip:
                keys.append(key)
                records.append(record)
        if keys:
            yield _encode_piece(_Piece(_KNOWN, 0, [], keys, records))


def _encode_pieces(
    header: bytes,
    known: tuple[dict[bytes, Record], set[bytes]],
    queues: list[tuple[dict[bytes, Record | None], list[tuple[float, int]]]],
    chunk: int,
) -> Iterator[bytes]:
    """The pieces of a cut, encoded lazily (see `Coalescer.snapshot_pieces`): the known values
    (but those of `skip`, the contacts in flight, which the header holds), then each lane's
    queue without its tombstones."""
    yield header
    yield from _known_pieces(*known, chunk)
    del known
    for li, (queue, runs) in enumerate(queues):
        entries = iter(queue.items())
        keys: list[bytes] = []
        records: list[Record] = []
        pieces_runs: list[tuple[float, int]] = []
        for since, count in runs:
            live = 0
            for key, record in itertools.islice(entries, int(count)):
                if record is None:
                    continue  # a tombstone: nothing pending
                keys.append(key)
                records.append(record)
                live += 1
                if len(keys) == chunk:
                    pieces_runs.append((since, live))
                    yield _encode_piece(_Piece(_QUEUE, li, pieces_runs, keys, records))
                    keys, records, pieces_runs, live = [], [], [], 0
            if live:
                pieces_runs.append((since, live))
        if keys:
            yield _encode_piece(_Piece(_QUEUE, li, pieces_runs, keys, records))

"""The ActivationActor: one per activation, named ``activation:<id>``.

It keeps HubSpot in step for one activation:

- ``ingest`` takes the changes a Router routed to it, appends them to the activation's own log
  (its inbox stream) so they are durable before the Router acknowledges them, and offers them to
  the Coalescer (latest position wins, flips cancel out);
- senders form batches of up to 100 contacts just in time (after the RateGovernor grants a call)
  and submit them through the governor; outcomes are recorded (written, parked with HubSpot's
  reason, or put back to retry);
- a control loop folds the control and catalog streams: it ensures the property group and
  properties exist, backfills audiences and attributes when they are added (from the
  projections, on the backfill lane), archives properties whose audience or attribute the CDP
  deleted, and follows pause/resume;
- state is the latest snapshot + the inbox after it, so a restart (Ray reruns the constructor)
  resumes exactly: nothing lost, nothing reordered (positions decide, not arrival).
"""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import msgspec
import redis.asyncio as aioredis

from actors.governor import PLANS, WINDOW_MARGIN, CallFailed, Outcome, TokenRejected
from actors.messages import decode_changes
from crm.properties import PropertySpec, attribute_property, audience_property, format_value
from events.activations import Activations, ActivationSpec
from events.catalog import Catalog
from events.projections import Projections
from events.snapshots import SnapshotStore
from events.streams import SEQ_BITS, DeadLetter, DeadLetters, Keys, ensure_partitions, read_after
from scheduler import Batch, Coalescer, DampingPolicy, FlushPolicy, Lane, SystemClock

__all__ = ["ActivationCore", "GovernorPort"]

log = logging.getLogger("hubsync.activation")

SENDERS = 4  # batches in flight at once: hides HubSpot's latency, never two for one contact
SNAPSHOT_EVERY = 5.0  # seconds between snapshots when something changed
ID_CACHE_LIMIT = 1_000_000


class GovernorPort(Protocol):
    """What an activation asks of its token's RateGovernor (a Ray actor handle in production)."""

    async def turn(self, activation_id: str, lane: str) -> None: ...
    async def release(self, activation_id: str) -> None: ...
    async def upsert(
        self, activation_id: str, lane: str, contacts: list[tuple[str, dict[str, str]]]
    ) -> list[Outcome]: ...
    async def update(
        self, activation_id: str, lane: str, records: list[tuple[str, dict[str, str]]]
    ) -> list[Outcome]: ...
    async def read_ids(
        self, activation_id: str, lane: str, emails: list[str]
    ) -> dict[str, str]: ...
    async def ensure_schema(self, activation_id: str, specs: list[PropertySpec]) -> list[str]: ...
    async def archive(self, activation_id: str, name: str) -> bool: ...


class Backfill(msgspec.Struct):
    added_at: int  # position of the control event that asked for it
    total: int = 0
    loaded: bool = False
    started_at: float = 0.0
    finished_at: float | None = None


class Counters(msgspec.Struct):
    changes_in: int = 0
    written: int = 0
    created: int = 0
    parked: int = 0
    not_in_hubspot: int = 0
    calls: int = 0
    day: str = ""
    written_today: int = 0


class State(msgspec.Struct):
    """What a snapshot holds besides the Coalescer."""

    names: dict[str, str] = {}  # property key (a:<id> / t:<id>) -> HubSpot internal name
    backfills: dict[str, Backfill] = {}
    archived: list[str] = []  # keys whose HubSpot property was archived after a CDP deletion
    counters: Counters = msgspec.field(default_factory=Counters)
    inbox_id: str = "0-0"
    resynced_at: int = 0  # the resync_requested position last carried out
    coalescer: bytes = b""


_encode_state = msgspec.msgpack.Encoder().encode
_decode_state = msgspec.msgpack.Decoder(State).decode


class ActivationCore:
    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        activation_id: str,
        governor: Callable[[str], GovernorPort],
        *,
        linger: float = 0.25,
        damping: DampingPolicy | None = None,
        clock: SystemClock | None = None,
        on_written: Callable[[int, float | None], None] | None = None,
    ) -> None:
        self.activation_id = activation_id
        self._redis = redis
        self._keys = keys
        self._governor_for = governor
        self._clock = clock or SystemClock()
        self._policy = FlushPolicy(linger=linger)
        self._damping = damping
        self._snapshots = SnapshotStore(redis, keys)
        self._dead = DeadLetters(redis, keys)
        self._projections = Projections(redis, keys)
        self._activations = Activations()
        self._catalog = Catalog()
        self._on_written = on_written
        self.coalescer = Coalescer(self._clock, self._policy, damping=damping)
        self.state = State()
        self.spec: ActivationSpec | None = None
        self.deleted = False
        self.ensured: set[str] = set()  # keys whose property is known to exist as defined
        self.problems: dict[str, str] = {}  # key -> why it cannot sync (e.g. archived in HubSpot)
        self._problems_at = 0.0
        self.schema_ready = False  # every subscribed property exists in HubSpot (or has a problem)
        self.last_error = ""
        self.lag: float | None = None
        self._ids: dict[str, str] = {}
        self._ready = asyncio.Event()
        self._work = asyncio.Event()
        self._turn_lock = asyncio.Lock()
        self._dirty = False
        self._snapshot_at = 0.0
        self._snapshot_cost = 0.0
        self._tasks: list[asyncio.Task[Any]] = []
        self._partitions = 0

    # --- lifecycle ------------------------------------------------------------------------------

    @property
    def snapshot_name(self) -> str:
        return f"activation:{self.activation_id}"

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._main())]

    async def _main(self) -> None:
        await self._forever("recover", self.recover, once=True)
        self._ready.set()
        loop = asyncio.get_running_loop()
        self._tasks += [
            loop.create_task(self._forever(f"sender {i}", self._send_one)) for i in range(SENDERS)
        ]
        self._tasks.append(
            loop.create_task(self._forever("housekeeping", self._housekeeping, pause=0.5))
        )

    async def _forever(
        self,
        what: str,
        step: Callable[[], Awaitable[Any]],
        *,
        pause: float = 0.0,
        once: bool = False,
    ) -> None:
        failures = 0
        while True:
            try:
                await step()
                failures = 0
                if once:
                    return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                self.last_error = f"{what}: {exc}"
                log.exception(
                    "activation %s: %s failed (%d in a row)", self.activation_id, what, failures
                )
                await asyncio.sleep(min(0.2 * 2**failures, 10.0))
            if pause:
                await asyncio.sleep(pause)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._ready.is_set():
            await self.checkpoint()

    async def recover(self) -> None:
        """Latest snapshot + the inbox entries after it: the state before the restart."""
        snap = await self._snapshots.load(self.snapshot_name)
        if snap is not None:
            pieces = await self._snapshots.pieces(snap)
            self.state = _decode_state(pieces[0])
            if len(pieces) > 1:  # format 2: the Coalescer's pieces follow the state
                self.coalescer = Coalescer.from_pieces(
                    pieces[1:], self._clock, self._policy, damping=self._damping
                )
            elif self.state.coalescer:  # format 1: the Coalescer inside the state
                self.coalescer = Coalescer.from_snapshot(
                    self.state.coalescer, self._clock, self._policy, damping=self._damping
                )
                self.state.coalescer = b""
        replayed = 0
        inbox = self._keys.inbox(self.activation_id)
        async for entry_id, payload in read_after(
            self._redis, inbox, self.state.inbox_id, field=b"c"
        ):
            self._offer(decode_changes(payload or b"\x90"), Lane.REALTIME)
            self.state.inbox_id = entry_id
            replayed += 1
        self._partitions = await ensure_partitions(self._redis, self._keys)
        await self.refresh()
        log.info(
            "activation %s recovered: %d inbox entries replayed, %d contacts pending",
            self.activation_id,
            replayed,
            len(self.coalescer),
        )

    async def checkpoint(self) -> None:
        """Snapshot the state, then drop the inbox entries the snapshot covers.

        The cut (the state and the Coalescer at this moment) is taken at once; the Coalescer's
        pieces are encoded and written one at a time with this loop running between them, so
        a large snapshot delays nothing by more than a piece (~10,000 contacts)."""
        started = time.monotonic()
        covered = self.state.inbox_id
        pieces = itertools.chain([_encode_state(self.state)], self.coalescer.snapshot_pieces())
        self._dirty = False  # what changes from now on is for the next snapshot
        try:
            await self._snapshots.save_pieces(
                self.snapshot_name,
                pieces,
                {"inbox": 0},
                parts_prefix=self._keys.activation_snapshot_parts(self.activation_id),
            )
        except BaseException:
            self._dirty = True
            raise
        del pieces
        await self._redis.xtrim(self._keys.inbox(self.activation_id), minid=covered)
        _return_freed_memory()
        self._snapshot_cost = time.monotonic() - started
        self._snapshot_at = self._clock.now()

    # --- intake ---------------------------------------------------------------------------------

    async def ingest(self, payload: bytes) -> None:
        """Make routed changes durable (the activation's log), then coalesce them."""
        await self._ready.wait()
        raw_id = await self._redis.xadd(self._keys.inbox(self.activation_id), {b"c": payload})
        self._offer(decode_changes(payload), Lane.REALTIME)
        self.state.inbox_id = raw_id.decode() if isinstance(raw_id, bytes) else raw_id

    def _offer(self, changes: list[Any], lane: Lane) -> None:
        subscribed = self.spec.subscribes() if self.spec else None
        for change in changes:
            if subscribed is not None and change.key not in subscribed:
                continue  # routed just before the audience was removed: the backfill covers a re-add
            if change.key in self.problems or change.key in self.state.archived:
                continue
            name = self._name(change.key)
            if name is None:
                continue
            self.coalescer.offer(change.email, name, change.value, change.position, lane)
        self.state.counters.changes_in += len(changes)
        self._dirty = True
        self._work.set()

    def _name(self, key: str) -> str | None:
        """The HubSpot property of a key, chosen once and kept (HubSpot names cannot change)."""
        name = self.state.names.get(key)
        if name is not None:
            return name
        spec = self._property_spec(key)
        if spec is None:
            return None
        self.state.names[key] = spec.name
        return spec.name

    def _property_spec(self, key: str) -> PropertySpec | None:
        kind, cdp_id = key.split(":", 1)
        taken = set(self.state.names.values()) - {self.state.names.get(key)}
        if kind == "a":
            audience = self._catalog.audiences.get(cdp_id)
            if audience is None:
                return None
            spec = audience_property(cdp_id, audience.name, taken)
        else:
            attribute = self._catalog.attributes.get(cdp_id)
            if attribute is None:
                return None
            spec = attribute_property(
                cdp_id, attribute.name, attribute.value_type, attribute.options or (), taken
            )
        known = self.state.names.get(key)
        return spec if known is None else msgspec.structs.replace(spec, name=known)

    # --- control: configuration, schema, backfills, deletions -------------------------------------

    async def refresh(self) -> None:
        await self._activations.refresh(self._redis, self._keys)
        await self._catalog.refresh(self._redis, self._keys)
        spec = self._activations.by_id.get(self.activation_id)
        if spec is None:
            self.deleted = self.spec is not None or self._activations.last_id != "0-0"
            return
        if self.spec is not None:
            for key in self.spec.subscribes() - spec.subscribes():
                self._unsubscribe(key)
        if self.spec is None or spec.subscribes() - self.spec.subscribes():
            self.schema_ready = False  # a new property: nothing goes out before it exists
        self.spec = spec
        if not spec.paused:
            self._work.set()

    def _unsubscribe(self, key: str) -> None:
        name = self.state.names.get(key)
        if name is not None:
            self.coalescer.forget_property(name)
        self.state.backfills.pop(key, None)
        self.ensured.discard(key)
        self._dirty = True

    async def _housekeeping(self) -> None:
        await self.refresh()
        if self.spec is not None and not self.deleted:
            await self._reconcile(self.spec)
        now = self._clock.now()
        # A snapshot blocks this loop (~4 µs per pending contact): at most ~5% of the time.
        if self._dirty and now - self._snapshot_at >= max(SNAPSHOT_EVERY, 20 * self._snapshot_cost):
            await self.checkpoint()
        await self.publish_status()

    async def _reconcile(self, spec: ActivationSpec) -> None:
        subscribed = spec.subscribes()
        deleted = {f"a:{a}" for a in self._catalog.deleted_audiences} | {
            f"t:{t}" for t in self._catalog.deleted_attributes
        }
        # The CDP deleted an audience or attribute: archive its property, stop syncing it.
        for key in sorted((subscribed & deleted) - set(self.state.archived)):
            name = self.state.names.get(key)
            if name is not None:
                self.coalescer.forget_property(name)
                await self._governor().archive(self.activation_id, name)
            self.state.archived.append(key)
            self.state.backfills.pop(key, None)
            self.ensured.discard(key)
            self._dirty = True
        live = {k for k in subscribed - deleted if self._property_spec(k) is not None}
        if self.problems and self._clock.now() - self._problems_at > 60:
            self.problems.clear()  # try again: someone may have restored the property in HubSpot
        missing = sorted(live - self.ensured - set(self.problems))
        if missing:
            specs = {key: self._property_spec(key) for key in missing}
            for key, prop in specs.items():
                self.state.names.setdefault(key, prop.name)  # type: ignore[union-attr]
            problems = await self._governor().ensure_schema(
                self.activation_id, [s for s in specs.values() if s]
            )
            for key in missing:
                name = self.state.names[key]
                problem = next((p for p in problems if name in p), None)
                if problem:
                    self.problems[key] = problem
                    self._problems_at = self._clock.now()
                    self.coalescer.forget_property(name)
                else:
                    self.problems.pop(key, None)
                    self.ensured.add(key)
        self.schema_ready = True
        self._work.set()
        resync = spec.resync_at > self.state.resynced_at
        for key in sorted(live - set(self.problems)):
            added_at = (
                spec.audiences.get(key[2:]) if key[0] == "a" else spec.attributes.get(key[2:])
            )
            backfill = self.state.backfills.get(key)
            if added_at is not None and (
                resync or backfill is None or backfill.added_at < added_at or not backfill.loaded
            ):
                await self._backfill(key, max(added_at, spec.resync_at), force=resync)
        if resync:
            self.state.resynced_at = spec.resync_at
            await self.checkpoint()

    async def _backfill(self, key: str, added_at: int, *, force: bool = False) -> None:
        """Offer the current members/values from the projections on the backfill lane
        (``force``: even values HubSpot is known to hold, for a resync)."""
        name = self._name(key)
        if name is None:
            return
        kind, cdp_id = key.split(":", 1)
        backfill = Backfill(added_at=added_at, started_at=self._clock.now())
        self.state.backfills[key] = backfill
        if kind == "a":
            async for page in self._projections.members(cdp_id, self._partitions):
                for member in page:
                    self.coalescer.offer_many(
                        member.email, ((name, "true", member.position),), Lane.BACKFILL, force=force
                    )
                backfill.total += len(page)
                self._work.set()
        else:
            definition = self._catalog.attributes[cdp_id]
            async for rows in self._projections.values(cdp_id, self._partitions):
                for row in rows:
                    text = format_value(
                        definition.value_type, row.value, options=definition.options
                    )
                    self.coalescer.offer_many(
                        row.email, ((name, text, row.position),), Lane.BACKFILL, force=force
                    )
                backfill.total += len(rows)
                self._work.set()
        backfill.loaded = True
        await self.checkpoint()  # a restart resumes this backfill, it does not start over
        log.info(
            "activation %s: backfill of %s loaded, %d contacts",
            self.activation_id,
            key,
            backfill.total,
        )

    def _governor(self) -> GovernorPort:
        assert self.spec is not None
        return self._governor_for(self.spec.token_fingerprint)

    # --- sending --------------------------------------------------------------------------------

    def _sendable(self) -> bool:
        spec = self.spec
        return spec is not None and not spec.paused and not self.deleted and self.schema_ready

    async def _send_one(self) -> None:
        """Wait for due work and a turn, take a batch just in time, send it, record outcomes."""
        async with self._turn_lock:
            while True:
                now = self._clock.now()
                due = self.coalescer.due_lanes(now) if self._sendable() else ()
                if due:
                    break
                self._work.clear()
                flush_at = self.coalescer.next_flush_at() if self._sendable() else None
                timeout = 1.0 if flush_at is None else max(0.0, min(1.0, flush_at - now))
                try:
                    await asyncio.wait_for(self._work.wait(), timeout)
                except TimeoutError:
                    pass
            lane = Lane.REALTIME if Lane.REALTIME in due else Lane.BACKFILL
            governor = self._governor()
            await governor.turn(self.activation_id, lane.value)
            batch = self.coalescer.take(self._clock.now())
            if batch is None:
                await governor.release(self.activation_id)
                return
        await self._send(governor, batch)

    async def _send(self, governor: GovernorPort, batch: Batch) -> None:
        lane = batch.lane.value if isinstance(batch.lane, Lane) else str(batch.lane)
        contacts = [(c.email, c.properties) for c in batch.contacts]
        try:
            if self.spec is not None and self.spec.mode == "update_only":
                outcomes = await self._update_only(governor, lane, contacts)
            else:
                outcomes = await governor.upsert(self.activation_id, lane, contacts)
        except TokenRejected as exc:
            self.coalescer.retry(batch)
            self.last_error = str(exc)
            return
        except CallFailed as exc:
            self.coalescer.retry(batch)
            self.last_error = str(exc)
            return
        except BaseException:
            self.coalescer.retry(batch)
            raise
        self._record(batch, outcomes)

    async def _update_only(
        self, governor: GovernorPort, lane: str, contacts: list[tuple[str, dict[str, str]]]
    ) -> list[Outcome]:
        unknown = [email for email, _ in contacts if email not in self._ids]
        if unknown:
            found = await governor.read_ids(self.activation_id, lane, unknown)
            if len(self._ids) + len(found) > ID_CACHE_LIMIT:
                self._ids.clear()
            self._ids.update(found)
        records = [(self._ids[e], props) for e, props in contacts if e in self._ids]
        by_id = {self._ids[e]: e for e, _ in contacts if e in self._ids}
        outcomes = [
            Outcome(e, "missing", reason="not in HubSpot (update-only mode)")
            for e, _ in contacts
            if e not in self._ids
        ]
        if records:
            for o in await governor.update(self.activation_id, lane, records):
                email = by_id.get(o.key, o.key)
                if o.status == "missing":
                    self._ids.pop(email, None)
                outcomes.append(Outcome(email, o.status, o.contact_id, o.reason))
        return outcomes

    def _record(self, batch: Batch, outcomes: list[Outcome]) -> None:
        now = self._clock.now()
        by_email = {o.key.lower(): o for o in outcomes}
        ok = [
            c.email
            for c in batch.contacts
            if by_email.get(c.email, _RETRY).status in ("written", "created")
        ]
        bad = [c for c in batch.contacts if by_email.get(c.email, _RETRY).status == "failed"]
        missing = [
            c.email for c in batch.contacts if by_email.get(c.email, _RETRY).status == "missing"
        ]
        retry = [c.email for c in batch.contacts if c.email not in by_email]
        self.coalescer.acknowledge(batch, only=ok)
        self.coalescer.discard(batch, only=[c.email for c in bad] + missing)
        if retry:
            self.coalescer.retry(batch, only=retry)
        counters = self.state.counters
        day = time.strftime("%Y-%m-%d", time.gmtime(now))
        if counters.day != day:
            counters.day, counters.written_today = day, 0
        counters.written += len(ok)
        counters.written_today += len(ok)
        counters.created += sum(1 for e in ok if by_email[e].status == "created")
        counters.parked += len(bad)
        counters.not_in_hubspot += len(missing)
        counters.calls += 1
        self._dirty = True
        if ok and batch.lane == Lane.REALTIME:  # a backfilled value's age is not a sync delay
            newest = max(pos for c in batch.contacts for _, _, pos in c.values)
            self.lag = max(0.0, now - (newest >> SEQ_BITS) / 1000)
            if self._on_written is not None:
                self._on_written(len(ok), self.lag)
        elif ok and self._on_written is not None:
            self._on_written(len(ok), None)
        if bad:
            asyncio.get_running_loop().create_task(self._park(bad, by_email))

    async def _park(self, bad: list[Any], by_email: dict[str, Outcome]) -> None:
        letters = [
            DeadLetter(
                f"activation:{self.activation_id}",
                "-",
                by_email[c.email].reason,
                msgspec.json.encode({"email": c.email, "properties": c.properties}),
            )
            for c in bad
        ]
        await self._dead.park(letters)

    # --- status ---------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        stats = self.coalescer.stats()
        now = self._clock.now()
        backfills = {}
        pending_backfill = stats.pending_backfill
        for key, b in self.state.backfills.items():
            if not b.loaded:
                backfills[key] = {"done": 0, "total": b.total, "eta_s": None, "loading": True}
                continue
            done = max(0, b.total - pending_backfill)
            if done >= b.total and b.finished_at is None:
                b.finished_at = now
            rate = self._contacts_per_second()
            backfills[key] = {
                "done": done,
                "total": b.total,
                "eta_s": (b.total - done) / rate if rate else None,
                "elapsed_s": (b.finished_at or now) - b.started_at,
            }
        spec = self.spec
        if self.deleted:
            state = "deleted"
        elif spec is None:
            state = "starting"
        elif spec.paused:
            state = "paused"
        elif self.problems:
            state = "degraded"
        else:
            state = "running"
        c = self.state.counters
        return {
            "state": state,
            "pending": stats.pending_realtime + stats.pending_backfill + stats.in_flight,
            "pending_realtime": stats.pending_realtime,
            "pending_backfill": stats.pending_backfill,
            "in_flight": stats.in_flight,
            "held": stats.held,  # flapping contacts held back by damping (counted in pending)
            "changes_in": c.changes_in,
            "coalesced": stats.coalesced,
            "written": c.written,
            "written_today": c.written_today,
            "created": c.created,
            "parked": c.parked,
            "not_in_hubspot": c.not_in_hubspot,
            "calls": c.calls,
            "lag_s": self.lag,
            "backfills": backfills,
            "properties": {
                k: v for k, v in self.state.names.items() if spec and k in spec.subscribes()
            },
            "problems": self.problems,
            "last_error": (spec.pause_reason if spec and spec.paused else "")
            or "; ".join(self.problems.values())
            or self.last_error,
            "updated_at": time.time(),
        }

    def _contacts_per_second(self) -> float:
        per_window = PLANS.get(self.spec.plan if self.spec else "starter", PLANS["starter"])[0]
        return 100 * per_window / (10.0 + WINDOW_MARGIN)

    async def publish_status(self) -> None:
        await self._redis.set(
            self._keys.activation_status(self.activation_id),
            msgspec.json.encode(self.status()),
            ex=300,
        )


_RETRY = Outcome("", "retry")


def _return_freed_memory() -> None:
    """Hand the heap a snapshot's transient structures left free back to the OS (glibc keeps it
    otherwise, and the actor's RSS stays at its peak); a no-op where there is no glibc."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass

"""The ActivationActor: one per activation, named ``activation:<id>``.

It keeps HubSpot in step for one activation:

- the Routers append the changes routed to it to its inbox stream (durable before they
  acknowledge them); an inbox loop reads them from there, in pages, and offers them to the
  Coalescer (latest position wins, flips cancel out). Nothing waits on this actor: while it is
  frozen or slow its inbox grows, and it catches up when it is back;
- senders form batches of up to 100 contacts just in time (after the RateGovernor grants a call)
  and submit them through the governor; outcomes are recorded (written, parked with HubSpot's
  reason, or put back to retry);
- a control loop folds the control and catalog streams: it ensures the property group and
  properties exist, backfills audiences and attributes when they are added (from the
  projections, on the backfill lane), archives properties whose audience or attribute the CDP
  deleted, re-creates them when the CDP defines them again, re-ensures a redefined property, and
  follows pause/resume. Each step, and each property within a step, fails alone: one property
  HubSpot refuses is a problem in the status (retried later), never a skipped checkpoint;
- state is the latest snapshot + the inbox after it, so a restart (Ray reruns the constructor)
  resumes exactly: nothing lost, nothing reordered (positions decide, not arrival).
"""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import msgspec
import redis.asyncio as aioredis

from actors.governor import (
    GRANT_INTERVAL_S,
    CallFailed,
    CallRefused,
    Outcome,
    TokenRejected,
    WriteReport,
)
from actors.loops import forever
from actors.messages import Change, decode_changes
from actors.router import INBOX_FIELD
from actors.status import ActivationState, ActivationStatus, BackfillProgress, encode_status
from crm.plans import BATCH_SIZE, PLANS
from crm.properties import (
    PropertySpec,
    ValueFormatError,
    attribute_property,
    audience_property,
    format_value,
)
from events.activations import Activations, ActivationSpec
from events.catalog import Catalog
from events.projections import Projections
from events.property_keys import PropertyKey, SourceKind, attribute_key, audience_key
from events.snapshots import SnapshotError, SnapshotStore
from events.streams import (
    SEQ_BITS,
    DeadLetter,
    DeadLetters,
    Keys,
    ensure_partitions,
    read_after,
    read_rows,
)
from scheduler import (
    Batch,
    Coalescer,
    CoalescerStats,
    DampingPolicy,
    FlushPolicy,
    Lane,
    SystemClock,
)

__all__ = ["ActivationCore", "GovernorPort", "activation_status"]

log = logging.getLogger("hubsync.activation")

SENDERS = 4  # batches in flight at once: hides HubSpot's latency, never two for one contact
SNAPSHOT_EVERY = 5.0  # seconds between snapshots when something changed
ID_CACHE_LIMIT = 1_000_000
INBOX_PAGE = 100  # inbox entries read at once (each: one router step's changes, up to 2000)
INBOX_BLOCK_MS = 1000  # how long one inbox read waits for new entries
PROBLEM_RETRY = 60.0  # seconds before a property with a problem is tried again


class GovernorPort(Protocol):
    """What an activation asks of its token's RateGovernor (a Ray actor handle in production)."""

    async def turn(self, activation_id: str, lane: str) -> None: ...
    async def release(self, activation_id: str) -> None: ...
    async def upsert(
        self, activation_id: str, lane: str, contacts: list[tuple[str, dict[str, str]]]
    ) -> WriteReport: ...
    async def update(
        self, activation_id: str, lane: str, records: list[tuple[str, dict[str, str]]]
    ) -> WriteReport: ...
    async def read_ids(
        self, activation_id: str, lane: str, emails: list[str]
    ) -> dict[str, str]: ...
    async def ensure_schema(
        self, activation_id: str, specs: list[PropertySpec]
    ) -> dict[str, str]: ...
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
    retired: list[str] = []  # names archived in HubSpot: a key defined again gets a new name
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
        # key -> the definition HubSpot is known to hold: a redefinition is ensured again
        self.ensured: dict[str, PropertySpec] = {}
        self.problems: dict[str, str] = {}  # key -> why it cannot sync (e.g. archived in HubSpot)
        self._problem_at: dict[str, float] = {}  # key -> when its problem was recorded
        self.schema_ready = False  # every subscribed property exists in HubSpot (or has a problem)
        self.last_error = ""
        self.lag: float | None = None
        self._ids: dict[str, str] = {}
        self._ready = asyncio.Event()
        self._work = asyncio.Event()
        self._turn_lock = asyncio.Lock()
        self._refresh_lock = asyncio.Lock()  # two folds of one stream at once would apply twice
        self._checkpoint_lock = asyncio.Lock()  # snapshots saved in the order they were taken
        self._dirty = False
        self._snapshot_at = 0.0
        self._snapshot_cost = 0.0
        self._tasks: list[asyncio.Task[Any]] = []
        self._partitions = 0
        # When (wall clock) this actor passed each step from its start to its first backfill
        # loaded: `bench backfill` splits the time from creation to the first write with it.
        self.timeline: dict[str, float] = {"started": time.time()}

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
        self._tasks.append(loop.create_task(self._forever("inbox", self._read_inbox)))
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
        def failed(what: str, exc: Exception) -> None:
            self.last_error = f"{what}: {exc}"

        await forever(
            f"activation {self.activation_id}: {what}",
            step,
            log=log,
            pause=pause,
            once=once,
            base=0.2,
            on_error=failed,
        )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._ready.is_set():
            await self.checkpoint()

    async def recover(self) -> None:
        """Latest snapshot + the inbox entries after it: the state before the restart.

        A snapshot that does not load (of a format or version this code does not know, say a
        newer hubsync's after a rollback, or with pieces gone) is not retried forever: the
        state is rebuilt as if there were none, from the inbox entries still there and the
        projections (every subscribed property is backfilled again), and a log line says why."""
        try:
            await self._load_snapshot()
        except (SnapshotError, msgspec.DecodeError, ValueError) as exc:
            log.warning(
                "activation %s: its snapshot does not load (%s); rebuilding its state from the "
                "inbox and the projections instead",
                self.activation_id,
                exc,
            )
            self.state = State()
            self.coalescer = Coalescer(self._clock, self._policy, damping=self._damping)
        self._partitions = await ensure_partitions(self._redis, self._keys)
        # The catalog and the subscriptions first: a replayed change needs them to find its
        # property, and one offered before them would be dropped.
        await self.refresh()
        replayed = 0
        inbox = self._keys.inbox(self.activation_id)
        async for entry_id, payload in read_after(
            self._redis, inbox, self.state.inbox_id, field=INBOX_FIELD
        ):
            await self._take(entry_id, payload)
            replayed += 1
        log.info(
            "activation %s recovered: %d inbox entries replayed, %d contacts pending",
            self.activation_id,
            replayed,
            len(self.coalescer),
        )

    async def _load_snapshot(self) -> None:
        """The snapshot's state and Coalescer, of either format (`events.snapshots`): 2, the
        state then the Coalescer's pieces (`scheduler.coalescer.SnapshotHeader` first); 1, the
        Coalescer inside the state."""
        snap = await self._snapshots.load(self.snapshot_name)
        if snap is None:
            return
        pieces = await self._snapshots.pieces(snap)
        state = _decode_state(pieces[0])
        coalescer = self.coalescer
        if len(pieces) > 1:  # format 2: the Coalescer's pieces follow the state
            coalescer = Coalescer.from_pieces(
                pieces[1:], self._clock, self._policy, damping=self._damping
            )
        elif state.coalescer:  # format 1: the Coalescer inside the state
            coalescer = Coalescer.from_snapshot(
                state.coalescer, self._clock, self._policy, damping=self._damping
            )
            state.coalescer = b""
        self.state, self.coalescer = state, coalescer

    async def checkpoint(self) -> None:
        """Snapshot the state, then drop the inbox entries the snapshot covers (so the inbox
        stays bounded as long as this actor lives). One at a time: a snapshot saved after a
        newer one would cover less than the inbox trimmed.

        The cut (the state and the Coalescer at this moment) is taken at once; the Coalescer's
        pieces are encoded and written one at a time with this loop running between them, so
        a large snapshot delays nothing by more than a piece (~10,000 contacts)."""
        async with self._checkpoint_lock:
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
                del pieces
                # Exactly (not ~): once a checkpoint a few seconds, cheap, and the bound is plain.
                await self._redis.xtrim(
                    self._keys.inbox(self.activation_id), minid=covered, approximate=False
                )
            except BaseException:
                self._dirty = True
                raise
            _return_freed_memory()
            self._snapshot_cost = time.monotonic() - started
            self._snapshot_at = self._clock.now()

    # --- intake ---------------------------------------------------------------------------------

    async def _read_inbox(self) -> None:
        """Offer what the Routers appended to the inbox since the last entry taken: a page at a
        time, waiting up to INBOX_BLOCK_MS when there is nothing new."""
        inbox = self._keys.inbox(self.activation_id)
        reply = await self._redis.xread(
            {inbox: self.state.inbox_id}, count=INBOX_PAGE, block=INBOX_BLOCK_MS
        )
        for _, rows in read_rows(reply):
            for raw_id, fields in rows:
                entry_id = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
                await self._take(entry_id, (fields or {}).get(INBOX_FIELD))
                await asyncio.sleep(0)  # draining a backlog: let the senders form batches meanwhile

    async def _take(self, entry_id: str, payload: bytes | None) -> None:
        """Offer one inbox entry's changes and advance past it. An entry that does not decode
        is parked with the reason: it never wedges the inbox."""
        try:
            changes = decode_changes(payload or b"\x90")
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            await self._dead.park(
                [
                    DeadLetter(
                        self._keys.inbox(self.activation_id),
                        entry_id,
                        f"inbox entry does not decode: {exc}",
                        payload or b"",
                    )
                ]
            )
        else:
            if not self._knows_all(changes):
                # Routed by a router that saw a new subscription or definition before this actor.
                await self.refresh()
            self._offer(changes, Lane.REALTIME)
        self.state.inbox_id = entry_id
        self._dirty = True

    def _knows_all(self, changes: list[Change]) -> bool:
        """Whether every change's key is subscribed and defined, and every enumeration value one
        of its options, as far as this actor knows (else the catalog moved on without it)."""
        if self.spec is None:
            return False
        subscribed = self.spec.subscribes()
        keys = {c.key for c in changes}
        if not all(
            key in subscribed and (key in self.state.names or self._property_spec(key) is not None)
            for key in keys
        ):
            return False
        options = {
            key: set(attribute.options or ())
            for key in keys
            if not (parsed := PropertyKey.parse(key)).is_audience
            and (attribute := self._catalog.attributes.get(parsed.cdp_id)) is not None
            and attribute.value_type == "enumeration"
        }
        return all(c.value in options[c.key] for c in changes if c.key in options and c.value)

    def _offer(self, changes: list[Change], lane: Lane) -> None:
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
        kind, cdp_id = PropertyKey.parse(key)
        taken = (set(self.state.names.values()) | set(self.state.retired)) - {
            self.state.names.get(key)
        }
        if kind is SourceKind.AUDIENCE:
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
        async with self._refresh_lock:
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
        if any(
            key in self.ensured and self.ensured[key] != self._property_spec(key)
            for key in spec.subscribes()
        ):
            self.schema_ready = False  # redefined (new options): values wait for HubSpot to have it
        self.spec = spec
        if not spec.paused:
            self._work.set()

    def _unsubscribe(self, key: str) -> None:
        name = self.state.names.get(key)
        if name is not None:
            self.coalescer.forget_property(name)
        self.state.backfills.pop(key, None)
        self.ensured.pop(key, None)
        self._dirty = True

    async def _housekeeping(self) -> None:
        """Each step on its own: a failing one (a property HubSpot refuses, Redis hiccuping)
        never skips the checkpoint, which bounds the inbox, nor the status."""
        for what, step in (
            ("refresh", self.refresh),
            ("reconcile", self._reconcile_current),
            ("checkpoint", self._checkpoint_when_due),
            ("status", self.publish_status),
        ):
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = f"{what}: {exc}"
                log.exception("activation %s: %s failed", self.activation_id, what)

    async def _reconcile_current(self) -> None:
        if self.spec is not None and not self.deleted:
            await self._reconcile(self.spec)

    async def _checkpoint_when_due(self) -> None:
        # A snapshot is written in pieces, the loop running between them; spacing snapshots at
        # 20x their wall time keeps the work they make to about 5% of the time.
        now = self._clock.now()
        if self._dirty and now - self._snapshot_at >= max(SNAPSHOT_EVERY, 20 * self._snapshot_cost):
            await self.checkpoint()

    def _set_problem(self, key: str, problem: str) -> None:
        """Stop syncing one property until PROBLEM_RETRY has passed; the others go on."""
        self.problems[key] = problem
        self._problem_at[key] = self._clock.now()
        name = self.state.names.get(key)
        if name is not None:
            self.coalescer.forget_property(name)
        self.ensured.pop(key, None)
        # Changes of it are dropped meanwhile: once it works again, a backfill sends them.
        self.state.backfills.pop(key, None)
        self._dirty = True

    def _clear_problem(self, key: str) -> None:
        self.problems.pop(key, None)
        self._problem_at.pop(key, None)

    def _expire_problems(self) -> None:
        """Try again what failed a while ago: someone may have restored the property in HubSpot,
        or HubSpot may take the definition now."""
        now = self._clock.now()
        for key in [k for k, at in self._problem_at.items() if now - at > PROBLEM_RETRY]:
            self._clear_problem(key)

    async def _reconcile(self, spec: ActivationSpec) -> None:
        subscribed = spec.subscribes()
        deleted = {audience_key(a) for a in self._catalog.deleted_audiences} | {
            attribute_key(t) for t in self._catalog.deleted_attributes
        }
        self._expire_problems()
        self._revive(subscribed - deleted)
        # The CDP deleted an audience or attribute: archive its property, stop syncing it.
        for key in sorted((subscribed & deleted) - set(self.state.archived) - set(self.problems)):
            try:
                await self._archive(key)
            except (TokenRejected, CallFailed):
                raise  # the token or HubSpot as a whole: the next round retries
            except Exception as exc:
                self._set_problem(key, f"archiving property {self.state.names.get(key)}: {exc}")
        live = {k for k in subscribed - deleted if self._property_spec(k) is not None}
        resync = spec.resync_at > self.state.resynced_at
        backfills = []
        unmade = {k for k in live if self.ensured.get(k) != self._property_spec(k)}
        for key in sorted(live - set(self.problems)):
            kind, cdp_id = PropertyKey.parse(key)
            added_at = (spec.audiences if kind is SourceKind.AUDIENCE else spec.attributes).get(
                cdp_id
            )
            backfill = self.state.backfills.get(key)
            if added_at is not None and (
                resync or backfill is None or backfill.added_at < added_at or not backfill.loaded
            ):
                backfills.append(self._backfill_alone(key, max(added_at, spec.resync_at), resync))
                if key in unmade:
                    # Its property is (re)made now (defined again, or retried after a problem):
                    # its members must not go out before HubSpot has it.
                    self.schema_ready = False
        self.timeline.setdefault("reconcile", time.time())
        # Members load while HubSpot makes the schema: nothing is sent before `schema_ready`,
        # which only the schema's end sets, and a property HubSpot refuses stops its backfill.
        # Every step ends before this returns, so the next round never loads a backfill twice.
        outcomes = await asyncio.gather(
            self._ensure_schema(live), *backfills, return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        if resync:
            self.state.resynced_at = spec.resync_at
            await self.checkpoint()

    async def _ensure_schema(self, live: set[str]) -> None:
        await self._ensure(live)
        self.schema_ready = True
        self.timeline.setdefault("schema_ready", time.time())
        self._work.set()

    async def _backfill_alone(self, key: str, added_at: int, force: bool) -> None:
        """A backfill that fails is a problem of its property alone."""
        if key in self.problems:
            return  # HubSpot refused its property meanwhile: a later round backfills it
        try:
            await self._backfill(key, added_at, force=force)
        except Exception as exc:
            self._set_problem(key, f"backfill of {self.state.names.get(key)}: {exc}")

    def _revive(self, live: set[str]) -> None:
        """An audience or attribute the CDP deleted and then defined again syncs again, under a
        new property: the archived one keeps its name in HubSpot's recycle bin."""
        for key in [k for k in self.state.archived if k in live]:
            self.state.archived.remove(key)
            name = self.state.names.pop(key, None)
            if name is not None and name not in self.state.retired:
                self.state.retired.append(name)
            self.state.backfills.pop(key, None)
            self.ensured.pop(key, None)
            self._clear_problem(key)
            self._dirty = True
            log.info("activation %s: %s defined again, re-creating it", self.activation_id, key)

    async def _archive(self, key: str) -> None:
        name = self.state.names.get(key)
        if name is not None:
            self.coalescer.forget_property(name)
            await self._governor().archive(self.activation_id, name)
        self.state.archived.append(key)
        self.state.backfills.pop(key, None)
        self.ensured.pop(key, None)
        self._dirty = True

    async def _ensure(self, live: set[str]) -> None:
        """Make the properties of ``live`` exist in HubSpot as currently defined: new ones, and
        ones whose definition changed (an enumeration's new options). A property HubSpot
        refuses gets a problem of its own; the others are ensured all the same."""
        specs: dict[str, PropertySpec] = {}
        for key in sorted(live - set(self.problems)):
            spec = self._property_spec(key)
            if spec is not None and self.ensured.get(key) != spec:
                self.state.names.setdefault(key, spec.name)
                specs[key] = spec
        if not specs:
            return
        try:
            problems = await self._governor().ensure_schema(
                self.activation_id, list(specs.values())
            )
        except (TokenRejected, CallFailed):
            raise  # the token or HubSpot as a whole: the next round retries
        except Exception:
            # Something in the batch HubSpot would not take, unnamed: find it, one at a time.
            problems = {}
            for spec in specs.values():
                try:
                    problems.update(
                        await self._governor().ensure_schema(self.activation_id, [spec])
                    )
                except (TokenRejected, CallFailed):
                    raise
                except Exception as exc:
                    problems[spec.name] = f"ensuring property {spec.name}: {exc}"
        for key, spec in specs.items():
            problem = problems.get(spec.name)
            if problem:
                self._set_problem(key, problem)
            else:
                self._clear_problem(key)
                self.ensured[key] = spec

    async def _backfill(self, key: str, added_at: int, *, force: bool = False) -> None:
        """Offer the current members/values from the projections on the backfill lane
        (``force``: even values HubSpot is known to hold, for a resync). It stops, offering
        nothing more, once the backfill is dropped meanwhile (its property got a problem, was
        unsubscribed or archived while the members loaded)."""
        name = self._name(key)
        if name is None:
            return
        kind, cdp_id = PropertyKey.parse(key)
        backfill = Backfill(added_at=added_at, started_at=self._clock.now())
        self.state.backfills[key] = backfill

        def dropped() -> bool:
            return self.state.backfills.get(key) is not backfill

        if kind is SourceKind.AUDIENCE:
            async for page in self._projections.members(cdp_id, self._partitions):
                if dropped():
                    return
                for member in page:
                    self.coalescer.offer_many(
                        member.email, ((name, "true", member.position),), Lane.BACKFILL, force=force
                    )
                backfill.total += len(page)
                self._work.set()
        else:
            definition = self._catalog.attributes[cdp_id]
            async for rows in self._projections.values(cdp_id, self._partitions):
                if dropped():
                    return
                unusable: list[DeadLetter] = []
                for row in rows:
                    try:
                        text = format_value(
                            definition.value_type, row.value, options=definition.options
                        )
                    except ValueFormatError as exc:
                        # Valid when it arrived, not under the attribute's new definition: park
                        # this value, backfill the rest.
                        unusable.append(self._unusable_value(key, row.email, row.value, exc))
                        continue
                    self.coalescer.offer_many(
                        row.email, ((name, text, row.position),), Lane.BACKFILL, force=force
                    )
                await self._dead.park(unusable)
                backfill.total += len(rows) - len(unusable)
                self._work.set()
        if dropped():
            return
        backfill.loaded = True
        self.timeline.setdefault("members_loaded", time.time())
        await self.checkpoint()  # a restart resumes this backfill, it does not start over
        log.info(
            "activation %s: backfill of %s loaded, %d contacts",
            self.activation_id,
            key,
            backfill.total,
        )

    def _unusable_value(
        self, key: str, email: str, value: Any, exc: ValueFormatError
    ) -> DeadLetter:
        attribute_id = PropertyKey.parse(key).cdp_id
        return DeadLetter(
            f"activation:{self.activation_id}",
            "-",
            f"attribute {attribute_id!r} for {email}: {exc} (under its current definition)",
            msgspec.json.encode({"email": email, "attribute_id": attribute_id, "value": value}),
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
                report = await self._update_only(governor, lane, contacts)
            else:
                report = await governor.upsert(self.activation_id, lane, contacts)
        except (TokenRejected, CallFailed) as exc:
            self.coalescer.retry(batch)
            self.last_error = str(exc)
            return
        except CallRefused as exc:  # HubSpot keeps refusing it (e.g. a 404 on the read): park it
            report = WriteReport([Outcome(e, "failed", reason=str(exc)) for e, _ in contacts])
        except BaseException:
            self.coalescer.retry(batch)
            raise
        await self._record(batch, report)

    async def _update_only(
        self, governor: GovernorPort, lane: str, contacts: list[tuple[str, dict[str, str]]]
    ) -> WriteReport:
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
        problems: dict[str, str] = {}
        if records:
            report = await governor.update(self.activation_id, lane, records)
            problems = report.property_problems
            for o in report.outcomes:
                email = by_id.get(o.key, o.key)
                if o.status == "missing":
                    self._ids.pop(email, None)
                outcomes.append(Outcome(email, o.status, o.contact_id, o.reason))
        return WriteReport(outcomes, problems)

    async def _record(self, batch: Batch, report: WriteReport) -> None:
        now = self._clock.now()
        self._drop_properties(report.property_problems, now)  # first: resends go without them
        by_email = {o.key.lower(): o for o in report.outcomes}
        ok = [
            c.email
            for c in batch.contacts
            if by_email.get(c.email, _RETRY).status in ("written", "created")
        ]
        bad = [c for c in batch.contacts if by_email.get(c.email, _RETRY).status == "failed"]
        missing = [
            c.email for c in batch.contacts if by_email.get(c.email, _RETRY).status == "missing"
        ]
        retry = [c.email for c in batch.contacts if by_email.get(c.email, _RETRY).status == "retry"]
        self.coalescer.acknowledge(batch, only=ok)
        self.coalescer.discard(batch, only=missing)
        if retry:
            self.coalescer.retry(batch, only=retry)
        counters = self.state.counters
        day = time.strftime("%Y-%m-%d", time.gmtime(now))
        if counters.day != day:
            counters.day, counters.written_today = day, 0
        counters.written += len(ok)
        counters.written_today += len(ok)
        counters.created += sum(1 for e in ok if by_email[e].status == "created")
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
            # Parked durably before they leave the Coalescer: a crash in between resends them
            # (and HubSpot refuses them again); it never loses the record of why.
            try:
                await self._park(bad, by_email)
            except BaseException:
                self.coalescer.retry(batch, only=[c.email for c in bad])
                raise
            self.coalescer.discard(batch, only=[c.email for c in bad])
            counters.parked += len(bad)

    def _drop_properties(self, refused: dict[str, str], now: float) -> None:
        """HubSpot refuses these properties for every contact (archived, deleted or redefined
        in HubSpot): record the problem, stop offering them and drop their pending values. The
        problem clears after PROBLEM_RETRY (`_reconcile`): the property is then ensured again and,
        its backfill forgotten here, backfilled from the projections, so nothing stays behind."""
        by_name = {name: key for key, name in self.state.names.items()}
        for name, reason in refused.items():
            key = by_name.get(name)
            if key is None:
                continue
            self._set_problem(
                key,
                f"{reason}: it was archived, deleted or changed in HubSpot; the other "
                "properties keep syncing and hubsync checks it again within a minute",
            )
            log.warning("activation %s: %s", self.activation_id, self.problems[key])

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

    def status(self) -> ActivationStatus:
        stats = self.coalescer.stats()
        now = self._clock.now()
        for b in self.state.backfills.values():  # elapsed_s stops at the end, however read later
            done = max(0, b.total - stats.pending_backfill)
            if b.loaded and b.finished_at is None and done >= b.total:
                b.finished_at = now
        return activation_status(
            self.state,
            stats,
            self.spec,
            deleted=self.deleted,
            problems=self.problems,
            last_error=self.last_error,
            lag=self.lag,
            contacts_per_second=self._contacts_per_second(),
            now=now,
            wall=time.time(),
        )

    def _contacts_per_second(self) -> float:
        plan = PLANS.get(self.spec.plan if self.spec else "starter", PLANS["starter"])
        return BATCH_SIZE * plan.per_window / GRANT_INTERVAL_S

    async def publish_status(self) -> None:
        if self.deleted:  # the Supervisor removes every key of a deleted activation: add none
            return
        await self._redis.set(
            self._keys.activation_status(self.activation_id),
            encode_status(self.status()),
            ex=300,
        )


def activation_status(
    state: State,
    stats: CoalescerStats,
    spec: ActivationSpec | None,
    *,
    deleted: bool,
    problems: Mapping[str, str],
    last_error: str,
    lag: float | None,
    contacts_per_second: float,
    now: float,
    wall: float,
) -> ActivationStatus:
    """What an activation publishes: a pure function of its state, its Coalescer's counts and
    its configuration at `now` (the clock the backfills were timed with; `wall`: epoch seconds
    for `updated_at`, by which readers judge staleness)."""
    backfills: dict[str, BackfillProgress] = {}
    for key, b in state.backfills.items():
        if not b.loaded:
            backfills[key] = BackfillProgress(done=0, total=b.total, eta_s=None, loading=True)
            continue
        done = max(0, b.total - stats.pending_backfill)
        backfills[key] = BackfillProgress(
            done=done,
            total=b.total,
            eta_s=(b.total - done) / contacts_per_second if contacts_per_second else None,
            elapsed_s=(b.finished_at or now) - b.started_at,
        )
    if deleted:
        activation_state = ActivationState.DELETED
    elif spec is None:
        activation_state = ActivationState.STARTING
    elif spec.paused:
        activation_state = ActivationState.PAUSED
    elif problems:
        activation_state = ActivationState.DEGRADED
    else:
        activation_state = ActivationState.RUNNING
    subscribed = spec.subscribes() if spec is not None else set()
    c = state.counters
    return ActivationStatus(
        state=activation_state,
        pending=stats.pending_realtime + stats.pending_backfill + stats.in_flight,
        pending_realtime=stats.pending_realtime,
        pending_backfill=stats.pending_backfill,
        in_flight=stats.in_flight,
        held=stats.held,
        changes_in=c.changes_in,
        coalesced=stats.coalesced,
        written=c.written,
        written_today=c.written_today,
        created=c.created,
        parked=c.parked,
        not_in_hubspot=c.not_in_hubspot,
        calls=c.calls,
        lag_s=lag,
        backfills=backfills,
        properties={k: v for k, v in state.names.items() if k in subscribed},
        problems=dict(problems),
        last_error=(spec.pause_reason if spec is not None and spec.paused else "")
        or "; ".join(problems.values())
        or last_error,
        updated_at=wall,
    )


_RETRY = Outcome("", "retry")


def _return_freed_memory() -> None:
    """Hand the heap a snapshot's transient structures left free back to the OS (glibc keeps it
    otherwise, and the actor's RSS stays at its peak); a no-op where there is no glibc."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass

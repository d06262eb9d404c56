"""The ActivationActor: one per activation, named ``activation:<id>``.

It keeps HubSpot in step for one activation:

- the Routers append the changes routed to it to its inbox stream (durable before they
  acknowledge them); an inbox loop reads them from there, in pages, and offers them to the
  Coalescer (latest position wins, flips cancel out). Nothing waits on this actor: while it is
  frozen or slow its inbox grows, and it catches up when it is back;
- senders form batches of up to 100 contacts just in time (after the RateGovernor grants a call)
  and submit them through the governor; outcomes are recorded (written, parked with HubSpot's
  reason, or put back to retry);
- a housekeeping loop runs the control half (actors/activation_control.py: the property group
  and properties, backfills, archives, pause/resume, folded from the control and catalog
  streams), checkpoints and publishes the status. Each step, and each property within a step,
  fails alone: one property HubSpot refuses is a problem in the status (retried later), never a
  skipped checkpoint;
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
from typing import Any

import msgspec

from actors.activation_control import ActivationControl, Backfill, Counters, State
from actors.governor import GRANT_INTERVAL_S
from actors.governor_port import CallFailed, CallRefused, GovernorPort, TokenRejected
from actors.loops import forever
from actors.messages import Change, Outcome, OutcomeStatus, WriteReport, decode_changes
from actors.status import ActivationState, ActivationStatus, BackfillProgress, encode_status
from crm.plans import BATCH_SIZE, PLANS
from crm.properties import (
    PropertySpec,
)
from events.activations import Activations, ActivationSpec
from events.catalog import Catalog
from events.ports import Storage
from events.property_keys import PropertyKey
from events.snapshots import SnapshotError
from events.streams import SEQ_BITS, DeadLetter
from scheduler import (
    Batch,
    Clock,
    Coalescer,
    CoalescerStats,
    DampingPolicy,
    FlushPolicy,
    Lane,
    SystemClock,
)
from scheduler.dispatch import Permit

__all__ = ["ActivationCore", "Backfill", "Counters", "State", "activation_status"]

log = logging.getLogger("hubsync.activation")

SENDERS = 4  # batches in flight at once: hides HubSpot's latency, never two for one contact
SNAPSHOT_EVERY = 5.0  # seconds between snapshots when something changed
ID_CACHE_LIMIT = 1_000_000
INBOX_PAGE = 100  # inbox entries read at once (each: one router step's changes, up to 2000)
INBOX_BLOCK_MS = 1000  # how long one inbox read waits for new entries


_encode_state = msgspec.msgpack.Encoder().encode
_decode_state = msgspec.msgpack.Decoder(State).decode


class ActivationCore(ActivationControl):
    """The data path of one activation (its control half: actors/activation_control.py)."""

    def __init__(
        self,
        storage: Storage,
        activation_id: str,
        governor: Callable[[str], GovernorPort],
        *,
        linger: float = 0.25,
        damping: DampingPolicy | None = None,
        clock: Clock | None = None,
        on_written: Callable[[int, float | None], None] | None = None,
    ) -> None:
        self.activation_id = activation_id
        self._storage = storage
        self._keys = storage.keys
        self._governor_for = governor
        self._clock: Clock = clock or SystemClock()
        self._policy = FlushPolicy(linger=linger)
        self._damping = damping
        self._snapshots = storage.snapshots
        self._dead = storage.dead
        self._projections = storage.projections
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
        self.timeline: dict[str, float] = {"started": self._clock.now()}

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
        self._partitions = await self._storage.config.partitions()
        # The catalog and the subscriptions first: a replayed change needs them to find its
        # property, and one offered before them would be dropped.
        await self.refresh()
        replayed = 0
        async for entry_id, payload in self._storage.inboxes.read_after(
            self.activation_id, self.state.inbox_id
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
            started = self._clock.now()
            covered = self.state.inbox_id
            pieces = itertools.chain([_encode_state(self.state)], self.coalescer.snapshot_pieces())
            self._dirty = False  # what changes from now on is for the next snapshot
            try:
                await self._snapshots.save_pieces(
                    self.snapshot_name,
                    pieces,
                    {"inbox": 0},
                    parts_prefix=self._keys.activation_snapshot_parts(self.activation_id),
                    saved_at=started,
                )
                del pieces
                await self._storage.inboxes.trim(self.activation_id, covered)
            except BaseException:
                self._dirty = True
                raise
            _return_freed_memory()
            self._snapshot_cost = self._clock.now() - started
            self._snapshot_at = self._clock.now()

    # --- intake ---------------------------------------------------------------------------------

    async def _read_inbox(self) -> None:
        """Offer what the Routers appended to the inbox since the last entry taken: a page at a
        time, waiting up to INBOX_BLOCK_MS when there is nothing new."""
        rows = await self._storage.inboxes.read(
            self.activation_id, self.state.inbox_id, count=INBOX_PAGE, block_ms=INBOX_BLOCK_MS
        )
        for entry_id, payload in rows:
            await self._take(entry_id, payload)
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
        # A step's changes carry a handful of keys: each key's property is looked up once, in
        # the order the keys first appear (a new key's name is chosen then, and two new keys
        # may want the same one).
        names = {key: self._offered_name(key) for key in dict.fromkeys(c.key for c in changes)}
        self.coalescer.offer_all(
            [
                (c.email, name, c.value, c.position)
                for c in changes
                if (name := names[c.key]) is not None
            ],
            lane,
        )
        self.state.counters.changes_in += len(changes)
        self._dirty = True
        self._work.set()

    def _offered_name(self, key: str) -> str | None:
        """The property changes of `key` are offered as, or None to drop them."""
        if self.spec is not None and key not in self.spec.subscribes():
            return None  # routed just before the audience was removed: the backfill covers a re-add
        if key in self.problems or key in self.state.archived:
            return None
        return self._name(key)

    # --- housekeeping: the control half, checkpoints, status -----------------------------------

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

    async def _checkpoint_when_due(self) -> None:
        # A snapshot is written in pieces, the loop running between them; spacing snapshots at
        # 20x their wall time keeps the work they make to about 5% of the time.
        now = self._clock.now()
        if self._dirty and now - self._snapshot_at >= max(SNAPSHOT_EVERY, 20 * self._snapshot_cost):
            await self.checkpoint()

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
            permit = await governor.turn(self.activation_id, lane)
            batch = self.coalescer.take(self._clock.now())
            if batch is None:
                await governor.release(permit)
                return
        await self._send(governor, batch, permit)

    async def _send(self, governor: GovernorPort, batch: Batch, permit: Permit) -> None:
        lane = batch.lane
        contacts = [(c.email, c.properties) for c in batch.contacts]
        try:
            if self.spec is not None and self.spec.mode == "update_only":
                report = await self._update_only(governor, lane, contacts, permit)
            else:
                report = await governor.upsert(self.activation_id, lane, contacts, permit)
        except (TokenRejected, CallFailed) as exc:
            self.coalescer.retry(batch)
            self.last_error = str(exc)
            return
        except CallRefused as exc:  # HubSpot keeps refusing it (e.g. a 404 on the read): park it
            report = WriteReport(
                [Outcome(e, OutcomeStatus.FAILED, reason=str(exc)) for e, _ in contacts]
            )
        except BaseException:
            self.coalescer.retry(batch)
            raise
        await self._record(batch, report)

    async def _update_only(
        self,
        governor: GovernorPort,
        lane: Lane,
        contacts: list[tuple[str, dict[str, str]]],
        permit: Permit,
    ) -> WriteReport:
        carried: Permit | None = permit  # for the first call: the read, or else the update
        unknown = [email for email, _ in contacts if email not in self._ids]
        if unknown:
            found = await governor.read_ids(self.activation_id, lane, unknown, carried)
            carried = None
            if len(self._ids) + len(found) > ID_CACHE_LIMIT:
                self._ids.clear()
            self._ids.update(found)
        records = [(self._ids[e], props) for e, props in contacts if e in self._ids]
        by_id = {self._ids[e]: e for e, _ in contacts if e in self._ids}
        outcomes = [
            Outcome(e, OutcomeStatus.MISSING, reason="not in HubSpot (update-only mode)")
            for e, _ in contacts
            if e not in self._ids
        ]
        problems: dict[str, str] = {}
        if records:
            report = await governor.update(self.activation_id, lane, records, carried)
            carried = None
            problems = report.property_problems
            for o in report.outcomes:
                email = by_id.get(o.key, o.key)
                if o.status == OutcomeStatus.MISSING:
                    self._ids.pop(email, None)
                outcomes.append(Outcome(email, o.status, o.contact_id, o.reason))
        if carried is not None:  # every contact was unknown: no call went out on it
            await governor.release(carried)
        return WriteReport(outcomes, problems)

    async def _record(self, batch: Batch, report: WriteReport) -> None:
        now = self._clock.now()
        self._drop_properties(report.property_problems, now)  # first: resends go without them
        by_email = {o.key.lower(): o for o in report.outcomes}
        ok = [
            c.email
            for c in batch.contacts
            if by_email.get(c.email, _RETRY).status
            in (OutcomeStatus.WRITTEN, OutcomeStatus.CREATED)
        ]
        status = {c.email: by_email.get(c.email, _RETRY).status for c in batch.contacts}
        bad = [c for c in batch.contacts if status[c.email] == OutcomeStatus.FAILED]
        missing = [c.email for c in batch.contacts if status[c.email] == OutcomeStatus.MISSING]
        retry = [c.email for c in batch.contacts if status[c.email] == OutcomeStatus.RETRY]
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
        counters.created += sum(1 for e in ok if by_email[e].status == OutcomeStatus.CREATED)
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
            wall=now,
        )

    def _contacts_per_second(self) -> float:
        plan = PLANS.get(self.spec.plan if self.spec else "starter", PLANS["starter"])
        return BATCH_SIZE * plan.per_window / GRANT_INTERVAL_S

    async def publish_status(self) -> None:
        if self.deleted:  # the Supervisor removes every key of a deleted activation: add none
            return
        await self._storage.status.put(
            self._keys.activation_status(self.activation_id),
            encode_status(self.status()),
            ttl_s=300,
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


_RETRY = Outcome("", OutcomeStatus.RETRY)


def _return_freed_memory() -> None:
    """Hand the heap a snapshot's transient structures left free back to the OS (glibc keeps it
    otherwise, and the actor's RSS stays at its peak); a no-op where there is no glibc."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass

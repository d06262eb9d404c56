"""The Router: one per change-stream partition.

It reads its partition through the consumer group, parks what cannot be used on the dead-letter
stream, keeps the projections (audience members, attribute values), routes each change to the
activations that subscribe to its audience or attribute by appending it to their inbox streams
(``keys.inbox``), and acknowledges an entry only once those appends succeeded. No Ray call sits
on this path: a frozen, slow or recovering ActivationActor delays nobody else, its inbox just
grows until it reads it again.

No entry can wedge it: whatever one entry raises while it is decoded or checked (its id, its size,
its JSON, its value, its partition) parks that entry with the reason and the batch goes on. A
transient error (Redis gone a moment) fails the step; the entries it had read are redone first,
in order, before anything newer. Once a second it trims its change stream to what some consumer
group has not acknowledged yet (keeping ``change_retention_s`` of history if asked).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from actors.messages import Change, encode_changes
from crm.properties import ValueFormatError, format_value
from events.activations import Activations
from events.catalog import Catalog
from events.model import (
    AttributeChanged,
    AudienceEntered,
    AudienceLeft,
    CdpEvent,
    InvalidEvent,
    check_value,
)
from events.ports import ProjectionStore, Storage
from events.streams import (
    INBOX_FIELD,
    MAX_ENTRY_BYTES,
    DeadLetter,
    Entry,
    decode_entries,
    describe_error,
    partition_of,
)

__all__ = ["INBOX_FIELD", "RouterCore", "RouterStats"]

log = logging.getLogger("hubsync.router")

_Change = AudienceEntered | AudienceLeft | AttributeChanged  # what a change stream may carry

GROUP = "routers"
TRIM_EVERY_S = 1.0  # how often a Router trims its change stream (XINFO + XPENDING + XTRIM)


@dataclass
class RouterStats:
    events_in: int = 0
    routed: int = 0
    dead: int = 0
    last_position: int = 0
    trimmed: int = 0
    by_activation: dict[str, int] = field(default_factory=lambda: defaultdict(int))


@dataclass
class _Step:
    entries: list[Entry]
    dead: list[DeadLetter]
    routes: dict[str, list[Change]]


class RouterCore:
    """Everything a router does, without Ray: the actor is a shell around ``run``."""

    def __init__(
        self,
        storage: Storage,
        partition: int,
        *,
        count: int = 2000,
        block_ms: int = 200,
        partitions: int | None = None,
        max_entry_bytes: int = MAX_ENTRY_BYTES,
        change_retention_s: float = 0.0,
        trim_every_s: float = TRIM_EVERY_S,
        projections: ProjectionStore | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``partitions``: P, if the storage does not hold it yet (``start`` reads the stored
        one); ``projections``: a seam for tests; ``clock``: paces trimming (monotonic seconds).
        The dead-letter stream's bound is the storage's."""
        self.partition = partition
        self.stats = RouterStats()
        self._storage = storage
        self._keys = storage.keys
        self._consumer = storage.changes.reader(
            partition, GROUP, f"router-{partition}", count=count, block_ms=block_ms
        )
        self._projections = projections or storage.projections
        self._partitions = partitions
        self._max_entry_bytes = max_entry_bytes
        self._retention_s = change_retention_s
        self._trim_every_s = trim_every_s
        self._clock = clock
        self._trimmed_at: float | None = None
        self._catalog = Catalog()
        self._activations = Activations()
        self._subscribers: dict[str, list[str]] = {}
        self._routes_at = ""
        self._projection_position: int | None = None
        self._pending: _Step | None = None  # a step read but not yet delivered and acked
        self._written_to: set[str] = set()  # activations whose inbox this router appended to

    async def start(self) -> None:
        await self._consumer.ensure_group()
        await self._catalog.fold(self._storage.catalog)
        self._projection_position = await self._projections.position(self.partition)
        stored = await self._storage.config.stored_partitions()
        if stored is not None:
            self._partitions = stored  # the count producers partition by, fixed once written

    async def step(self, *, block: bool = True) -> int:
        """Read, check, project, route, deliver, acknowledge; returns the entries completed."""
        await self._trim_now_and_then()
        if self._pending is None:
            try:
                entries = await self._consumer.read(block=block)
                if not entries:
                    return 0
                self._pending = await self._prepare(entries)
            except Exception:
                # Transient (Redis gone a moment): what was read stays pending in Redis. Redo it
                # next, in order, never behind newer entries (which the projection would then
                # have recorded a position past, and so skipped these).
                self._consumer.reread_pending()
                raise
        else:
            await self._refresh_routes()  # a retry: an activation may have been deleted meanwhile
        step = self._pending
        await self._deliver(step)  # raises if an append failed: the whole step is retried
        # Only after the inbox appends succeeded: a crash in between re-delivers the entries and
        # re-appends them, which is harmless (positions decide in the Coalescer).
        await self._consumer.ack([e.id for e in step.entries])
        self._pending = None
        self.stats.events_in += len(step.entries)
        self.stats.dead += len(step.dead)
        self.stats.last_position = step.entries[-1].position
        return len(step.entries)

    async def _prepare(self, entries: list[Entry]) -> _Step:
        decoded, dead = decode_entries(entries, max_entry_bytes=self._max_entry_bytes)
        # Every step: a redefined enumeration's options, an audience deleted or defined again,
        # are followed without a restart. It is one XRANGE from the last id folded.
        await self._catalog.fold(self._storage.catalog)
        valid: list[tuple[int, _Change, str, str]] = []
        for entry, event in decoded:
            try:
                change, key, value = self._check(event)
            except Exception as exc:  # whatever one entry raises parks that entry, not the batch
                dead.append(DeadLetter.of(entry.stream, entry.id, describe_error(exc), entry.raw))
                continue
            valid.append((entry.position, change, key, value))
        self._projection_position = await self._projections.apply(
            self.partition,
            [(pos, event) for pos, event, _, _ in valid],
            after=self._projection_position,
        )
        # Routes are read after the projection is written: an activation whose backfill read the
        # projection before this write is already in the routes we read now (ARCHITECTURE.md step 4).
        await self._refresh_routes()
        routes: dict[str, list[Change]] = defaultdict(list)
        for pos, event, key, value in valid:
            for activation_id in self._subscribers.get(key, ()):
                routes[activation_id].append(Change(event.email, key, value, pos))
        return _Step(entries, dead, dict(routes))

    def _check(self, event: CdpEvent) -> tuple[_Change, str, str]:
        """The change with its property key and HubSpot value, or raise with the reason to park
        it."""
        if not isinstance(event, AudienceEntered | AudienceLeft | AttributeChanged):
            kind = type(event).__name__
            raise InvalidEvent(
                f"{kind} is a catalog event: publish it to {self._keys.catalog}, "
                "not to a change stream"
            )
        key, value = self._property(event)
        self._check_partition(event.email)
        return event, key, value

    def _check_partition(self, email: str) -> None:
        # One contact, one partition: an entry a producer hashed differently would split the
        # contact's changes over two Routers and two projections, with no order between them.
        total = self._partitions
        if total is None:
            return
        belongs = partition_of(email, total)
        if belongs != self.partition:
            raise InvalidEvent(
                f"email {email[:100]!r} belongs to partition {belongs}, not {self.partition}: "
                f"partition = crc32 of the trimmed, lower-cased email mod {total}; the producer "
                "partitions differently (hubsync publish and events.Publisher do it right)"
            )

    def _property(self, event: _Change) -> tuple[str, str]:
        match event:
            case AudienceEntered(audience_id=aid) | AudienceLeft(audience_id=aid):
                problem = self._catalog.audience_problem(aid)
                if problem:
                    raise InvalidEvent(problem)
                return f"a:{aid}", "true" if isinstance(event, AudienceEntered) else "false"
            case AttributeChanged(attribute_id=attr, value=value):
                problem = self._catalog.attribute_problem(attr)
                if problem:
                    raise InvalidEvent(problem)
                definition = self._catalog.attributes[attr]
                checked = check_value(definition, value)
                try:
                    text = format_value(definition.value_type, checked, options=definition.options)
                except ValueFormatError as exc:
                    raise InvalidEvent(f"attribute {attr!r}: {exc}") from None
                return f"t:{attr}", text

    async def _trim_now_and_then(self) -> None:
        """Trim this partition's change stream to what some group still needs, about once a
        ``trim_every_s``: acknowledged entries would otherwise stay in Redis forever."""
        now = self._clock()
        if self._trimmed_at is not None and now - self._trimmed_at < self._trim_every_s:
            return
        self._trimmed_at = now
        # A storage that may not trim (e.g. an ACL without XINFO) logs it and trims nothing:
        # routing matters more.
        self.stats.trimmed += await self._storage.changes.trim_acknowledged(
            self.partition, retention_s=self._retention_s
        )

    async def _refresh_routes(self) -> None:
        await self._activations.fold(self._storage.activations)
        if self._activations.last_id == self._routes_at:
            return
        subscribers: dict[str, list[str]] = defaultdict(list)
        for spec in self._activations.by_id.values():
            for key in spec.subscribes():
                subscribers[key].append(spec.activation_id)
        self._subscribers = dict(subscribers)
        self._routes_at = self._activations.last_id

    async def _deliver(self, step: _Step) -> None:
        """Append each live activation's changes to its inbox, one entry per activation, in one
        round trip with the step's dead letters. Never a call to an actor: a frozen one cannot
        hold this router up, and a deleted one is not brought back."""
        live = set(self._activations.by_id)
        todo = {a: c for a, c in step.routes.items() if a in live}
        # An activation deleted since this router last wrote to it: its inbox goes with it (the
        # Supervisor deletes it too, but may have done so before this router's last append).
        gone = self._written_to - live
        if step.dead or todo or gone:
            await self._storage.inboxes.deliver(
                {a: encode_changes(c) for a, c in todo.items()}, letters=step.dead, drop=gone
            )
        self._written_to = (self._written_to - gone) | set(todo)
        for activation_id, changes in todo.items():
            self.stats.routed += len(changes)
            self.stats.by_activation[activation_id] += len(changes)

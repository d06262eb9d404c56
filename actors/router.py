"""The Router: one per change-stream partition.

It reads its partition through the consumer group, parks what cannot be used on the dead-letter
stream, keeps the projections (audience members, attribute values), routes each change to the
activations that subscribe to its audience or attribute, and acknowledges an entry only once every
activation it was routed to has made it durable (their ``ingest`` returned).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import redis.asyncio as aioredis

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
from events.projections import Projections
from events.streams import DeadLetter, DeadLetters, Entry, Keys, StreamConsumer, decode_entries

__all__ = ["Deliver", "RouterCore", "RouterStats"]

log = logging.getLogger("hubsync.router")

Deliver = Callable[[str, bytes], Awaitable[None]]
"""Hand one activation its changes; returns once they are durable there, raises otherwise."""

GROUP = "routers"


@dataclass
class RouterStats:
    events_in: int = 0
    routed: int = 0
    dead: int = 0
    last_position: int = 0
    by_activation: dict[str, int] = field(default_factory=lambda: defaultdict(int))


@dataclass
class _Step:
    entries: list[Entry]
    dead: list[DeadLetter]
    routes: dict[str, list[Change]]
    delivered: set[str] = field(default_factory=set)


class RouterCore:
    """Everything a router does, without Ray: the actor is a shell around ``run``."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        partition: int,
        *,
        count: int = 2000,
        block_ms: int = 200,
    ) -> None:
        self.partition = partition
        self.stats = RouterStats()
        self._redis = redis
        self._keys = keys
        self._consumer = StreamConsumer(
            redis,
            keys.changes(partition),
            GROUP,
            f"router-{partition}",
            count=count,
            block_ms=block_ms,
        )
        self._dead = DeadLetters(redis, keys)
        self._projections = Projections(redis, keys)
        self._catalog = Catalog()
        self._activations = Activations()
        self._subscribers: dict[str, list[str]] = {}
        self._routes_at = ""
        self._projection_position: int | None = None
        self._pending: _Step | None = None  # a step read but not yet fully delivered and acked

    async def start(self) -> None:
        await self._consumer.ensure_group()
        await self._catalog.refresh(self._redis, self._keys)
        self._projection_position = await self._projections.position(self.partition)

    async def step(self, deliver: Deliver, *, block: bool = True) -> int:
        """Read, check, project, route, deliver, acknowledge; returns the entries completed."""
        if self._pending is None:
            entries = await self._consumer.read(block=block)
            if not entries:
                return 0
            self._pending = await self._prepare(entries)
        else:
            await self._refresh_routes()  # a retry: an activation may have been deleted meanwhile
        step = self._pending
        await self._deliver(step, deliver)  # raises if an activation could not take its changes
        pipe = self._redis.pipeline(transaction=False)
        for letter in step.dead:
            self._dead.park_in(pipe, letter)
        pipe.xack(self._consumer.stream, GROUP, *[e.id for e in step.entries])
        await pipe.execute()
        self._pending = None
        self.stats.events_in += len(step.entries)
        self.stats.dead += len(step.dead)
        self.stats.last_position = step.entries[-1].position
        return len(step.entries)

    async def _prepare(self, entries: list[Entry]) -> _Step:
        decoded, dead = decode_entries(entries)
        if any(self._unknown(event) for _, event in decoded):
            await self._catalog.refresh(
                self._redis, self._keys
            )  # definitions may have just arrived
        valid: list[tuple[int, CdpEvent, str, str]] = []
        for entry, event in decoded:
            try:
                key, value = self._check(event)
            except InvalidEvent as exc:
                dead.append(DeadLetter(entry.stream, entry.id, exc.reason, entry.raw or b""))
                continue
            valid.append((entry.position, event, key, value))
        self._projection_position = await self._projections.apply(
            self.partition,
            [(pos, event) for pos, event, _, _ in valid],
            after=self._projection_position,
        )
        # Routes are read after the projection is written: an activation whose backfill read the
        # projection before this write is already in the routes we read now (see ARCHITECTURE).
        await self._refresh_routes()
        routes: dict[str, list[Change]] = defaultdict(list)
        for pos, event, key, value in valid:
            for activation_id in self._subscribers.get(key, ()):
                routes[activation_id].append(Change(event.email, key, value, pos))  # type: ignore[attr-defined]
        return _Step(entries, dead, dict(routes))

    def _unknown(self, event: CdpEvent) -> bool:
        match event:
            case AudienceEntered(audience_id=aid) | AudienceLeft(audience_id=aid):
                return aid not in self._catalog.audiences
            case AttributeChanged(attribute_id=attr):
                return attr not in self._catalog.attributes
        return False

    def _check(self, event: CdpEvent) -> tuple[str, str]:
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
        kind = type(event).__name__
        raise InvalidEvent(
            f"{kind} is a catalog event: publish it to {self._keys.catalog}, not to a change stream"
        )

    async def _refresh_routes(self) -> None:
        await self._activations.refresh(self._redis, self._keys)
        if self._activations.last_id == self._routes_at:
            return
        subscribers: dict[str, list[str]] = defaultdict(list)
        for spec in self._activations.by_id.values():
            for key in spec.subscribes():
                subscribers[key].append(spec.activation_id)
        self._subscribers = dict(subscribers)
        self._routes_at = self._activations.last_id

    async def _deliver(self, step: _Step, deliver: Deliver) -> None:
        live = set(self._activations.by_id)
        todo = {a: c for a, c in step.routes.items() if a not in step.delivered and a in live}
        if not todo:
            return
        results = await asyncio.gather(
            *(deliver(a, encode_changes(changes)) for a, changes in todo.items()),
            return_exceptions=True,
        )
        failures = []
        for (activation_id, changes), result in zip(todo.items(), results, strict=True):
            if isinstance(result, BaseException):
                failures.append(f"{activation_id}: {result!r}")
            else:
                step.delivered.add(activation_id)
                self.stats.routed += len(changes)
                self.stats.by_activation[activation_id] += len(changes)
        if failures:
            raise RuntimeError("could not deliver to " + "; ".join(failures))

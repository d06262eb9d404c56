"""The Supervisor: folds the control and catalog streams into the set of actors that should run,
and reconciles the running ones with it, forever.

Actors configure themselves from the same streams, so reconciling is only about existence: a
router per partition, an ActivationActor per live activation, a RateGovernor per token in use;
actors of deleted activations and governors no activation uses are stopped, and the projections
of deleted audiences and attributes are dropped. A bad step is logged and retried, never fatal.

Deleting an activation ends, once its actor is gone, in removing every key of it and compacting
the control stream: its entries are XDELed but for the ``activation_deleted`` one, so nothing in
Redis's live data keeps its sealed token. A process that folded the stream up to some point
still reads the deletion; one that folds it from the start reads the deletion of an id it never
saw, which ``Activations.evolve`` ignores.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from actors.loops import forever
from events.activations import Activations
from events.catalog import Catalog
from events.model import ActivationDeleted, ControlEvent, InvalidEvent, decode_control_event
from events.ports import EventStream, Storage

__all__ = ["Placement", "SupervisorCore", "compact_control", "leftover_entries"]

SWEEP_AGAIN_S = 10.0  # how long a deleted activation's keys are swept again after compaction

log = logging.getLogger("hubsync.supervisor")


class Placement(Protocol):
    """Starts and stops actors; the Ray shell implements it with named, detached actors."""

    def ensure_router(self, partition: int) -> None: ...
    def ensure_activation(self, activation_id: str) -> None: ...
    def ensure_governor(self, fingerprint: str) -> None: ...
    def running(self, kind: str) -> set[str]: ...
    async def stop(self, kind: str, ident: str) -> None:
        """Stop the actor; once this returns it is gone (or still listed: retried next pass)."""
        ...


class _Folded(Activations):
    """The activations, plus the ids of every deletion folded (whose entries may need compacting)."""

    deleted: set[str] = set()

    def evolve(self, event: ControlEvent, pos: int) -> None:
        if isinstance(event, ActivationDeleted):
            self.deleted.add(event.activation_id)
        super().evolve(event, pos)


async def leftover_entries(control: EventStream, activation_ids: set[str]) -> list[str]:
    """Ids of the control entries of ``activation_ids`` that compaction removes: all of theirs but
    the ``activation_deleted`` ones. Empty once the Supervisor compacted them."""
    out = []
    async for entry_id, raw in control.read_after("0-0"):
        try:
            event = decode_control_event(raw or b"")
        except InvalidEvent:
            continue
        if event.activation_id in activation_ids and not isinstance(event, ActivationDeleted):
            out.append(entry_id)
    return out


async def compact_control(control: EventStream, activation_ids: set[str]) -> int:
    """Delete the control entries of deleted ``activation_ids`` but their deletions; returns how
    many."""
    stale = await leftover_entries(control, activation_ids)
    await control.delete(stale)
    return len(stale)


class SupervisorCore:
    def __init__(
        self,
        storage: Storage,
        placement: Placement,
        *,
        partitions: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock``: monotonic seconds, for how long deleted activations are swept again."""
        self._storage = storage
        self._clock = clock
        self._placement = placement
        self._default_partitions = partitions
        self.partitions = 0
        self.activations = _Folded()
        self._compacted: set[str] = set()
        # Compacted deletions swept once more for a few seconds: a status or inbox write the
        # dying actor (or a Router) sent before it stopped may land after the first sweep.
        self._sweep_until: dict[str, float] = {}
        self.catalog = Catalog()
        self._dropped_audiences: set[str] = set()
        self._dropped_attributes: set[str] = set()

    async def reconcile(self) -> None:
        if not self.partitions:
            self.partitions = await self._storage.config.partitions(self._default_partitions)
        await self.activations.fold(self._storage.activations)
        await self.catalog.fold(self._storage.catalog)
        for p in range(self.partitions):
            self._placement.ensure_router(p)

        live = self.activations.by_id
        # Governors first: an activation's first turn (its schema calls) then finds its token's
        # governor already starting, instead of waiting for it to be created after the actor.
        fingerprints = {spec.token_fingerprint for spec in live.values()}
        for fingerprint in fingerprints:
            self._placement.ensure_governor(fingerprint)
        for activation_id in live:
            self._placement.ensure_activation(activation_id)

        for activation_id in self._placement.running("activation") - set(live):
            await self._placement.stop("activation", activation_id)
        await self._compact_deleted()
        for fingerprint in self._placement.running("governor") - fingerprints:
            await self._placement.stop("governor", fingerprint)

        projections = self._storage.projections
        for audience_id in self.catalog.deleted_audiences - self._dropped_audiences:
            await projections.drop_audience(audience_id, self.partitions)
            self._dropped_audiences.add(audience_id)
        for attribute_id in self.catalog.deleted_attributes - self._dropped_attributes:
            await projections.drop_attribute(attribute_id, self.partitions)
            self._dropped_attributes.add(attribute_id)

    async def _compact_deleted(self) -> None:
        """Remove every trace of the deleted activations whose actor is gone: their keys, then
        their control entries (the CLI's `activation delete` waits for the latter)."""
        now = self._clock()
        for activation_id, until in list(self._sweep_until.items()):
            await self._forget_activation(activation_id)
            if now > until:
                del self._sweep_until[activation_id]
        pending = self.activations.deleted - self._compacted
        if not pending:
            return
        gone = pending - self._placement.running("activation")
        for activation_id in gone:
            await self._forget_activation(activation_id)
        removed = await compact_control(self._storage.activations, gone)
        if removed:
            log.info("compacted %d control entries of %d deleted activations", removed, len(gone))
        self._compacted |= gone
        self._sweep_until.update(dict.fromkeys(gone, now + SWEEP_AGAIN_S))

    async def _forget_activation(self, activation_id: str) -> None:
        """Delete every key of the activation: its snapshot and each ``act:{<id>}:*`` key
        (inbox, status, and any that a later version adds under that prefix)."""
        await self._storage.forget_activation(activation_id)

    async def run(
        self,
        *,
        interval: float = 1.0,
        stop: Callable[[], bool] = lambda: False,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """Reconcile as soon as the control stream gains an entry, and every ``interval``
        otherwise (the fallback that restarts actors Ray lost and drops deleted audiences'
        projections); a failing step is logged and retried after the actors' backoff (a plain
        sleep: Redis may be what failed, so no blocking read on it then), never fatal."""
        await forever(
            "reconcile",
            self.reconcile,
            log=log,
            base=interval,
            cap=30.0,
            idle=lambda: self.wait_for_control(min(interval, 30.0), sleep),
            stop=stop,
            sleep=sleep,
        )

    async def wait_for_control(
        self, timeout: float, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    ) -> bool:
        """Wait until the control stream holds an entry after the last one folded (True), or
        ``timeout`` seconds (False): an ``activation create`` is placed at once, not at the
        next poll. A failing read waits out the timeout instead, so Redis down is no busy loop."""
        try:
            return await self._storage.activations.wait(self.activations.last_id, timeout)
        except Exception:
            log.exception("waiting on the control stream failed; polling instead")
            await sleep(timeout)
            return False

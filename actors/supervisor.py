"""The Supervisor: folds the control and catalog streams into the set of actors that should run,
and reconciles the running ones with it, forever.

Actors configure themselves from the same streams, so reconciling is only about existence: a
router per partition, an ActivationActor per live activation, a RateGovernor per token in use;
actors of deleted activations and governors no activation uses are stopped, and the projections
of deleted audiences and attributes are dropped. A bad step is logged and retried, never fatal.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import redis.asyncio as aioredis

from events.activations import Activations
from events.catalog import Catalog
from events.projections import Projections
from events.streams import Keys, ensure_partitions

__all__ = ["Placement", "SupervisorCore"]

log = logging.getLogger("hubsync.supervisor")


class Placement(Protocol):
    """Starts and stops actors; the Ray shell implements it with named, detached actors."""

    def ensure_router(self, partition: int) -> None: ...
    def ensure_activation(self, activation_id: str) -> None: ...
    def ensure_governor(self, fingerprint: str) -> None: ...
    def running(self, kind: str) -> set[str]: ...
    async def stop(self, kind: str, ident: str) -> None: ...


class SupervisorCore:
    def __init__(
        self, redis: aioredis.Redis, keys: Keys, placement: Placement, *, partitions: int
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._placement = placement
        self._default_partitions = partitions
        self.partitions = 0
        self.activations = Activations()
        self.catalog = Catalog()
        self._dropped_audiences: set[str] = set()
        self._dropped_attributes: set[str] = set()
        self.failures = 0

    async def reconcile(self) -> None:
        if not self.partitions:
            self.partitions = await ensure_partitions(
                self._redis, self._keys, self._default_partitions
            )
        await self.activations.refresh(self._redis, self._keys)
        await self.catalog.refresh(self._redis, self._keys)
        for p in range(self.partitions):
            self._placement.ensure_router(p)

        live = self.activations.by_id
        for activation_id in live:
            self._placement.ensure_activation(activation_id)
        fingerprints = {spec.token_fingerprint for spec in live.values()}
        for fingerprint in fingerprints:
            self._placement.ensure_governor(fingerprint)

        for activation_id in self._placement.running("activation") - set(live):
            await self._placement.stop("activation", activation_id)
            await self._forget_activation(activation_id)
        for fingerprint in self._placement.running("governor") - fingerprints:
            await self._placement.stop("governor", fingerprint)

        projections = Projections(self._redis, self._keys)
        for audience_id in self.catalog.deleted_audiences - self._dropped_audiences:
            await projections.drop_audience(audience_id, self.partitions)
            self._dropped_audiences.add(audience_id)
        for attribute_id in self.catalog.deleted_attributes - self._dropped_attributes:
            await projections.drop_attribute(attribute_id, self.partitions)
            self._dropped_attributes.add(attribute_id)

    async def _forget_activation(self, activation_id: str) -> None:
        k = self._keys
        await self._redis.delete(
            k.inbox(activation_id),
            k.snapshot(f"activation:{activation_id}"),
            k.activation_status(activation_id),
        )

    async def run(
        self,
        *,
        interval: float = 1.0,
        stop: Callable[[], bool] = lambda: False,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """Reconcile forever; a failing step is logged and retried after a pause, never fatal."""
        while not stop():
            try:
                await self.reconcile()
                self.failures = 0
            except Exception:
                self.failures += 1
                log.exception("reconcile failed (%d in a row); retrying", self.failures)
            await sleep(min(interval * (1 + self.failures), 30.0))

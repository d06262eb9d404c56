"""A whole hubsync in one process for unit tests of the cores: MemoryStorage, one FakeClock, the
emulator's ASGI app over httpx's in-process transport. No Ray, no Redis, no socket, no sleeping:
time moves only when a test (or the governor's injected sleep) moves the clock."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from typing import Any

import httpx
from cryptography.fernet import Fernet

from actors.activation import ActivationCore
from actors.governor import GovernorCore
from actors.router import RouterCore
from crm.emulator import HubSpotState
from crm.emulator.app import create_app
from crm.tokens import token_fingerprint
from events.memory import MemoryStorage
from events.model import ActivationCreated, CdpEvent, ControlEvent, encode
from events.secrets import Sealer
from events.streams import Keys
from scheduler import FakeClock

SECRET_KEY = Fernet.generate_key().decode()
TOKEN = "pat-unit-cores"
BASE_URL = "http://127.0.0.1:9"  # tokens go over plain http to loopback only; the ASGI app answers
START = 1_800_000_000.0


class World:
    """The CDP's streams, hubsync's storage and HubSpot, on one fake clock."""

    def __init__(self, *, partitions: int = 1) -> None:
        self.clock = FakeClock(START)
        self.partitions = partitions
        self.storage = MemoryStorage(Keys("unit"), clock=self.clock.now)
        self.hubspot = HubSpotState(clock=self.clock.now)
        self.upserted: list[str] = []  # every email HubSpot was sent in a batch upsert, in order
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(self.hubspot)),
            event_hooks={"request": [self._record]},
        )
        self.governors: dict[str, GovernorCore] = {}

    async def _record(self, request: httpx.Request) -> None:
        if request.url.path.endswith("/batch/upsert"):
            await request.aread()
            self.upserted += [i["id"] for i in json.loads(request.content)["inputs"]]

    async def sleep(self, seconds: float) -> None:
        """The governor's sleep: time passes at once."""
        self.clock.advance(max(seconds, 0.0))
        await asyncio.sleep(0)

    # --- the CDP and the operator -------------------------------------------------------------

    async def start(self) -> None:
        await self.storage.config.partitions(self.partitions)  # as `hubsync up` does

    async def publish(self, *events: CdpEvent) -> None:
        await self.storage.changes.publish(events, self.partitions)

    async def control(self, *events: ControlEvent) -> None:
        for event in events:
            await self.storage.activations.append(encode(event))

    async def create(
        self,
        activation_id: str,
        *,
        audiences: Iterable[str] = (),
        attributes: Iterable[str] = (),
        token: str = TOKEN,
    ) -> None:
        await self.control(
            ActivationCreated(
                activation_id=activation_id,
                name=activation_id,
                token_sealed=Sealer(SECRET_KEY).seal(
                    token, activation_id=activation_id, base_url=BASE_URL
                ),
                token_fingerprint=token_fingerprint(token),
                base_url=BASE_URL,
                audiences=tuple(audiences),
                attributes=tuple(attributes),
            )
        )

    # --- hubsync's cores ----------------------------------------------------------------------

    def router(self, partition: int = 0, **options: Any) -> RouterCore:
        return RouterCore(self.storage, partition, clock=self.clock.now, **options)

    def governor(self, fingerprint: str) -> GovernorCore:
        """The token's governor: the core itself is a GovernorPort in-process."""
        core = self.governors.get(fingerprint)
        if core is None:
            core = self.governors[fingerprint] = GovernorCore(
                self.storage,
                fingerprint,
                secret_key=SECRET_KEY,
                clock=self.clock,
                sleep=self.sleep,
                http=self.http,
            )
            core.start()
        return core

    def activation(self, activation_id: str, **options: Any) -> ActivationCore:
        return ActivationCore(
            self.storage, activation_id, self.governor, clock=self.clock, **options
        )

    async def route(self, router: RouterCore) -> int:
        """Every entry the Router can read now, routed; returns how many."""
        done = 0
        while n := await router.step(block=False):
            done += n
        return done

    async def sync(self, core: ActivationCore) -> None:
        """What the ActivationCore's loops do, one pass, in order: fold the control and catalog
        streams, reconcile (schema, backfills), take its inbox, and send until nothing is due."""
        await core.refresh()
        await core._reconcile_current()
        while await self.storage.inboxes.read(core.activation_id, core.state.inbox_id, count=1):
            await core._read_inbox()
        await self.send_due(core)

    async def send_due(self, core: ActivationCore) -> None:
        """Send batch after batch while some is due (the linger passes on the clock)."""
        for _ in range(1_000):
            self.clock.advance(1.0)
            if not (core._sendable() and core.coalescer.due_lanes(self.clock.now())):
                return
            await core._send_one()
        raise AssertionError("still sending after 1,000 batches")

    # --- HubSpot ------------------------------------------------------------------------------

    def contacts(self) -> dict[str, dict[str, str]]:
        """email -> properties, as HubSpot holds them."""
        return {
            c["properties"]["email"]: c["properties"]
            for c in self.hubspot.dump_contacts()
            if c["properties"].get("email")
        }

    def value(self, email: str, name: str) -> str | None:
        return self.contacts().get(email, {}).get(name)

    async def close(self) -> None:
        for core in self.governors.values():
            await core.aclose()

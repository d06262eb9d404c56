"""From an activation's creation to its first write, what does not depend on each other
overlaps: the property group and the properties' reads go out together (creating a property
still waits for its group), and the members load while HubSpot makes the schema, with nothing
sent before the schema is ready. Real Redis, the emulator over real HTTP, no Ray."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest

from actors.activation import ActivationCore
from actors.governor import GovernorCore
from actors.governor_port import Permit
from actors.messages import WriteReport
from crm import HubSpotClient, attribute_property, audience_property
from crm.emulator import EmulatorServer
from crm.properties import PropertySpec
from crm.schema import ensure_properties, ensure_property_group
from crm.tokens import token_fingerprint
from events.model import AudienceDefined, AudienceDeleted, AudienceEntered
from events.redis_backend import RedisStorage
from scheduler import Lane
from tests.integration.conftest import SECRET_KEY
from tests.integration.test_activation_inbox import TOKEN, Rig, rig, until

pytestmark = pytest.mark.integration

__all__ = ["rig"]  # the fixture, shared with test_activation_inbox

VIP = audience_property("a1", "VIP")
LTV = attribute_property("ltv", "Lifetime value", "number")
HELD_AT_MOST = 5.0  # how long a held request waits for the one it should overlap


class RecordingTransport(httpx.AsyncBaseTransport):
    """The real HTTP transport to the emulator, recording (method, path) as each request starts
    and ends; ``hold`` keeps requests whose path contains it until a request whose path contains
    ``until`` started (or HELD_AT_MOST passed: sequential code then shows as not overlapping, not
    as a hang)."""

    def __init__(self, hold: str = "", until: str = "") -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.hold, self.until = hold, until
        self._arrived = asyncio.Event()
        self.log: list[tuple[str, str, str]] = []  # ("start" | "end", method, path)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.log.append(("start", request.method, path))
        if self.until and self.until in path:
            self._arrived.set()
        if self.hold and self.hold in path:
            try:
                await asyncio.wait_for(self._arrived.wait(), HELD_AT_MOST)
            except TimeoutError:
                pass
        response = await self._inner.handle_async_request(request)
        self.log.append(("end", request.method, path))
        return response

    def in_flight_together(self, first: str, second: str) -> bool:
        """Whether a request to ``second`` started while one to ``first`` was in flight."""
        open_first = 0
        for event, _, path in self.log:
            if first in path:
                open_first += 1 if event == "start" else -1
            elif second in path and event == "start" and open_first > 0:
                return True
        return False

    async def aclose(self) -> None:
        await self._inner.aclose()


@pytest.fixture
async def recorded(
    emulator: EmulatorServer,
) -> AsyncIterator[tuple[HubSpotClient, RecordingTransport]]:
    emulator.admin.reset()
    transport = RecordingTransport()
    async with httpx.AsyncClient(transport=transport, timeout=10.0) as http:
        yield HubSpotClient(TOKEN, base_url=emulator.url, http=http), transport
    emulator.admin.reset()


async def test_properties_are_read_before_their_group_exists_and_created_after(
    recorded: tuple[HubSpotClient, RecordingTransport],
) -> None:
    hubspot, transport = recorded
    group: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    ensuring = asyncio.create_task(ensure_properties(hubspot, [VIP, LTV], before_writes=group))
    deadline = time.monotonic() + 10
    while sum(1 for e, _, p in transport.log if e == "end" and p.endswith("batch/read")) < 2:
        assert time.monotonic() < deadline, transport.log
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    assert not any(p.endswith("batch/create") for _, _, p in transport.log), transport.log
    assert not ensuring.done()
    await ensure_property_group(hubspot)
    group.set_result(None)
    results = await ensuring
    assert [r.outcome for r in results] == ["created", "created"]


async def test_drifted_properties_are_patched_together(
    recorded: tuple[HubSpotClient, RecordingTransport],
) -> None:
    hubspot, transport = recorded
    await ensure_property_group(hubspot)
    await ensure_properties(hubspot, [VIP, LTV])
    relabelled = [
        msgspec.structs.replace(VIP, label="VIP (renamed)"),
        msgspec.structs.replace(LTV, label="Lifetime value (renamed)"),
    ]
    transport.hold, transport.until = VIP.name, LTV.name  # VIP's PATCH waits for LTV's
    transport.log.clear()
    results = await ensure_properties(hubspot, relabelled)
    assert [r.outcome for r in results] == ["updated", "updated"]
    assert transport.in_flight_together(VIP.name, LTV.name), transport.log


async def test_the_group_and_the_properties_reads_go_out_together(rig: Rig) -> None:
    """The governor's first call goes alone (it learns the window from HubSpot's headers); from
    then on the group's creation and the properties' read are in flight at once."""
    await rig.define(AudienceDefined(audience_id="vip", name="VIP"))
    await rig.create(audiences=["vip"])
    transport = RecordingTransport(hold="/groups", until="/batch/read")
    await rig.governor.aclose()
    rig.governor = GovernorCore(
        RedisStorage(rig.redis, rig.keys),
        token_fingerprint(TOKEN),
        secret_key=SECRET_KEY,
        http=httpx.AsyncClient(transport=transport, timeout=10.0),
    )
    rig.governor.start()
    spec = audience_property("vip", "VIP")
    started = time.monotonic()
    problems = await rig.governor.ensure_schema(rig.activation_id, [spec])
    assert problems == {}
    assert transport.in_flight_together("/groups", "/batch/read"), transport.log
    assert time.monotonic() - started < HELD_AT_MOST
    assert rig.hubspot_property(spec.name) is not None


class _Governor:
    """A GovernorPort over the real GovernorCore, for a test to watch some of its calls."""

    def __init__(self, core: GovernorCore) -> None:
        self.core = core

    def __getattr__(self, name: str) -> Any:
        return getattr(self.core, name)

    async def ensure_schema(self, activation_id: str, specs: list[PropertySpec]) -> dict[str, str]:
        return await self.core.ensure_schema(activation_id, specs)

    async def upsert(
        self,
        activation_id: str,
        lane: Lane,
        contacts: list[tuple[str, dict[str, str]]],
        permit: Permit | None = None,
    ) -> WriteReport:
        return await self.core.upsert(activation_id, lane, contacts, permit)


class _SchemaWatcher(_Governor):
    """The real governor, noting what the activation had loaded when its schema call began and
    whether any write went out before the schema was ready."""

    def __init__(self, core: GovernorCore, members: int) -> None:
        super().__init__(core)
        self.activation: ActivationCore | None = None
        self._members = members
        self.loaded_during_schema = False
        self.schema_done_at: float | None = None
        self.first_write_at: float | None = None

    async def ensure_schema(self, activation_id: str, specs: list[PropertySpec]) -> dict[str, str]:
        assert self.activation is not None
        deadline = time.monotonic() + HELD_AT_MOST
        while len(self.activation.coalescer) < self._members and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        self.loaded_during_schema = len(self.activation.coalescer) == self._members
        problems = await super().ensure_schema(activation_id, specs)
        self.schema_done_at = self.schema_done_at or time.monotonic()
        return problems

    async def upsert(
        self,
        activation_id: str,
        lane: Lane,
        contacts: list[tuple[str, dict[str, str]]],
        permit: Permit | None = None,
    ) -> WriteReport:
        self.first_write_at = self.first_write_at or time.monotonic()
        return await super().upsert(activation_id, lane, contacts, permit)


async def test_members_load_while_the_schema_is_made_and_wait_for_it(rig: Rig) -> None:
    members = [f"m{i:04d}@example.com" for i in range(300)]
    await rig.define(AudienceDefined(audience_id="vip", name="VIP"))
    await rig.project(*(AudienceEntered(audience_id="vip", email=e) for e in members))
    await rig.create(audiences=["vip"])
    rig.governor.start()
    watcher = _SchemaWatcher(rig.governor, len(members))
    rig.core = watcher.activation = ActivationCore(
        RedisStorage(rig.redis, rig.keys), rig.activation_id, lambda _: watcher, linger=0.05
    )
    rig.core.start()
    await until(
        lambda: (
            sum(1 for c in rig.hubspot().values() if c.get("raptor_vip") == "true") == len(members)
        ),
        what="every member in HubSpot",
    )
    assert watcher.loaded_during_schema, "the members waited for the schema to be made"
    assert watcher.schema_done_at is not None and watcher.first_write_at is not None
    assert watcher.first_write_at >= watcher.schema_done_at, "a write went out before the schema"


class _SlowRemake(_Governor):
    """The real governor; once ``hold_for`` is set, a schema call waits until the activation holds
    that many pending contacts (its backfill loaded) and the senders had time to act, then
    records which property names HubSpot has. A write naming another property went out early."""

    def __init__(self, core: GovernorCore) -> None:
        super().__init__(core)
        self.activation: ActivationCore | None = None
        self.hold_for = 0
        self.made: set[str] = set()
        self.early: set[str] = set()

    async def ensure_schema(self, activation_id: str, specs: list[PropertySpec]) -> dict[str, str]:
        if self.hold_for and self.activation is not None:
            deadline = time.monotonic() + HELD_AT_MOST
            while len(self.activation.coalescer) < self.hold_for and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.3)  # several lingers: a sender that may send, sends
        problems = await super().ensure_schema(activation_id, specs)
        self.made |= {s.name for s in specs if s.name not in problems}
        return problems

    async def upsert(
        self,
        activation_id: str,
        lane: Lane,
        contacts: list[tuple[str, dict[str, str]]],
        permit: Permit | None = None,
    ) -> WriteReport:
        for _, properties in contacts:
            self.early |= set(properties) - self.made
        return await super().upsert(activation_id, lane, contacts, permit)


async def test_members_of_a_property_made_again_wait_for_hubspot_to_have_it(rig: Rig) -> None:
    """An audience deleted and defined again gets a new property while the activation runs (its
    schema was ready): its members load alongside, and none goes out before the property exists."""
    await rig.define(AudienceDefined(audience_id="back", name="Back"))
    await rig.create(audiences=["back"])
    rig.governor.start()
    watcher = _SlowRemake(rig.governor)
    rig.core = watcher.activation = ActivationCore(
        RedisStorage(rig.redis, rig.keys), rig.activation_id, lambda _: watcher, linger=0.05
    )
    rig.core.start()
    await rig.project(AudienceEntered(audience_id="back", email="ada@example.com"))
    await until(
        lambda: rig.hubspot().get("ada@example.com", {}).get("raptor_back") == "true",
        what="the first property",
    )
    await rig.define(AudienceDeleted(audience_id="back"))
    await until(
        lambda: (rig.hubspot_property("raptor_back") or {}).get("archived"),
        what="the property archived",
    )
    members = [f"b{i:03d}@example.com" for i in range(100)]
    await rig.project(*(AudienceEntered(audience_id="back", email=e) for e in members))
    watcher.hold_for = len(members)
    await rig.define(AudienceDefined(audience_id="back", name="Back"))
    renamed = await until(
        lambda: (
            rig.core.state.names.get("a:back") not in (None, "raptor_back")
            and rig.core.state.names["a:back"]
        ),
        what="a new property name",
    )
    await until(
        lambda: all(rig.hubspot().get(e, {}).get(renamed) == "true" for e in members),
        what="the members on the re-created property",
    )
    assert not watcher.early, f"written before HubSpot had them: {watcher.early}"

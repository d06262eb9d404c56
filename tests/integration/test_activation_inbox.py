"""One ActivationCore and its token's GovernorCore in this process, on a real Redis, writing to
the emulator over HTTP; no Ray. The tests append to the inbox exactly as a Router does (one
entry per step, field ``c`` = ``encode_changes``), and check what HubSpot, the status, the
dead letters and the inbox hold: properties fail alone, checkpoints keep the inbox bounded,
rejected contacts are parked before they leave the Coalescer, the catalog is followed."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import httpx
import msgspec
import pytest
import redis.asyncio as aioredis

import actors.activation_control as activation_control
from actors.activation import ActivationCore
from actors.governor import GovernorCore
from actors.messages import Change, Outcome, OutcomeStatus, WriteReport, encode_changes
from actors.router import INBOX_FIELD
from crm.emulator import EmulatorServer
from crm.tokens import token_fingerprint
from events.activations import Activations
from events.connection import connect
from events.model import (
    ActivationCreated,
    AttributeChanged,
    AttributeDefined,
    AudienceDefined,
    AudienceDeleted,
    AudienceEntered,
    CdpEvent,
)
from events.projections import Projections
from events.redis_backend import RedisStorage
from events.secrets import Sealer
from events.streams import DeadLetters, Keys, Publisher, ensure_partitions
from scheduler import Lane
from tests.integration.conftest import SECRET_KEY

pytestmark = pytest.mark.integration

TOKEN = "pat-inbox"


class Rig:
    def __init__(self, redis: aioredis.Redis, emulator: EmulatorServer) -> None:
        self.redis = redis
        self.keys = Keys(f"t{uuid.uuid4().hex[:10]}")
        self.emulator = emulator
        self.activation_id = f"act{uuid.uuid4().hex[:8]}"
        self.governor = GovernorCore(
            RedisStorage(redis, self.keys), token_fingerprint(TOKEN), secret_key=SECRET_KEY
        )
        self.core: ActivationCore | None = None
        self._seq = 0

    async def define(self, *events: CdpEvent) -> None:
        await Publisher(self.redis, self.keys, 1).publish(events)

    async def create(
        self, *, audiences: Iterable[str] = (), attributes: Iterable[str] = ()
    ) -> None:
        await ensure_partitions(self.redis, self.keys, 1)
        await Activations().execute(
            self.redis,
            self.keys,
            ActivationCreated(
                activation_id=self.activation_id,
                name=self.activation_id,
                token_sealed=Sealer(SECRET_KEY).seal(
                    TOKEN, activation_id=self.activation_id, base_url=self.emulator.url
                ),
                token_fingerprint=token_fingerprint(TOKEN),
                base_url=self.emulator.url,
                audiences=tuple(audiences),
                attributes=tuple(attributes),
            ),
        )

    def start(self) -> ActivationCore:
        self.governor.start()
        self.core = ActivationCore(
            RedisStorage(self.redis, self.keys),
            self.activation_id,
            lambda _: self.governor,  # the core is a GovernorPort in-process
            linger=0.05,
        )
        self.core.start()
        return self.core

    async def route(self, *changes: tuple[str, str, str]) -> None:
        """Append (email, key, value) changes to the inbox as one Router step does."""
        batch = []
        for email, key, value in changes:
            self._seq += 1
            batch.append(Change(email, key, value, (int(time.time() * 1000) << 20) | self._seq))
        await self.redis.xadd(
            self.keys.inbox(self.activation_id), {INBOX_FIELD: encode_changes(batch)}
        )

    async def project(self, *events: CdpEvent) -> None:
        """Write the projections as a Router does (they feed backfills)."""
        self._seq += 1
        base = (int(time.time() * 1000) << 20) | (self._seq << 8)
        await Projections(self.redis, self.keys).apply(
            0, [(base + i, e) for i, e in enumerate(events)]
        )

    def hubspot(self) -> dict[str, dict[str, str]]:
        return self.emulator.admin.contact_properties()

    def hubspot_property(self, name: str) -> dict[str, Any] | None:
        props = self.emulator.admin.properties()["properties"]
        return next((p for p in props if p["name"] == name), None)

    async def status(self) -> dict[str, Any]:
        raw = await self.redis.get(self.keys.activation_status(self.activation_id))
        return msgspec.json.decode(raw) if raw else {}

    async def stop(self) -> None:
        if self.core is not None:
            await self.core.stop()
        await self.governor.aclose()


async def until(check: Callable[[], Any], *, timeout: float = 30.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {str(last)[:400]}")


@pytest.fixture
async def rig(redis_url: str, emulator: EmulatorServer) -> AsyncIterator[Rig]:
    emulator.admin.reset()
    client = connect(redis_url)
    running = Rig(client, emulator)
    try:
        yield running
    finally:
        await running.stop()
        emulator.admin.reset()
        await client.aclose()


def _archive_in_hubspot(emulator: EmulatorServer, name: str) -> None:
    """Someone archives a property by hand in HubSpot (through the API, as HubSpot's UI would)."""
    with httpx.Client(
        base_url=emulator.url, headers={"Authorization": "Bearer pat-admin"}, timeout=10
    ) as http:
        http.post(
            "/crm/v3/properties/contacts/groups",
            json={"name": "raptor_smart_advisor_cdp", "label": "Raptor Smart Advisor CDP"},
        )
        created = http.post(
            "/crm/v3/properties/contacts",
            json={
                "name": name,
                "label": name,
                "type": "bool",
                "fieldType": "booleancheckbox",
                "groupName": "raptor_smart_advisor_cdp",
                "options": [
                    {"label": "Yes", "value": "true", "hidden": False},
                    {"label": "No", "value": "false", "hidden": False},
                ],
            },
        )
        assert created.status_code == 201, created.text
        assert http.delete(f"/crm/v3/properties/contacts/{name}").status_code == 204


# --- the inbox ---------------------------------------------------------------------------------


async def test_the_inbox_is_replayed_then_tailed_and_trimmed_by_checkpoints(rig: Rig) -> None:
    await rig.define(AudienceDefined(audience_id="vip", name="VIP"))
    await rig.create(audiences=["vip"])
    await rig.route(("before@example.com", "a:vip", "true"))  # appended while no actor runs
    await rig.redis.xadd(rig.keys.inbox(rig.activation_id), {INBOX_FIELD: b"\xc1 not msgpack"})
    core = rig.start()
    await rig.route(("after@example.com", "a:vip", "true"))
    await until(
        lambda: (
            rig.hubspot().get("before@example.com", {}).get("raptor_vip") == "true"
            and rig.hubspot().get("after@example.com", {}).get("raptor_vip") == "true"
        ),
        what="both changes in HubSpot",
    )
    # The entry that does not decode is parked with its reason; it wedged nothing.
    letters = await DeadLetters(rig.redis, rig.keys).list()
    assert any(
        "inbox entry does not decode" in d.reason and d.stream.endswith(":inbox") for d in letters
    )
    await core.checkpoint()
    inbox = rig.keys.inbox(rig.activation_id)
    assert await rig.redis.xlen(inbox) <= 1  # all but the last entry taken are trimmed
    assert core.state.inbox_id != "0-0"


# --- one property fails alone --------------------------------------------------------------------


async def test_a_problem_is_matched_to_its_property_by_exact_name(rig: Rig) -> None:
    _archive_in_hubspot(rig.emulator, "raptor_vip_gold")  # its name contains raptor_vip
    await rig.define(
        AudienceDefined(audience_id="vip", name="VIP"),
        AudienceDefined(audience_id="gold", name="VIP Gold"),
    )
    await rig.create(audiences=["vip", "gold"])
    core = rig.start()
    await rig.route(("ada@example.com", "a:vip", "true"), ("ada@example.com", "a:gold", "true"))
    await until(
        lambda: rig.hubspot().get("ada@example.com", {}).get("raptor_vip") == "true",
        what="raptor_vip synced while raptor_vip_gold is archived",
    )
    assert set(core.problems) == {"a:gold"}
    assert "raptor_vip_gold is archived" in core.problems["a:gold"]
    status = await until(rig.status, what="the status")
    assert set(status["problems"]) == {"a:gold"}


async def test_a_definition_hubspot_refuses_stops_only_its_property(rig: Rig) -> None:
    rig.emulator.admin.configure(max_property_name_length=30)
    await rig.define(
        AudienceDefined(audience_id="vip", name="VIP"),
        AttributeDefined(
            attribute_id="long",
            name="a name far too long for this HubSpot account",
            value_type="number",
        ),
    )
    await rig.create(audiences=["vip"], attributes=["long"])
    core = rig.start()
    await rig.route(("ada@example.com", "a:vip", "true"), ("ada@example.com", "t:long", "7"))
    await until(
        lambda: rig.hubspot().get("ada@example.com", {}).get("raptor_vip") == "true",
        what="the audience synced beside the refused attribute",
    )
    assert set(core.problems) == {"t:long"}
    assert "refused the definition" in core.problems["t:long"]
    # Checkpoints and status go on: the inbox is trimmed, the problem is visible.
    status = await until(
        lambda: _with_problem(rig, "t:long"), timeout=15, what="the problem in the status"
    )
    assert status["state"] == "degraded"
    await until(
        lambda: _snapshot_saved(rig), timeout=15, what="a checkpoint despite the refused property"
    )


async def _with_problem(rig: Rig, key: str) -> dict[str, Any] | None:
    status = await rig.status()
    return status if key in status.get("problems", {}) else None


async def _snapshot_saved(rig: Rig) -> bool:
    return bool(await rig.redis.exists(rig.keys.snapshot(f"activation:{rig.activation_id}")))


async def test_an_archive_hubspot_refuses_is_retried_and_stops_nothing_else(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(activation_control, "PROBLEM_RETRY", 1.0)
    await rig.define(
        AudienceDefined(audience_id="stay", name="Stay"),
        AudienceDefined(audience_id="gone", name="Gone"),
    )
    await rig.create(audiences=["stay", "gone"])
    core = rig.start()
    await rig.route(("ada@example.com", "a:stay", "true"), ("ada@example.com", "a:gone", "true"))
    await until(
        lambda: rig.hubspot().get("ada@example.com", {}).get("raptor_gone") == "true",
        what="both properties synced",
    )
    rig.emulator.admin.faults(next_n={"count": 1, "status": 400})  # the archive call is refused
    await rig.define(AudienceDeleted(audience_id="gone"))
    await until(lambda: "a:gone" in core.problems, what="the refused archive as a problem")
    await rig.route(("bob@example.com", "a:stay", "true"))
    await until(
        lambda: rig.hubspot().get("bob@example.com", {}).get("raptor_stay") == "true",
        what="the other property still syncing",
    )
    # Retried later: the property ends archived and the problem gone.
    await until(
        lambda: (rig.hubspot_property("raptor_gone") or {}).get("archived"),
        what="the archive retried",
    )
    await until(lambda: not core.problems, what="the problem cleared")


async def test_a_value_that_no_longer_formats_is_parked_and_the_backfill_goes_on(
    rig: Rig,
) -> None:
    await rig.define(
        AttributeDefined(
            attribute_id="tier", name="Tier", value_type="enumeration", options=["gold", "silver"]
        )
    )
    await rig.project(
        AttributeChanged(attribute_id="tier", email="ada@example.com", value="gold"),
        AttributeChanged(attribute_id="tier", email="bob@example.com", value="silver"),
    )
    # Redefined before this activation backfills: silver is no longer an option.
    await rig.define(
        AttributeDefined(
            attribute_id="tier", name="Tier", value_type="enumeration", options=["gold", "bronze"]
        )
    )
    await rig.create(attributes=["tier"])
    core = rig.start()
    await until(
        lambda: rig.hubspot().get("ada@example.com", {}).get("raptor_tier") == "gold",
        what="the value that still formats",
    )
    letters = await DeadLetters(rig.redis, rig.keys).list()
    assert any("bob@example.com" in d.reason and "tier" in d.reason for d in letters), letters
    assert "bob@example.com" not in rig.hubspot()
    assert core.state.backfills["t:tier"].loaded
    assert not core.problems


# --- rejected contacts are parked before they leave the Coalescer ---------------------------------


async def test_a_rejected_contact_leaves_the_coalescer_only_once_parked(rig: Rig) -> None:
    core = ActivationCore(RedisStorage(rig.redis, rig.keys), rig.activation_id, lambda _: None)  # type: ignore[arg-type,return-value]
    core.coalescer.offer("bad@example.com", "raptor_vip", "true", 1, Lane.REALTIME)
    batch = core.coalescer.take(time.time() + 60, force=True)
    assert batch is not None
    refused = WriteReport(
        [Outcome("bad@example.com", OutcomeStatus.FAILED, reason="INVALID_EMAIL: nope")]
    )
    # The dead-letter stream cannot take it (a key of the wrong type): the contact stays.
    await rig.redis.set(rig.keys.dead, "not a stream")
    with pytest.raises(Exception, match="WRONGTYPE"):
        await core._record(batch, refused)
    assert core.coalescer.pending() == 1 and core.coalescer.in_flight() == 0
    await rig.redis.delete(rig.keys.dead)
    batch = core.coalescer.take(time.time() + 60, force=True)
    assert batch is not None
    await core._record(batch, refused)
    # Durable by the time _record returns: nothing left for a task to do later.
    letters = await DeadLetters(rig.redis, rig.keys).list()
    assert [d.reason for d in letters] == ["INVALID_EMAIL: nope"]
    assert len(core.coalescer) == 0 and core.coalescer.in_flight() == 0
    assert core.state.counters.parked == 1


# --- the catalog is followed ------------------------------------------------------------------


async def test_a_redefined_enumeration_gets_its_new_options_in_hubspot(rig: Rig) -> None:
    await rig.define(
        AttributeDefined(
            attribute_id="tier", name="Tier", value_type="enumeration", options=["gold", "silver"]
        )
    )
    await rig.create(attributes=["tier"])
    rig.start()
    await rig.route(("ada@example.com", "t:tier", "gold"))
    await until(
        lambda: rig.hubspot().get("ada@example.com", {}).get("raptor_tier") == "gold",
        what="the first value",
    )
    await rig.define(
        AttributeDefined(
            attribute_id="tier",
            name="Tier",
            value_type="enumeration",
            options=["gold", "silver", "platinum"],
        )
    )
    # Routed at once, as a Router that saw the redefinition first would: the value waits for
    # the property to have its new option; it is not sent (and refused) before.
    await rig.route(("ada@example.com", "t:tier", "platinum"))
    await until(
        lambda: rig.hubspot().get("ada@example.com", {}).get("raptor_tier") == "platinum",
        what="a value of the new option",
    )
    prop = rig.hubspot_property("raptor_tier")
    assert prop is not None and "platinum" in [o["value"] for o in prop["options"]]
    assert await DeadLetters(rig.redis, rig.keys).count() == 0


async def test_an_audience_deleted_then_defined_again_syncs_again_under_a_new_property(
    rig: Rig,
) -> None:
    await rig.define(AudienceDefined(audience_id="back", name="Back"))
    await rig.create(audiences=["back"])
    core = rig.start()
    await rig.project(AudienceEntered(audience_id="back", email="ada@example.com"))
    await rig.route(("ada@example.com", "a:back", "true"))
    await until(
        lambda: rig.hubspot().get("ada@example.com", {}).get("raptor_back") == "true",
        what="the first property",
    )
    await rig.define(AudienceDeleted(audience_id="back"))
    await until(
        lambda: (rig.hubspot_property("raptor_back") or {}).get("archived"),
        what="the property archived",
    )
    # Defined again; its members (the projections, as the routers keep them) are backfilled.
    await rig.define(AudienceDefined(audience_id="back", name="Back"))
    await rig.project(AudienceEntered(audience_id="back", email="bob@example.com"))
    renamed = await until(
        lambda: (
            core.state.names.get("a:back") not in (None, "raptor_back")
            and core.state.names["a:back"]
        ),
        what="a new property name",
    )
    await until(
        lambda: rig.hubspot().get("bob@example.com", {}).get(renamed) == "true",
        what="the backfill on the re-created property",
    )
    prop = rig.hubspot_property(renamed)
    assert prop is not None and not prop["archived"]
    assert "a:back" not in core.state.archived and not core.problems
    await rig.route(("cy@example.com", "a:back", "true"))
    await until(
        lambda: rig.hubspot().get("cy@example.com", {}).get(renamed) == "true",
        what="new changes on the re-created property",
    )

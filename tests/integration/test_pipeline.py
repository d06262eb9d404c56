"""End to end: CDP events in Redis Streams end as property values on HubSpot contacts."""

from __future__ import annotations

import pytest

from events.model import (
    AttributeChanged,
    AttributeDefined,
    AudienceDefined,
    AudienceEntered,
    AudienceLeft,
)
from tests.integration.harness import Hubsync

pytestmark = pytest.mark.integration


async def test_membership_and_attributes_reach_hubspot(hubsync: Hubsync) -> None:
    await hubsync.publish([
        AudienceDefined(audience_id="a17", name="Abandon Basket"),
        AttributeDefined(attribute_id="ltv", name="Lifetime value", value_type="number"),
        AttributeDefined(attribute_id="tier", name="Tier", value_type="enumeration", options=["gold", "silver"]),
    ])
    await hubsync.create_activation("pat-1", audiences=["a17"], attributes=["ltv", "tier"])
    await hubsync.publish([
        AudienceEntered(audience_id="a17", email="Ada@Example.com"),
        AudienceEntered(audience_id="a17", email="bob@example.com"),
        AttributeChanged(attribute_id="ltv", email="ada@example.com", value=1234.5),
        AttributeChanged(attribute_id="tier", email="bob@example.com", value="gold"),
        AudienceLeft(audience_id="a17", email="bob@example.com"),
    ])

    def synced() -> bool:
        c = hubsync.hubspot()
        return (
            c.get("ada@example.com", {}).get("raptor_abandon_basket") == "true"
            and c.get("ada@example.com", {}).get("raptor_lifetime_value") == "1234.5"
            and c.get("bob@example.com", {}).get("raptor_abandon_basket") == "false"
            and c.get("bob@example.com", {}).get("raptor_tier") == "gold"
        )

    await hubsync.until(synced, timeout=30, what="the contacts in HubSpot")
    props = hubsync.emulator.admin.properties()
    assert "raptor_smart_advisor_cdp" in str(props)


async def test_flips_end_in_the_last_state_and_are_coalesced(hubsync: Hubsync) -> None:
    await hubsync.publish([AudienceDefined(audience_id="vip", name="VIP")])
    activation = await hubsync.create_activation("pat-flip", audiences=["vip"])
    events = []
    for i in range(300):
        email = f"u{i}@example.com"
        flips = 1 + i % 7  # odd: ends in; even: ends out
        for f in range(flips):
            events.append((AudienceEntered if f % 2 == 0 else AudienceLeft)(audience_id="vip", email=email))
    await hubsync.publish(events)

    def expected(i: int) -> str:
        return "true" if (1 + i % 7) % 2 == 1 else "false"

    def synced() -> bool:
        c = hubsync.hubspot()
        return all(c.get(f"u{i}@example.com", {}).get("raptor_vip") == expected(i) for i in range(300))

    await hubsync.until(synced, timeout=30, what="the last state of every contact")
    status = await hubsync.actor("activation", activation).status.remote()
    assert status["changes_in"] == len(events)
    assert status["written"] <= 300 + 50  # a contact is written about once, not once per flip
    stats = hubsync.emulator.admin.stats()
    assert stats["rate_limited"] == 0


async def test_deleting_an_audience_archives_its_property(hubsync: Hubsync) -> None:
    from events.model import AudienceDeleted

    await hubsync.publish([AudienceDefined(audience_id="gone", name="Gone Soon")])
    await hubsync.create_activation("pat-del", audiences=["gone"])
    await hubsync.publish([AudienceEntered(audience_id="gone", email="x@example.com")])
    await hubsync.until(lambda: hubsync.hubspot().get("x@example.com", {}).get("raptor_gone_soon") == "true", timeout=30)
    await hubsync.publish([AudienceDeleted(audience_id="gone")])

    def archived() -> bool:
        props = hubsync.emulator.admin.properties()
        return any(p["name"] == "raptor_gone_soon" and p.get("archived") for p in props.get("properties", props.get("results", [])))

    await hubsync.until(archived, timeout=30, what="the property archived")

"""The HubSpot client against the emulator, over real HTTP on a loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import msgspec
import pytest

from crm import (
    ArchivedPropertyError,
    AuthenticationError,
    ContactUpdate,
    ContactUpsert,
    EnsureOutcome,
    HubSpotClient,
    LockedError,
    MissingScopesError,
    RateLimitedError,
    RateLimitInfo,
    ServerError,
    TransportError,
    ValidationError,
    WriteStatus,
    attribute_property,
    audience_property,
)
from crm.emulator import ALL_SCOPES, EmulatorServer
from crm.schema import ensure_properties, ensure_property, ensure_property_group

pytestmark = pytest.mark.integration

TOKEN = "pat-na1-full-secret"
READER = "pat-na1-reader-secret"
VIP = audience_property("a1", "VIP")
LTV = attribute_property("ltv", "Lifetime value", "number")


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(
        tokens={TOKEN: ALL_SCOPES, READER: {"crm.objects.contacts.read"}}
    ) as server:
        yield server


@pytest.fixture(autouse=True)
def fresh(emulator: EmulatorServer) -> None:
    emulator.admin.reset()


@pytest.fixture(params=["v3", "2026-03"])
async def hubspot(request, emulator: EmulatorServer) -> AsyncIterator[HubSpotClient]:
    async with httpx.AsyncClient(timeout=5.0) as http:
        yield HubSpotClient(TOKEN, base_url=emulator.url, api_version=request.param, http=http)


async def ready(hubspot: HubSpotClient) -> None:
    await ensure_property_group(hubspot)
    await ensure_properties(hubspot, [VIP, LTV])


async def test_ensure_is_idempotent_and_patches_drift(hubspot, emulator):
    assert (await ensure_property_group(hubspot)).outcome is EnsureOutcome.CREATED
    first = await ensure_properties(hubspot, [VIP, LTV])
    assert [r.outcome for r in first] == [EnsureOutcome.CREATED, EnsureOutcome.CREATED]
    assert (await ensure_property_group(hubspot)).outcome is EnsureOutcome.UNCHANGED
    again = await ensure_properties(hubspot, [VIP, LTV])
    assert [r.outcome for r in again] == [EnsureOutcome.UNCHANGED, EnsureOutcome.UNCHANGED]

    drifted = msgspec.structs.replace(LTV, label="Lifetime value (EUR)")
    result = await ensure_property(hubspot, drifted)
    assert result.outcome is EnsureOutcome.UPDATED and "label" in result.changed
    props = {p["name"]: p for p in emulator.admin.properties()["properties"]}
    assert props[LTV.name]["label"] == "Lifetime value (EUR)"
    assert props[VIP.name]["groupName"] == "raptor_smart_advisor_cdp"


async def test_ensure_refuses_to_recreate_an_archived_property(hubspot, emulator):
    await ready(hubspot)
    assert await hubspot.archive_property(VIP.name) is True
    assert await hubspot.archive_property(VIP.name) is False
    with pytest.raises(ArchivedPropertyError) as caught:
        await ensure_properties(hubspot, [VIP, LTV])
    assert caught.value.names == (VIP.name,) and "Restore" in str(caught.value)
    report = await ensure_properties(hubspot, [VIP], on_archived="report")
    assert report[0].outcome is EnsureOutcome.ARCHIVED
    assert emulator.admin.restore_property(VIP.name)
    assert (await ensure_property(hubspot, VIP)).outcome is EnsureOutcome.UNCHANGED


async def test_upsert_creates_then_writes_keyed_by_lower_cased_email(hubspot, emulator):
    await ready(hubspot)
    first = await hubspot.upsert_contacts(
        [
            ContactUpsert("Ada@Example.com", {VIP.name: "true", LTV.name: "1234.5"}),
            ContactUpsert("bob@example.com", {VIP.name: "true"}),
        ]
    )
    assert {k: r.status for k, r in first.by_key.items()} == {
        "ada@example.com": WriteStatus.CREATED,
        "bob@example.com": WriteStatus.CREATED,
    }
    assert first.rate_limit.max == 100 and first.rate_limit.remaining is not None
    second = await hubspot.upsert_contacts([ContactUpsert("ada@example.com", {VIP.name: "false"})])
    assert second.results[0].status is WriteStatus.WRITTEN
    assert second.results[0].contact_id == first.by_key["ada@example.com"].contact_id
    stored = emulator.admin.contact_properties()
    assert stored["ada@example.com"][VIP.name] == "false"
    assert stored["ada@example.com"][LTV.name] == "1234.5"


async def test_a_bad_input_fails_alone_with_hubspots_category(hubspot):
    await ready(hubspot)
    outcome = await hubspot.upsert_contacts(
        [
            ContactUpsert("good@example.com", {VIP.name: "true"}),
            ContactUpsert("bad@example.com", {VIP.name: "maybe"}),
            ContactUpsert("worse@example.com", {"raptor_unknown": "1"}),
        ]
    )
    assert outcome.status_code == 207
    assert outcome.by_key["good@example.com"].ok
    bad, worse = outcome.by_key["bad@example.com"], outcome.by_key["worse@example.com"]
    assert bad.status is WriteStatus.FAILED and bad.category == "VALIDATION_ERROR"
    assert "PROPERTY_DOESNT_EXIST" in (worse.message or "")


async def test_read_by_email_lists_misses_then_update_by_id(hubspot, emulator):
    await ready(hubspot)
    await hubspot.upsert_contacts([ContactUpsert("ada@example.com", {LTV.name: "1"})])
    read = await hubspot.read_contacts_by_email(
        ["ADA@example.com", "ghost@example.com"], [LTV.name]
    )
    assert set(read.found) == {"ada@example.com"} and read.missing == ("ghost@example.com",)
    assert read.found["ada@example.com"].properties[LTV.name] == "1"
    ada = read.found["ada@example.com"].id
    updated = await hubspot.update_contacts(
        [ContactUpdate(ada, {LTV.name: "2"}), ContactUpdate("424242", {LTV.name: "3"})]
    )
    assert updated.by_key[ada].status is WriteStatus.WRITTEN
    assert updated.by_key["424242"].category == "OBJECT_NOT_FOUND"
    single = await hubspot.get_contact_by_email("ada@example.com", [LTV.name])
    assert single is not None and single.properties[LTV.name] == "2"
    assert await hubspot.get_contact_by_email("ghost@example.com") is None


async def test_duplicates_in_a_batch_are_a_validation_error_naming_them(hubspot):
    await ready(hubspot)
    with pytest.raises(ValidationError) as caught:
        await hubspot.upsert_contacts([ContactUpsert("a@x.com", {}), ContactUpsert("A@x.com", {})])
    assert caught.value.status == 400 and caught.value.ids == ("A@x.com",)
    assert "Duplicate IDs" in str(caught.value)
    with pytest.raises(ValueError, match="at most 100"):  # refused before any request
        await hubspot.upsert_contacts([ContactUpsert(f"u{i}@x.com", {}) for i in range(101)])


async def test_unknown_token_is_an_authentication_error_without_the_token(emulator):
    async with HubSpotClient("pat-na1-wrong-secret", base_url=emulator.url) as hubspot:
        with pytest.raises(AuthenticationError) as caught:
            await ensure_property_group(hubspot)
        assert "wrong-secret" not in repr(hubspot)
    error = caught.value
    assert error.status == 401 and error.category == "INVALID_AUTHENTICATION"
    assert "wrong-secret" not in str(error) and "wrong-secret" not in repr(error)
    assert not error.retryable and error.correlation_id


async def test_missing_scope_names_the_scope(emulator):
    async with HubSpotClient(READER, base_url=emulator.url) as hubspot:
        with pytest.raises(MissingScopesError) as caught:
            await hubspot.upsert_contacts([ContactUpsert("a@x.com", {})])
    assert caught.value.scopes == ("crm.objects.contacts.write",)
    assert "crm.objects.contacts.write" in str(caught.value)


async def test_rate_limits_both_policies(hubspot, emulator):
    emulator.admin.configure(rate=3)
    for _ in range(3):
        await hubspot.read_property("email")
    with pytest.raises(RateLimitedError) as burst:
        await hubspot.read_property("email")
    assert burst.value.policy == "TEN_SECONDLY_ROLLING" and burst.value.retry_after == 10.0
    assert burst.value.rate_limit.remaining == 0

    emulator.admin.reset()
    emulator.admin.configure(daily=1, send_retry_after=False)
    await hubspot.read_property("email")
    with pytest.raises(RateLimitedError) as daily:
        await hubspot.read_property("email")
    assert daily.value.is_daily and daily.value.retry_after is None
    assert daily.value.rate_limit.daily_remaining == 0


async def test_retry_after_header_is_honoured_when_sent(hubspot, emulator):
    emulator.admin.configure(rate=1, send_retry_after=True)
    await hubspot.read_property("email")
    with pytest.raises(RateLimitedError) as caught:
        await hubspot.read_property("email")
    assert 1.0 <= caught.value.retry_after <= 10.0


@pytest.mark.parametrize(
    ("status", "error"), [(423, LockedError), (503, ServerError), (500, ServerError)]
)
async def test_locked_and_server_errors_are_retryable(hubspot, emulator, status, error):
    emulator.admin.faults(next_n={"count": 1, "status": status})
    with pytest.raises(error) as caught:
        await hubspot.read_property("email")
    assert caught.value.retryable and caught.value.status == status
    assert await hubspot.read_property("email") is not None


async def test_dropped_connection_and_timeout_are_transport_errors(emulator):
    async with httpx.AsyncClient(timeout=httpx.Timeout(0.3)) as http:
        hubspot = HubSpotClient(TOKEN, base_url=emulator.url, http=http)
        emulator.admin.faults(next_n={"count": 1, "status": "drop"})
        with pytest.raises(TransportError, match="connection"):
            await hubspot.read_property("email")
        emulator.admin.faults(next_n={"count": 1, "status": "hang"})
        with pytest.raises(TransportError, match="in time"):
            await hubspot.read_property("email")
        assert await hubspot.read_property("email") is not None
    assert emulator.admin.stats()["faults"] == {"drop": 1, "hang": 1}


async def test_hooks_see_every_request_and_the_remaining_count_down(emulator):
    seen: list[tuple[RateLimitInfo, int]] = []
    permits = 0

    async def before() -> None:
        nonlocal permits
        permits += 1

    async with HubSpotClient(
        TOKEN,
        base_url=emulator.url,
        before_request=before,
        after_response=lambda info, status: seen.append((info, status)),
    ) as hubspot:
        for _ in range(3):
            await hubspot.read_property("email")
        emulator.admin.faults(next_n={"count": 1, "status": "drop"})
        with pytest.raises(TransportError):
            await hubspot.read_property("email")
    assert permits == 4
    assert [info.remaining for info, _ in seen[:3]] == [99, 98, 97]
    assert [status for _, status in seen] == [200, 200, 200, 0]
    assert not seen[3][0].known


async def test_names_and_emails_are_checked_before_they_reach_a_url(hubspot):
    for bad in ("../x", "a?b", "Upper", "a/b"):
        with pytest.raises(ValueError):
            await hubspot.read_property(bad)
    for bad in ("../x@y.com", "a?b@x.com", "no-at-sign", "a@b/c.com"):
        with pytest.raises(ValueError):
            await hubspot.get_contact_by_email(bad)

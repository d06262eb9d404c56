"""HubSpot's bad days: 5xx, 423, timeouts, dropped connections, 429 storms, the daily limit, a 400
for one input of a batch, and tokens it refuses (401/403). Each ends with HubSpot compared to the
state computed independently from the published events: nothing lost, nothing duplicated."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import pytest

from crm.client import HubSpotClient
from crm.emulator import EmulatorServer
from crm.tokens import token_fingerprint
from events.model import (
    ActivationDeleted,
    ActivationResumed,
    AttributeChanged,
    AttributeDefined,
    AudienceDefined,
    AudienceEntered,
)
from events.streams import DeadLetters
from hubsync.views import collect
from tests.integration.conftest import SECRET_KEY
from tests.integration.harness import Hubsync, scenario

pytestmark = pytest.mark.integration

MakeHubsync = Callable[..., Awaitable[Hubsync]]


@pytest.fixture
async def make_hubsync(
    ray_session: None, redis_url: str, emulator: EmulatorServer
) -> AsyncIterator[MakeHubsync]:
    """A hubsync whose actor Settings a test may change (e.g. a short HubSpot timeout)."""
    emulator.admin.reset()
    started: list[Hubsync] = []

    async def make(**settings: Any) -> Hubsync:
        running = Hubsync(redis_url, emulator, SECRET_KEY)
        running.settings = msgspec.structs.replace(running.settings, **settings)
        await running.start()
        started.append(running)
        return running

    yield make
    for running in started:
        await running.stop()


CATALOG = [
    AudienceDefined(audience_id="aud", name="Audience"),
    AttributeDefined(attribute_id="score", name="Score", value_type="number"),
]


def differences(
    hubsync: Hubsync, expected: dict[str, dict[str, str]]
) -> list[tuple[str, str, str, str | None]]:
    hubspot = hubsync.hubspot()
    return [
        (e, p, v, hubspot.get(e, {}).get(p))
        for e, ps in expected.items()
        for p, v in ps.items()
        if hubspot.get(e, {}).get(p) != v
    ]


async def converge(
    hubsync: Hubsync, expected: dict[str, dict[str, str]], timeout: float = 60
) -> None:
    try:
        await hubsync.until(
            lambda: not differences(hubsync, expected),
            timeout=timeout,
            every=0.25,
            what="HubSpot to equal the expected state",
        )
    except AssertionError:
        wrong = differences(hubsync, expected)
        raise AssertionError(f"{len(wrong)} values differ, e.g. {wrong[:5]}") from None
    emails = [c["properties"].get("email") for c in hubsync.emulator.admin.contacts()]
    duplicated = [e for e, n in Counter(emails).items() if n > 1]
    assert not duplicated, f"contacts duplicated in HubSpot: {duplicated[:5]}"
    assert set(emails) == set(expected), "HubSpot holds contacts nobody published"


async def eventually(
    check: Callable[[], Awaitable[Any]], *, timeout: float = 30, what: str = ""
) -> Any:
    """`Hubsync.until` for checks that read Redis (async)."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            assert result, f"timed out after {timeout}s waiting for {what}"
            return result
        await asyncio.sleep(0.25)


def figures(hubsync: Hubsync, what: str) -> dict[str, Any]:
    stats = hubsync.emulator.admin.stats()
    by_status = stats["by_status"]
    errors = sum(n for s, n in by_status.items() if not s.startswith("2"))  # 4xx, 5xx, drop, hang
    share = errors / stats["requests"]
    print(
        f"{what}: {stats['requests']} requests, by status {by_status}, error share {share:.1%}, "
        f"429s {stats['rate_limited']}, faults injected {stats['faults']}"
    )
    return {"stats": stats, "errors": errors, "share": share}


# With seed 7 a 10% rate fires on 5 of the first 20 requests or so: every kind is exercised.
FAULTS = {
    "5xx": ({"error_rate": 0.10, "error_status": 503}, {}),
    "423": ({"locked_rate": 0.10}, {}),
    "dropped connections": ({"drop_rate": 0.10}, {}),
    # a hang outlasts the client's timeout (shortened to 1 s for the test): the call times out
    "timeouts": ({"hang_rate": 0.10, "hang_seconds": 5.0}, {"http_timeout_s": 1.0}),
}


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_hubspot_failing_now_and_then_loses_and_duplicates_nothing(
    make_hubsync: MakeHubsync, fault: str
) -> None:
    faults, settings = FAULTS[fault]
    hubsync = await make_hubsync(**settings)
    hubsync.emulator.admin.faults(seed=7, **faults)
    await hubsync.publish(CATALOG)
    await hubsync.create_activation("pat-faults", audiences=["aud"], attributes=["score"])
    events, expected = scenario(seed=3, contacts=300, events=1_500)
    for start in range(0, len(events), 50):  # in waves, so there are many calls to fail
        await hubsync.publish(events[start : start + 50])
        await asyncio.sleep(0.15)
    await converge(hubsync, expected, timeout=90)
    measured = figures(hubsync, fault)
    injected = sum(measured["stats"]["faults"].values())
    assert injected > 0, "the fault never fired: the test proves nothing"
    # Every error response is one the emulator injected, or the 404 that tells hubsync the
    # property group does not exist yet: hubsync caused no error of its own.
    probes = sum(
        1
        for r in hubsync.emulator.admin.requests()
        if (r["operation"], r["status"]) == ("group_get", "404")
    )
    assert measured["errors"] == injected + probes
    assert measured["stats"]["rate_limited"] == 0


async def test_a_429_storm_never_retries_inside_the_window_that_refused_it(
    make_hubsync: MakeHubsync,
) -> None:
    hubsync = await make_hubsync()
    await hubsync.publish(
        [
            AudienceDefined(audience_id="one", name="One"),
            AudienceDefined(audience_id="two", name="Two"),
        ]
    )
    await hubsync.create_activation("pat-storm", audiences=["one"], name="first")
    await hubsync.create_activation("pat-storm", audiences=["two"], name="second")
    await hubsync.publish(
        [AudienceEntered(audience_id=a, email=f"warm-{a}@example.com") for a in ("one", "two")]
    )
    await hubsync.until(
        lambda: len(hubsync.hubspot()) == 2, timeout=30, what="the schema and a first write"
    )
    # HubSpot now allows 5 calls per 10 s where hubsync believes 100, and the warm-up calls
    # still fill that window: the four batches that fire at once are all refused.
    hubsync.emulator.admin.configure(rate=5)
    await hubsync.publish(
        [
            AudienceEntered(audience_id=a, email=f"{a}{i}@example.com")
            for a in ("one", "two")
            for i in range(200)
        ]
    )
    expected = {
        f"{a}{i}@example.com": {f"raptor_{a}": "true"} for a in ("one", "two") for i in range(200)
    }
    expected |= {f"warm-{a}@example.com": {f"raptor_{a}": "true"} for a in ("one", "two")}
    await converge(hubsync, expected, timeout=60)
    measured = figures(hubsync, "429 storm")
    log = [
        r for r in hubsync.emulator.admin.requests() if r["token"] == token_fingerprint("pat-storm")
    ]
    refusals = [r["at"] for r in log if r["status"] == "429"]
    assert refusals, "HubSpot never refused a call: the test proves nothing"
    # Calls already on the wire when the first 429 came back land within a few ms of it; any
    # later call inside the 10 s window that refused it would be a retry that HubSpot refuses again.
    for refused_at in refusals:
        inside = [r for r in log if refused_at + 0.5 < r["at"] < refused_at + 10.0]
        assert not inside, (
            f"{len(inside)} calls within the window that refused a call at {refused_at}: {inside[:3]}"
        )
    assert measured["stats"]["rate_limited"] <= 8  # one burst, never a second one


async def test_the_daily_limit_holds_the_writes_and_says_until_when(
    make_hubsync: MakeHubsync,
) -> None:
    hubsync = await make_hubsync()
    await hubsync.publish([AudienceDefined(audience_id="aud", name="Audience")])
    activation = await hubsync.create_activation("pat-daily", audiences=["aud"])
    await hubsync.publish([AudienceEntered(audience_id="aud", email="first@example.com")])
    await hubsync.until(
        lambda: "first@example.com" in hubsync.hubspot(), timeout=30, what="a first write"
    )
    used = hubsync.emulator.admin.stats()["daily_used"]
    hubsync.emulator.admin.configure(daily=used + 2)  # two calls left today
    await hubsync.publish(
        [AudienceEntered(audience_id="aud", email=f"d{i}@example.com") for i in range(1_000)]
    )

    async def waiting() -> dict[str, Any] | None:
        [record] = await collect(hubsync.redis, hubsync.keys)
        token = record["token"] or {}
        return record if "daily limit to reset at" in (token.get("waiting_for") or "") else None

    record = await eventually(waiting, what="hubsync status to say it waits for the daily reset")
    assert record["activation_id"] == activation
    print("hubsync status says:", record["token"]["waiting_for"])
    stats = hubsync.emulator.admin.stats()
    assert stats["daily_used"] == used + 2
    assert stats["rate_limited"] <= 4  # at most the calls in flight, then silence until midnight
    before = stats["requests"]
    await asyncio.sleep(3)
    assert hubsync.emulator.admin.stats()["requests"] == before, (
        "calls went on after the daily limit"
    )
    status = record["status"] or {}
    assert status.get("state") == "running" and status.get("pending", 0) > 0


async def test_one_bad_input_is_parked_with_hubspots_message_and_the_other_99_are_written(
    make_hubsync: MakeHubsync,
) -> None:
    hubsync = await make_hubsync()
    hubsync.emulator.admin.configure(
        email_upsert_errors="whole_batch"
    )  # a bad input fails the whole batch (400)
    hubsync.emulator.admin.faults(reject_emails=["refused42@example.com"])
    await hubsync.publish([AudienceDefined(audience_id="aud", name="Audience")])
    activation = await hubsync.create_activation("pat-400", audiences=["aud"])
    emails = [f"ok{i}@example.com" for i in range(99)]
    emails.insert(42, "refused42@example.com")
    await hubsync.publish([AudienceEntered(audience_id="aud", email=e) for e in emails])
    expected = {e: {"raptor_audience": "true"} for e in emails if e != "refused42@example.com"}
    await converge(hubsync, expected, timeout=30)
    dead = DeadLetters(hubsync.redis, hubsync.keys)
    [letter] = await eventually(dead.list, what="the bad input on the dead-letter stream")
    assert letter.stream == f"activation:{activation}"
    assert "refused42@example.com" in letter.raw.decode()
    assert "Email address refused42@example.com is invalid" in letter.reason, letter.reason
    status = await hubsync.actor("activation", activation).status.remote()
    assert status["parked"] == 1 and status["pending"] == 0
    figures(hubsync, "400 for one input")


async def test_a_refused_token_pauses_only_its_own_activations_without_a_retry_storm(
    make_hubsync: MakeHubsync,
) -> None:
    hubsync = await make_hubsync()
    admin = hubsync.emulator.admin
    admin.configure(open_auth=False)
    partial = [
        "crm.schemas.contacts.read",
        "crm.schemas.contacts.write",
        "crm.objects.contacts.read",
    ]
    admin.register_token("pat-good")
    admin.register_token("pat-revoked")
    admin.register_token("pat-partial", partial)
    await hubsync.publish(
        [AudienceDefined(audience_id=a, name=a.title()) for a in ("good", "revoked", "partial")]
    )
    good = await hubsync.create_activation("pat-good", audiences=["good"])
    revoked = await hubsync.create_activation("pat-revoked", audiences=["revoked"])
    partial_id = await hubsync.create_activation("pat-partial", audiences=["partial"])

    def members(audience: str) -> int:
        return sum(1 for p in hubsync.hubspot().values() if p.get(f"raptor_{audience}") == "true")

    await hubsync.publish(
        [AudienceEntered(audience_id=a, email=f"{a}-warm@example.com") for a in ("good", "revoked")]
    )
    await hubsync.until(
        lambda: members("good") == 1 and members("revoked") == 1, timeout=30, what="a first write"
    )
    admin.revoke_token("pat-revoked")
    await hubsync.publish(
        [
            AudienceEntered(audience_id=a, email=f"{a}{i}@example.com")
            for i in range(200)
            for a in ("good", "revoked", "partial")
        ]
    )

    async def paused(activation_id: str) -> str | None:
        for record in await collect(hubsync.redis, hubsync.keys):
            if record["activation_id"] == activation_id and record["paused"]:
                return record["pause_reason"]
        return None

    async def both_paused() -> dict[str, str | None] | None:
        reasons = {a: await paused(a) for a in (revoked, partial_id)}
        return reasons if all(reasons.values()) else None

    reasons = await eventually(both_paused, what="both refused activations to pause")
    print("pause reasons:", reasons)
    assert "401" in (reasons[revoked] or "") and "revoked" in (reasons[revoked] or "")
    assert "403" in (reasons[partial_id] or "") and "crm.objects.contacts.write" in (
        reasons[partial_id] or ""
    )
    # The other token's activation is not touched: it syncs everything.
    await hubsync.until(
        lambda: members("good") == 201, timeout=30, what="the good token's activation to sync"
    )
    assert await paused(good) is None
    await asyncio.sleep(2)  # give a retry storm the time to show
    log = admin.requests()
    for token in ("pat-revoked", "pat-partial"):
        mine = [r for r in log if r["token"] == token_fingerprint(token)]
        first = next(i for i, r in enumerate(mine) if r["status"] in ("401", "403"))
        after = mine[first + 1 :]
        print(
            f"{token}: {len(after)} requests after the first refusal: {Counter(r['status'] for r in after)}"
        )
        assert len(after) <= 4, f"{token}: a retry storm of {len(after)} requests"
    assert members("revoked") == 1 and members("partial") == 0

    # The operator fixes the tokens in HubSpot and resumes: syncing continues where it stopped.
    admin.register_token("pat-revoked")
    admin.register_token("pat-partial")
    for activation_id in (revoked, partial_id):
        await hubsync.control(ActivationResumed(activation_id=activation_id))
    await hubsync.until(
        lambda: members("revoked") == 201 and members("partial") == 200,
        timeout=60,
        what="the resumed activations to sync",
    )


async def test_a_property_archived_in_hubspot_degrades_only_that_property(
    make_hubsync: MakeHubsync,
) -> None:
    """Someone archives a hubsync property in HubSpot: HubSpot then refuses every batch that
    sets it (400, PROPERTY_DOESNT_EXIST). Within two calls the property is a problem in
    `hubsync status` and the contacts' other properties are written; no contact is parked."""
    hubsync = await make_hubsync()
    admin = hubsync.emulator.admin
    admin.configure(email_upsert_errors="whole_batch")
    await hubsync.publish(CATALOG)
    activation = await hubsync.create_activation(
        "pat-archived", audiences=["aud"], attributes=["score"]
    )
    await hubsync.publish(
        [
            AudienceEntered(audience_id="aud", email="warm@example.com"),
            AttributeChanged(attribute_id="score", email="warm@example.com", value=1),
        ]
    )
    await hubsync.until(
        lambda: hubsync.hubspot().get("warm@example.com", {}).get("raptor_score") == "1",
        timeout=30,
        what="a first write of both properties",
    )
    async with HubSpotClient("pat-archived", base_url=hubsync.emulator.url) as hubspot:
        assert await hubspot.archive_property("raptor_score")  # done by hand in HubSpot
    before = len(admin.requests())
    emails = [f"arch{i}@example.com" for i in range(100)]
    await hubsync.publish(
        [AudienceEntered(audience_id="aud", email=e) for e in emails]
        + [AttributeChanged(attribute_id="score", email=e, value=i) for i, e in enumerate(emails)]
    )
    expected = {e: {"raptor_audience": "true"} for e in emails}
    expected["warm@example.com"] = {"raptor_audience": "true"}
    await converge(hubsync, expected, timeout=30)
    status = await hubsync.actor("activation", activation).status.remote()
    print("status problems:", status["problems"])
    assert status["state"] == "degraded" and list(status["problems"]) == ["t:score"]
    assert "raptor_score" in status["problems"]["t:score"]
    assert "PROPERTY_DOESNT_EXIST" in status["problems"]["t:score"]
    assert status["parked"] == 0 and await DeadLetters(hubsync.redis, hubsync.keys).list() == []
    writes = [r for r in admin.requests()[before:] if r["operation"] == "contacts_batch_upsert"]
    refused = [r for r in writes if r["status"] == "400"]
    print(f"after the archive: {len(writes)} writes, {len(refused)} refused")
    assert 1 <= len(refused) <= 2, refused  # told once (per batch in flight), never split
    assert all("raptor_score" not in p for e, p in hubsync.hubspot().items() if e in emails)


async def test_no_call_of_a_deleted_activation_reaches_hubspot(make_hubsync: MakeHubsync) -> None:
    """A batch of an activation waits out a 429 in the governor when the activation is deleted:
    the governor (kept alive by another activation on the same token) refuses the retry."""
    hubsync = await make_hubsync()
    admin = hubsync.emulator.admin
    await hubsync.publish(
        [
            AudienceDefined(audience_id="gone", name="Gone"),
            AudienceDefined(audience_id="stay", name="Stay"),
        ]
    )
    doomed = await hubsync.create_activation("pat-shared", audiences=["gone"], name="doomed")
    await hubsync.create_activation("pat-shared", audiences=["stay"], name="stays")
    await hubsync.publish(
        [AudienceEntered(audience_id=a, email=f"warm-{a}@example.com") for a in ("gone", "stay")]
    )
    await hubsync.until(
        lambda: len(hubsync.hubspot()) == 2, timeout=30, what="the schema and a first write"
    )
    admin.faults(next_n={"count": 1, "status": 429})  # the next call waits out a 10 s window
    await hubsync.publish(
        [AudienceEntered(audience_id="gone", email=f"late{i}@example.com") for i in range(5)]
    )
    await hubsync.until(
        lambda: any(r["status"] == "429" for r in admin.requests()), timeout=10, what="the 429"
    )
    await hubsync.control(ActivationDeleted(activation_id=doomed))  # `hubsync activation delete`
    await asyncio.sleep(14)  # the window passes: a retry would go out now
    written = [e for e in hubsync.hubspot() if e.startswith("late")]
    assert not written, f"HubSpot got writes of a deleted activation: {written}"

"""Hostile input end to end: poison entries of every kind, mixed with good changes on every
partition, a Router crash in the middle, then a second wave. Every good change reaches HubSpot
with its last value; every poison entry is on ``hubsync:dead`` with its reason; nothing stays
pending, and the change streams are trimmed once everything is acknowledged."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import pytest
import ray

from events.model import (
    AttributeDefined,
    AudienceDefined,
    AudienceDeleted,
)
from events.streams import EVENT_FIELD, DeadLetters, partition_of
from tests.integration.harness import Hubsync

pytestmark = pytest.mark.integration

AT_OVERFLOW = "0001-01-01T00:00:00+01:00"  # year 0 once in UTC: OverflowError before


@dataclass(frozen=True)
class Poison:
    fields: dict[bytes, bytes]
    reason: str  # what the dead letter's reason must say
    bad_id: bool = False  # XADD with an explicit id whose sequence no position can hold


def _event(body: dict[str, Any]) -> dict[bytes, bytes]:
    return {EVENT_FIELD: json.dumps(body).encode()}


def _emails(prefix: str, partition: int, partitions: int, n: int) -> list[str]:
    out: list[str] = []
    i = 0
    while len(out) < n:
        email = f"{prefix}{i}@example.com"
        if partition_of(email, partitions) == partition:
            out.append(email)
        i += 1
    return out


def poisons(wave: int, p: int, partitions: int) -> list[Poison]:
    """Every kind of entry that must be parked, for partition p (its emails are p's, except the
    one that is deliberately on the wrong partition)."""
    [mine] = _emails(f"poison{wave}-", p, partitions, 1)
    [other] = _emails(f"stray{wave}-", (p + 1) % partitions, partitions, 1)
    entered = {"type": "audience_entered", "audience_id": "aud", "email": mine}
    changed = {"type": "attribute_changed", "email": mine}
    nested = "[" * 5_000 + "]" * 5_000
    deep = json.dumps(entered)[:-1] + f', "x": {nested}}}'
    huge = json.dumps({**changed, "attribute_id": "score", "value": 1})[:-2] + "1e400}"
    return [
        Poison({EVENT_FIELD: deep.encode()}, "nested deeper than 64 levels"),
        Poison(_event({**entered, "pad": "x" * 70_000}), "larger than HUBSYNC_MAX_ENTRY_BYTES"),
        Poison({b"payload": b"{}"}, "entry has no 'event' field"),
        Poison({EVENT_FIELD: b"\xff\xfe{\x00garbage"}, "not a JSON object"),
        Poison(_event(entered), "unusable stream id", bad_id=True),
        Poison(
            _event({**changed, "attribute_id": "seen", "value": AT_OVERFLOW}),
            "outside years 1-9999",
        ),
        Poison(_event({**entered, "at": AT_OVERFLOW}), "outside years 1-9999"),
        Poison(_event({**changed, "attribute_id": "score", "value": 2**60}), "beyond ±2^53"),
        Poison(
            {EVENT_FIELD: huge.encode()},
            "Number out of range",
        ),
        Poison(
            _event({**changed, "attribute_id": "tier", "value": ["gold"]}),
            "is a list; an enumeration takes one option",
        ),
        Poison(_event({**entered, "email": "zero\u200bwidth@example.com"}), "ZERO WIDTH SPACE"),
        Poison(_event({**entered, "email": "bell\x07@example.com"}), "U+0007"),
        Poison(_event({**entered, "email": "rtl\u202e@example.com"}), "RIGHT-TO-LEFT OVERRIDE"),
        Poison(_event({**entered, "email": "x" * 65 + "@example.com"}), "at most 64"),
        Poison(_event({**entered, "email": other}), f"belongs to partition {(p + 1) % partitions}"),
        Poison(_event({**entered, "audience_id": "gone"}), "audience 'gone' was deleted"),
        Poison(_event({**entered, "audience_id": "nosuch"}), "unknown audience 'nosuch'"),
    ]


def goods(wave: int, emails: list[str]) -> tuple[list[dict[bytes, bytes]], dict[str, dict]]:
    """Good changes for these emails, and what HubSpot must hold for them afterwards."""
    fields: list[dict[bytes, bytes]] = []
    expected: dict[str, dict[str, str]] = {}
    for i, email in enumerate(emails):
        score = wave * 1_000 + i
        tier = "gold" if (i + wave) % 2 else "silver"
        fields += [
            _event({"type": "audience_entered", "audience_id": "aud", "email": email}),
            _event(
                {
                    "type": "attribute_changed",
                    "attribute_id": "score",
                    "email": email,
                    "value": score,
                }
            ),
            _event(
                {"type": "attribute_changed", "attribute_id": "tier", "email": email, "value": tier}
            ),
        ]
        expected[email] = {
            "raptor_audience": "true",
            "raptor_score": str(score),
            "raptor_tier": tier,
        }
    return fields, expected


async def write_wave(
    hubsync: Hubsync, wave: int, emails_per_partition: dict[int, list[str]]
) -> tuple[dict[tuple[str, str], str], dict[str, dict[str, str]]]:
    """Good and poison entries interleaved on every partition; returns (stream, id) -> reason of
    each poison entry, and the expected HubSpot state of the good ones."""
    partitions = hubsync.settings.partitions
    parked: dict[tuple[str, str], str] = {}
    expected: dict[str, dict[str, str]] = {}
    for p in range(partitions):
        stream = hubsync.keys.changes(p)
        good, wanted = goods(wave, emails_per_partition[p])
        expected.update(wanted)
        bad = poisons(wave, p, partitions)
        for i in range(max(len(good), len(bad))):
            if i < len(good):
                await hubsync.redis.xadd(stream, good[i])
            if i < len(bad):
                poison = bad[i]
                entry_id = "*"
                if poison.bad_id:  # just after the stream's last id: Redis takes it, SEQ_BITS not
                    [(top, _)] = await hubsync.redis.xrevrange(stream, count=1)
                    entry_id = f"{top.decode().split('-')[0]}-2000000"
                added = await hubsync.redis.xadd(stream, poison.fields, id=entry_id)
                if poison.bad_id:
                    await asyncio.sleep(0.005)  # the next auto id starts a new millisecond at -0
                parked[(stream, added.decode())] = poison.reason
    return parked, expected


async def test_poison_entries_of_every_kind_never_wedge_a_partition(hubsync: Hubsync) -> None:
    partitions = hubsync.settings.partitions
    # A poison entry on the catalog stream too: every Router folds it, none may stop on it.
    await hubsync.redis.xadd(hubsync.keys.catalog, {EVENT_FIELD: b"[" * 5_000 + b"]" * 5_000})
    await hubsync.publish(
        [
            AudienceDefined(audience_id="aud", name="Audience"),
            AudienceDefined(audience_id="gone", name="Gone"),
            AudienceDeleted(audience_id="gone"),
            AttributeDefined(attribute_id="score", name="Score", value_type="number"),
            AttributeDefined(attribute_id="seen", name="Seen", value_type="datetime"),
            AttributeDefined(
                attribute_id="tier",
                name="Tier",
                value_type="enumeration",
                options=["gold", "silver"],
            ),
        ]
    )
    activation = await hubsync.create_activation(
        "pat-hostile", audiences=["aud"], attributes=["score", "seen", "tier"]
    )
    first = {p: _emails("one-", p, partitions, 12) for p in range(partitions)}
    parked, expected = await write_wave(hubsync, 1, first)

    # A Router crash in the middle: Ray restarts each, which re-reads its pending entries.
    await asyncio.sleep(0.3)
    for p in range(partitions):
        ray.kill(hubsync.actor("router", p), no_restart=False)

    # The second wave: new contacts, and new values for half of the first wave's.
    second = {p: first[p][::2] + _emails("two-", p, partitions, 8) for p in range(partitions)}
    parked_2, expected_2 = await write_wave(hubsync, 2, second)
    parked.update(parked_2)
    expected.update(expected_2)

    def all_good_in_hubspot() -> bool:
        hubspot = hubsync.hubspot()
        return all(
            hubspot.get(email, {}).get(prop) == value
            for email, props in expected.items()
            for prop, value in props.items()
        )

    await hubsync.until(all_good_in_hubspot, timeout=90, what="every good change in HubSpot")

    dead = DeadLetters(hubsync.redis, hubsync.keys)
    for _ in range(300):
        if await dead.count() >= len(parked):
            break
        await asyncio.sleep(0.1)
    letters = await dead.list(count=len(parked) + 20)
    by_entry = {(letter.stream, letter.id): letter for letter in letters}
    assert set(by_entry) == set(parked), "a dead letter for every poison entry, and only for them"
    for key, reason in parked.items():
        letter = by_entry[key]
        assert reason in letter.reason, (key, reason, letter.reason)
        assert len(letter.raw) <= 4096 and len(letter.reason) <= 1000
    # who the letters name, for the console's filters
    gone = [letter for letter in letters if "'gone' was deleted" in letter.reason]
    assert gone and all(
        letter.audience_id == "gone" and letter.email.startswith("poison") for letter in gone
    )

    # Nothing left pending, the bad input never reached the activation, the streams trimmed.
    for p in range(partitions):
        pending = await hubsync.redis.xpending(hubsync.keys.changes(p), "routers")
        assert pending["pending"] == 0
    status = await hubsync.actor("activation", activation).status.remote()
    assert status["parked"] == 0

    async def trimmed() -> bool:
        lengths = [await hubsync.redis.xlen(hubsync.keys.changes(p)) for p in range(partitions)]
        return sum(lengths) == 0

    for _ in range(100):
        if await trimmed():
            break
        await asyncio.sleep(0.1)
    assert await trimmed(), "acknowledged change entries are trimmed"
    print(
        f"hostile input: {len(parked)} poison entries parked, {len(expected)} contacts in step, "
        f"over {partitions} partitions with a Router crash"
    )

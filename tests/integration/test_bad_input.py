"""Bad input on the change streams: whatever a producer XADDs, every unusable entry is parked on
the dead-letter stream with a reason a person can act on, nothing stops, and the good entries
around the bad ones all reach HubSpot."""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.model import (
    CDP_TYPES,
    AttributeDefined,
    AudienceDefined,
    InvalidEvent,
    check_value,
    normalise_email,
)
from events.streams import DeadLetters, partition_of
from tests.integration.harness import Hubsync

pytestmark = pytest.mark.integration

KNOWN_AUDIENCES = {"aud"}
SCORE = AttributeDefined(attribute_id="score", name="Score", value_type="number")
NOTE = AttributeDefined(attribute_id="note", name="Note", value_type="string")


def _valid_email(text: str) -> bool:
    try:
        normalise_email(text)
    except InvalidEvent:
        return False
    return True


def _valid_score(value: Any) -> bool:
    try:
        check_value(SCORE, value)
    except InvalidEvent:
        return False
    return True


def _event(body: Any) -> dict[bytes, bytes]:
    return {b"event": json.dumps(body).encode()}


ids = st.from_regex(r"[a-z][a-z0-9]{2,12}", fullmatch=True)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
ENTERED = {"type": "audience_entered", "audience_id": "aud", "email": "x@example.com"}
CHANGED = {
    "type": "attribute_changed",
    "attribute_id": "score",
    "email": "x@example.com",
    "value": 1,
}

# Each strategy makes entries that are bad by construction.
bad_entries = st.one_of(
    st.binary(max_size=300).map(lambda raw: {b"event": raw}),  # random bytes
    st.text(max_size=80)
    .filter(lambda t: not t.lstrip().startswith("{"))
    .map(lambda t: {b"event": t.encode()}),
    json_values.filter(lambda v: not isinstance(v, dict)).map(_event),  # JSON, but not an object
    st.text(min_size=1, max_size=40)
    .filter(lambda t: t not in CDP_TYPES)
    .map(lambda t: _event({**ENTERED, "type": t})),
    st.sampled_from(sorted(ENTERED)).map(
        lambda k: _event({f: v for f, v in ENTERED.items() if f != k})
    ),  # a field missing
    st.sampled_from(sorted(CHANGED)).map(
        lambda k: _event({f: v for f, v in CHANGED.items() if f != k})
    ),
    st.text(max_size=60)
    .filter(lambda t: not _valid_email(t))
    .map(lambda e: _event({**ENTERED, "email": e})),
    json_values.filter(lambda v: v is not None and not _valid_score(v)).map(
        lambda v: _event({**CHANGED, "value": v})
    ),
    ids.filter(lambda a: a not in KNOWN_AUDIENCES).map(
        lambda a: _event({**ENTERED, "audience_id": a})
    ),
    ids.map(
        lambda a: _event({"type": "audience_defined", "audience_id": a, "name": a})
    ),  # catalog event, wrong stream
    st.dictionaries(
        st.binary(min_size=1, max_size=10).filter(lambda k: k != b"event"),
        st.binary(max_size=20),
        min_size=1,
        max_size=3,
    ),  # no `event` field at all
)

# Named cases, each with what its reason must say so that a person knows what to fix.
NAMED: list[tuple[dict[bytes, bytes], str]] = [
    ({b"event": b"{not json"}, "not a JSON object"),
    ({b"event": b"\xff\xfe\x00garbage"}, "not a JSON object"),
    ({b"payload": b"{}"}, "no 'event' field"),
    (_event({**ENTERED, "type": "audience_joined"}), "unknown CDP event type 'audience_joined'"),
    (_event({"type": "audience_entered", "audience_id": "aud"}), "email"),
    (_event({**ENTERED, "email": "not-an-email"}), "invalid email 'not-an-email'"),
    (_event({**CHANGED, "value": "1234.5"}), "expected a JSON number"),
    (  # over HUBSYNC_MAX_ENTRY_BYTES (64 KiB) before it is over HubSpot's 65,536 characters
        _event({**CHANGED, "attribute_id": "note", "value": "x" * 70_000}),
        "larger than HUBSYNC_MAX_ENTRY_BYTES (65536); parked unread",
    ),
    (_event({**CHANGED, "value": "y" * 2_000_000}), "parked unread"),  # an enormous entry
    (
        _event({**ENTERED, "audience_id": "nosuch"}),
        "unknown audience 'nosuch': publish an audience_defined event",
    ),
    (
        _event(
            {"type": "attribute_defined", "attribute_id": "z", "name": "Z", "value_type": "number"}
        ),
        "is a catalog event: publish it to",
    ),
]


def generated_bad_entries(n: int) -> list[dict[bytes, bytes]]:
    """One big batch from hypothesis, derandomised: the same entries on every run."""
    collected: list[dict[bytes, bytes]] = []

    @settings(
        max_examples=n,
        database=None,
        derandomize=True,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(bad_entries)
    def collect(fields: dict[bytes, bytes]) -> None:
        collected.append(fields)

    collect()
    return collected


async def test_every_bad_entry_is_parked_with_its_reason_and_the_good_ones_arrive(
    hubsync: Hubsync,
) -> None:
    await hubsync.publish([AudienceDefined(audience_id="aud", name="Audience"), SCORE, NOTE])
    activation = await hubsync.create_activation(
        "pat-bad-input", audiences=["aud"], attributes=["score", "note"]
    )
    partitions = hubsync.settings.partitions
    rng = random.Random(5)
    bad = [fields for fields, _ in NAMED] + generated_bad_entries(300)
    good_emails = [f"good{i}@example.com" for i in range(len(bad) + 1)]
    # Good and bad interleaved on every partition: a good entry before and after each bad one.
    bad_ids: dict[tuple[str, str], int] = {}  # (stream, id): ids repeat across partitions
    pipe = hubsync.redis.pipeline(transaction=False)
    order: list[tuple[str, int]] = []
    for i, email in enumerate(good_emails):
        pipe.xadd(
            hubsync.keys.changes(partition_of(email, partitions)),
            _event({**ENTERED, "email": email}),
        )
        if i < len(bad):
            stream = hubsync.keys.changes(rng.randrange(partitions))
            pipe.xadd(stream, bad[i])
            order.append((stream, i))
    added = await pipe.execute()
    for (stream, index), entry_id in zip(order, added[1::2], strict=False):
        bad_ids[(stream, entry_id.decode())] = index

    def all_good_written() -> bool:
        hubspot = hubsync.hubspot()
        return all(hubspot.get(e, {}).get("raptor_audience") == "true" for e in good_emails)

    await hubsync.until(all_good_written, timeout=60, what="every good entry in HubSpot")
    dead = DeadLetters(hubsync.redis, hubsync.keys)
    deadline = time.monotonic() + 30
    while await dead.count() < len(bad) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    letters = await dead.list(count=len(bad) + 10)
    assert len(letters) == len(bad), f"{len(bad)} bad entries, {len(letters)} dead letters"
    by_entry = {(letter.stream, letter.id): letter for letter in letters}
    assert set(by_entry) == set(bad_ids), "a dead letter for every bad entry, and only for them"
    for entry_id, index in bad_ids.items():
        letter = by_entry[entry_id]
        raw = bad[index].get(b"event", b"")
        assert letter.raw == raw[:4096], (
            "the dead letter keeps the entry's first 4 KiB as they were"
        )
        assert letter.raw_bytes == len(raw)
        assert 10 <= len(letter.reason) <= 600, f"an unreadable reason: {letter.reason[:200]!r}"
        if index < len(NAMED):
            assert NAMED[index][1] in letter.reason, (NAMED[index][1], letter.reason)
    # The stream is drained: every entry, bad ones included, acknowledged; nothing stuck.
    for p in range(partitions):
        pending = await hubsync.redis.xpending(hubsync.keys.changes(p), "routers")
        assert pending["pending"] == 0
    status = await hubsync.actor("activation", activation).status.remote()
    assert status["parked"] == 0  # bad input never reached the activation
    print(
        f"bad input: {len(bad)} bad entries parked, {len(good_emails)} good ones written; reasons e.g.:"
    )
    for letter in letters[:: max(1, len(letters) // 8)]:
        print("   ", letter.reason[:160])

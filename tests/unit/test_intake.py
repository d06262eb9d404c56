"""Intake without Redis: what one entry can do to a batch (nothing), how dead letters are bounded
and whom they name, where a change stream may be trimmed, what `hubsync publish` refuses."""

from __future__ import annotations

import hashlib

import msgspec
import pytest

from events.catalog import Catalog
from events.model import (
    AttributeChanged,
    AttributeDefined,
    AttributeDeleted,
    AudienceDefined,
    AudienceDeleted,
    AudienceEntered,
    CdpEvent,
    decode_cdp_event,
    encode,
)
from events.streams import (
    DEAD_RAW_BYTES,
    MAX_REASON,
    DeadLetter,
    Entry,
    GroupState,
    decode_entries,
    lenient_fields,
    trim_floor,
)
from hubsync.config import Config, ConfigError
from hubsync.publish import PublishReport, parse_lines

GOOD = encode(AudienceEntered(audience_id="a1", email="ada@example.com"))


def entry(raw: bytes | None, n: int = 1, *, problem: str = "") -> Entry:
    size = 5 + len(raw) if raw is not None else 0
    return Entry("hubsync:changes:0", f"1-{n}", n, raw, size, problem)


def deep(depth: int) -> bytes:
    return (
        b'{"type":"audience_entered","audience_id":"a1","email":"deep@example.com","x":'
        + b"[" * depth
        + b"]" * depth
        + b"}"
    )


# --- decode_entries: one entry's problem is that entry's only ------------------------------------


def test_every_kind_of_poison_is_parked_and_the_good_entries_around_it_decode() -> None:
    poison = [
        entry(deep(10_000), 2),  # RecursionError in msgspec before
        entry(
            b'{"type":"audience_entered","audience_id":"a1","email":"' + b"x" * 70_000 + b'"}', 3
        ),
        entry(None, 4),  # no 'event' field
        entry(b"\xff\xfe\x00garbage", 5),  # invalid UTF-8
        entry(GOOD, 6, problem="unusable stream id: sequence too large"),
        entry(b'{"type":"audience_entered","audience_id":"a1","email":"a\\u200bb@example.com"}', 7),
    ]
    good, dead = decode_entries([entry(GOOD, 1), *poison, entry(GOOD, 8)])
    assert [e.id for e, _ in good] == ["1-1", "1-8"]
    reasons = {letter.id: letter.reason for letter in dead}
    assert "nested deeper than 64 levels" in reasons["1-2"]
    assert "larger than HUBSYNC_MAX_ENTRY_BYTES (65536); parked unread" in reasons["1-3"]
    assert reasons["1-4"] == "entry has no 'event' field"
    assert "not a JSON object" in reasons["1-5"]
    assert reasons["1-6"] == "unusable stream id: sequence too large"
    assert "ZERO WIDTH SPACE" in reasons["1-7"]


def test_an_oversize_entry_is_not_decoded_at_all() -> None:
    calls: list[bytes] = []

    def decode(raw: bytes) -> CdpEvent:
        calls.append(raw)
        return decode_cdp_event(raw)

    big = entry(b'{"type":"audience_left","audience_id":"a1","email":"' + b"y" * 200 + b'"}')
    good, dead = decode_entries([big], max_entry_bytes=100, decode=decode)
    assert (good, calls) == ([], [])
    assert "parked unread" in dead[0].reason


def test_any_exception_while_decoding_parks_the_entry_with_its_class_and_message() -> None:
    def decode(raw: bytes) -> CdpEvent:
        if raw == b"boom":
            raise ZeroDivisionError("division by zero in a decoder")
        return decode_cdp_event(raw)

    good, dead = decode_entries([entry(b"boom", 1), entry(GOOD, 2)], decode=decode)
    assert [e.id for e, _ in good] == ["1-2"]
    assert dead[0].reason == "ZeroDivisionError: division by zero in a decoder"


# --- dead letters: bounded, and they say whom the entry named -----------------------------------


def test_a_dead_letter_keeps_4_kib_of_the_entry_its_length_and_hash() -> None:
    raw = b'{"type":"attribute_changed","attribute_id":"ltv","email":"Ada@Example.com","value":"'
    raw += b"z" * 1_000_000 + b'"}'
    letter = DeadLetter.of("s", "1-1", "r" * 5_000, raw, unread=True)
    assert letter.raw == raw[:DEAD_RAW_BYTES]
    assert letter.raw_bytes == len(raw)
    assert letter.raw_sha256 == hashlib.sha256(raw).hexdigest()
    assert len(letter.reason) == MAX_REASON
    assert (letter.attribute_id, letter.email) == ("ltv", "ada@example.com")


def test_a_letter_built_directly_is_bounded_when_parked() -> None:
    letter = DeadLetter("activation:x", "-", "HubSpot said no", b"q" * 10_000).bounded()
    assert (len(letter.raw), letter.raw_bytes) == (DEAD_RAW_BYTES, 10_000)
    assert letter.bounded() is letter


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            b'{"type":"audience_entered","audience_id":"a17","email":" Ada@Example.COM "}',
            {"audience_id": "a17", "email": "ada@example.com"},
        ),
        # only the top level when it parses: a nested "email" is not the entry's
        (
            b'{"attribute_id":"ltv","value":{"email":"x@y.z"}}',
            {"attribute_id": "ltv"},
        ),
        # invalid JSON, deep JSON, invalid UTF-8: the first pairs found in the head
        (b'{"type":"audience_entered","audience_id":"a1","email":"bob@x.com",', None),
        (deep(10_000), {"audience_id": "a1", "email": "deep@example.com"}),
        (b'\xff{"email":"b\\u00e9a@x.com","audience_id":"a\\"q"', None),
        # not strings, not objects, nothing at all
        (b'{"email":5,"audience_id":["a"]}', {}),
        (b"[1,2,3]", {}),
        (b"", {}),
        (b"\x00" * 50, {}),
    ],
)
def test_lenient_fields_never_raise_and_find_what_they_can(
    raw: bytes, expected: dict[str, str] | None
) -> None:
    found = lenient_fields(raw)
    if expected is None:  # spot checks for the fallback scan
        assert found.get("email") in ("bob@x.com", "béa@x.com")
        assert found.get("audience_id") in ("a1", 'a"q')
    else:
        assert found == expected


def test_lenient_fields_of_an_unread_entry_look_at_its_head_only() -> None:
    raw = b'{"type":"audience_entered","x":"' + b"p" * 10_000 + b'","email":"late@x.com"}'
    assert lenient_fields(raw) == {"email": "late@x.com"}
    assert lenient_fields(raw, unread=True) == {}  # past the first 4 KiB: not read


def test_lenient_fields_are_bounded() -> None:
    raw = msgspec.json.encode({"email": "e" * 10_000, "audience_id": "a" * 10_000})
    assert {len(v) for v in lenient_fields(raw).values()} == {256}


# --- trimming: only what every group acknowledged ------------------------------------------------


def test_trim_floor_is_the_oldest_entry_any_group_still_needs() -> None:
    # routers read up to 9-0 and acked it all; audit still holds 4-1 pending
    assert trim_floor([GroupState("9-0"), GroupState("9-0", "4-1")]) == "4-1"
    # everything acknowledged: trim up to just after the last delivered entry
    assert trim_floor([GroupState("9-0")]) == "9-1"
    # a group behind the others keeps what it has not read yet
    assert trim_floor([GroupState("9-0"), GroupState("3-2")]) == "3-3"
    assert trim_floor([GroupState("7-18446744073709551615")]) == "8-0"


def test_trim_floor_keeps_the_retention_window() -> None:
    now = 100_000
    assert trim_floor([GroupState("99000-0")], now_ms=now, retention_ms=60_000) == "40000-0"
    assert trim_floor([GroupState("10-0")], now_ms=now, retention_ms=60_000) == "10-1"


def test_trim_floor_trims_nothing_without_groups_or_reads() -> None:
    assert trim_floor([]) is None
    assert trim_floor([GroupState("0-0")]) is None
    assert trim_floor([GroupState("0-0"), GroupState("5-0")]) is None


# --- the catalog follows the stream ---------------------------------------------------------------


def test_a_definition_after_a_deletion_makes_the_id_live_again() -> None:
    catalog = Catalog()
    catalog.apply(AudienceDefined(audience_id="a1", name="A"))
    catalog.apply(AudienceDeleted(audience_id="a1"))
    assert "was deleted" in (catalog.audience_problem("a1") or "")
    catalog.apply(AudienceDefined(audience_id="a1", name="A again"))
    assert catalog.audience_problem("a1") is None
    catalog.apply(AttributeDefined(attribute_id="t", name="T", value_type="number"))
    catalog.apply(AttributeDeleted(attribute_id="t"))
    assert "was deleted" in (catalog.attribute_problem("t") or "")
    catalog.apply(AttributeDefined(attribute_id="t", name="T", value_type="number"))
    assert catalog.attribute_problem("t") is None


def test_a_redefined_enumeration_has_its_new_options() -> None:
    catalog = Catalog()
    catalog.apply(
        AttributeDefined(attribute_id="t", name="T", value_type="enumeration", options=["a"])
    )
    catalog.apply(
        AttributeDefined(attribute_id="t", name="T", value_type="enumeration", options=["a", "b"])
    )
    assert catalog.attributes["t"].options == ["a", "b"]


# --- configuration -------------------------------------------------------------------------------


def test_the_intake_settings_have_defaults_and_are_read_from_the_environment() -> None:
    default = Config.from_environ({})
    assert (default.max_entry_bytes, default.dead_letters_max, default.change_retention_s) == (
        65_536,
        100_000,
        0.0,
    )
    config = Config.from_environ(
        {
            "HUBSYNC_MAX_ENTRY_BYTES": "300000",
            "HUBSYNC_DEAD_LETTERS_MAX": "5000",
            "HUBSYNC_CHANGE_RETENTION": "3600",
        }
    )
    assert (config.max_entry_bytes, config.dead_letters_max, config.change_retention_s) == (
        300_000,
        5_000,
        3600.0,
    )


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("HUBSYNC_MAX_ENTRY_BYTES", "64k", "is not a whole number"),
        ("HUBSYNC_MAX_ENTRY_BYTES", "0", "must be at least 1"),
        ("HUBSYNC_DEAD_LETTERS_MAX", "-1", "must be at least 1"),
        ("HUBSYNC_CHANGE_RETENTION", "1h", "is not a number of seconds"),
        ("HUBSYNC_CHANGE_RETENTION", "-5", "must be a number of seconds (e.g. 0, 3600) >= 0"),
        ("HUBSYNC_CHANGE_RETENTION", "inf", "must be a number of seconds (e.g. 0, 3600) >= 0"),
    ],
)
def test_bad_intake_settings_are_refused_by_name(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=name) as caught:
        Config.from_environ({name: value})
    assert message in str(caught.value)


# --- hubsync publish: what it can know is bad, it reports by line --------------------------------


def test_publish_reports_deep_oversize_and_bad_value_lines_and_keeps_the_good() -> None:
    lines = [
        b'{"type":"attribute_defined","attribute_id":"tier","name":"Tier","value_type":"enumeration","options":["gold"]}',
        b'{"type":"attribute_defined","attribute_id":"ltv","name":"LTV","value_type":"number"}',
        deep(5_000),
        b'{"type":"audience_entered","audience_id":"a1","email":"' + b"z" * 70_000 + b'@x.com"}',
        b'{"type":"attribute_changed","attribute_id":"tier","email":"a@x.com","value":["gold"]}',
        b'{"type":"attribute_changed","attribute_id":"ltv","email":"a@x.com","value":1e300}',
        b'{"type":"attribute_changed","attribute_id":"ltv","email":"a@x.com","value":12}',
        b'{"type":"attribute_changed","attribute_id":"tier","email":"a@x.com","value":"gold"}',
        b'{"type":"attribute_changed","attribute_id":"later","email":"a@x.com","value":["x"]}',
        b'{"type":"audience_entered","audience_id":"a1","email":"a\\u0000@x.com"}',
        b"",
    ]
    report = PublishReport()
    events = list(parse_lines(lines, report, catalog=Catalog()))
    assert [type(e).__name__ for e in events] == [
        "AttributeDefined",
        "AttributeDefined",
        "AttributeChanged",
        "AttributeChanged",
        "AttributeChanged",  # 'later' is not defined yet: the Routers decide
    ]
    bad = {b.number: b.reason for b in report.bad}
    assert sorted(bad) == [3, 4, 5, 6, 10]
    assert "nested deeper than 64 levels" in bad[3]
    assert "larger than HUBSYNC_MAX_ENTRY_BYTES" in bad[4]
    assert "is a list; an enumeration takes one option" in bad[5]
    assert "beyond ±2^53" in bad[6]
    assert "U+0000" in bad[10]
    assert isinstance(events[2], AttributeChanged) and events[2].value == 12

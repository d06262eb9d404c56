"""The wire contract: what decodes, what is refused and why."""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from events.model import (
    ActivationCreated,
    AttributeChanged,
    AttributeDefined,
    AudienceAdded,
    AudienceEntered,
    AudienceLeft,
    InvalidEvent,
    check_value,
    decode_cdp_event,
    decode_control_event,
    encode,
    normalise_email,
)


def test_the_documented_examples_decode() -> None:
    lines = [
        b'{"type":"audience_defined",  "audience_id":"a17", "name":"Abandon Basket"}',
        b'{"type":"audience_entered",  "audience_id":"a17", "email":"ada@example.com", "at":"2026-11-27T08:00:00Z"}',
        b'{"type":"audience_left",     "audience_id":"a17", "email":"ada@example.com"}',
        b'{"type":"audience_deleted",  "audience_id":"a17"}',
        b'{"type":"attribute_defined", "attribute_id":"ltv", "name":"Lifetime value", "value_type":"number"}',
        b'{"type":"attribute_changed", "attribute_id":"ltv", "email":"ada@example.com", "value":1234.5}',
        b'{"type":"attribute_changed", "attribute_id":"ltv", "email":"ada@example.com", "value":null}',
        b'{"type":"attribute_deleted", "attribute_id":"ltv"}',
    ]
    types = [type(decode_cdp_event(line)).__name__ for line in lines]
    assert types == [
        "AudienceDefined",
        "AudienceEntered",
        "AudienceLeft",
        "AudienceDeleted",
        "AttributeDefined",
        "AttributeChanged",
        "AttributeChanged",
        "AttributeDeleted",
    ]


def test_emails_are_trimmed_and_lower_cased_at_decode() -> None:
    event = decode_cdp_event(
        b'{"type":"audience_left","audience_id":"a1","email":"  Ada@Example.COM "}'
    )
    assert event == AudienceLeft(audience_id="a1", email="ada@example.com")


@pytest.mark.parametrize(
    "email",
    [
        "",
        "ada",
        "ada@",
        "@example.com",
        "a b@example.com",
        "ada@example",
        "x" * 250 + "@example.com",
    ],
)
def test_invalid_emails_are_refused_with_the_reason(email: str) -> None:
    raw = msgspec.json.encode({"type": "audience_entered", "audience_id": "a1", "email": email})
    with pytest.raises(InvalidEvent, match="invalid email"):
        decode_cdp_event(raw)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "not a JSON object"),
        (b"[1,2]", "not a JSON object"),
        (b'{"type":"audience_renamed"}', "unknown CDP event type 'audience_renamed'"),
        (b'{"type":"audience_entered","email":"a@b.co"}', "missing required field `audience_id`"),
        (b'{"type":"audience_entered","audience_id":"../x","email":"a@b.co"}', "audience_id"),
        (
            b'{"type":"attribute_defined","attribute_id":"x","name":"X","value_type":"money"}',
            "value_type",
        ),
        (
            b'{"type":"attribute_defined","attribute_id":"x","name":"X","value_type":"enumeration"}',
            "needs a non-empty 'options'",
        ),
    ],
)
def test_malformed_entries_say_what_is_wrong(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        decode_cdp_event(raw)
    assert reason in caught.value.reason


def test_control_events_round_trip() -> None:
    created = ActivationCreated(
        activation_id="act1",
        name="Marketing",
        token_sealed="gAAA...",
        token_fingerprint="ab12",
        audiences=("a17",),
        attributes=("ltv",),
    )
    assert decode_control_event(encode(created)) == created
    assert decode_control_event(
        b'{"type":"audience_added","activation_id":"act1","audience_id":"a2"}'
    ) == AudienceAdded(activation_id="act1", audience_id="a2")
    with pytest.raises(InvalidEvent, match="unknown control event type"):
        decode_control_event(b'{"type":"audience_entered","activation_id":"x"}')


NUMBER = AttributeDefined(attribute_id="ltv", name="LTV", value_type="number")
TEXT = AttributeDefined(attribute_id="city", name="City", value_type="string")
FLAG = AttributeDefined(attribute_id="vip", name="VIP", value_type="bool")
DAY = AttributeDefined(attribute_id="born", name="Born", value_type="date")
MOMENT = AttributeDefined(attribute_id="seen", name="Seen", value_type="datetime")
TIER = AttributeDefined(
    attribute_id="tier", name="Tier", value_type="enumeration", options=["gold", "silver"]
)


@pytest.mark.parametrize(
    ("definition", "value", "expected"),
    [
        (NUMBER, 12, 12),
        (NUMBER, 12.5, 12.5),
        (TEXT, "Paris", "Paris"),
        (FLAG, False, False),
        (DAY, "2026-11-27", "2026-11-27"),
        (MOMENT, "2026-11-27T09:00:00+01:00", "2026-11-27T08:00:00Z"),
        (TIER, "gold", "gold"),
        (NUMBER, None, None),
        (NUMBER, 2**53, 2**53),  # the largest integer a double holds exactly: still fine
        (MOMENT, "0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z"),
    ],
)
def test_values_that_match_their_type_pass(
    definition: AttributeDefined, value: object, expected: object
) -> None:
    assert check_value(definition, value) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("definition", "value"),
    [
        (NUMBER, "1234.5"),  # a string for a number: an error, not a silent coercion
        (NUMBER, True),
        (NUMBER, float("nan")),
        (TEXT, 12),
        (TEXT, "x" * 70_000),
        (FLAG, "true"),
        (DAY, "27/11/2026"),
        (DAY, 20261127),
        (MOMENT, "2026-11-27T09:00:00"),
        (TIER, "bronze"),
        (TIER, ["gold", 1]),
        (TIER, ["gold"]),  # single-select: a list was once taken as a multi-select; refused now
        (TIER, ["gold", "silver"]),
        (NUMBER, 2**53 + 1),  # a double cannot hold it: HubSpot would store another number
        (NUMBER, -(2**53) - 1),
        (NUMBER, 10**30),
        (NUMBER, 1e300),
        (NUMBER, float("inf")),
        (MOMENT, "0001-01-01T00:00:00+01:00"),  # year 0 in UTC: OverflowError before
        (MOMENT, "9999-12-31T23:30:00-01:00"),  # year 10000 in UTC
    ],
)
def test_values_of_the_wrong_type_are_refused(definition: AttributeDefined, value: object) -> None:
    with pytest.raises(InvalidEvent, match=definition.attribute_id):
        check_value(definition, value)  # type: ignore[arg-type]


emails = st.builds(
    lambda user, host, tld: f"{user}@{host}.{tld}",
    st.from_regex(r"[a-z0-9._%+-]{1,20}", fullmatch=True),
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True),
    st.sampled_from(["com", "org", "io", "co.uk"]),
)
ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,30}", fullmatch=True)
values = (
    st.none()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.booleans()
    | st.text(max_size=50)
)
moments = st.none() | st.datetimes(timezones=st.just(dt.UTC))
events = st.one_of(
    st.builds(AudienceEntered, audience_id=ids, email=emails, at=moments),
    st.builds(AudienceLeft, audience_id=ids, email=emails, at=moments),
    st.builds(AttributeChanged, attribute_id=ids, email=emails, value=values, at=moments),
)


@given(events)
def test_encode_decode_round_trip(event: object) -> None:
    assert decode_cdp_event(encode(event)) == event  # type: ignore[arg-type]


@given(st.binary(max_size=300))
def test_random_bytes_never_crash_the_decoder(raw: bytes) -> None:
    try:
        decode_cdp_event(raw)
    except InvalidEvent as exc:
        assert exc.reason


@given(st.text(max_size=80))
def test_email_normalisation_is_idempotent(raw: str) -> None:
    try:
        once = normalise_email(raw)
    except InvalidEvent:
        return
    assert normalise_email(once) == once == once.strip().lower()


def _deep(depth: int, inner: bytes = b"1") -> bytes:
    return b"[" * depth + inner + b"]" * depth


@pytest.mark.parametrize(
    "raw",
    [
        _deep(5_000),
        b'{"type":"audience_entered","audience_id":"a","email":"a@b.co","x":' + _deep(5_000) + b"}",
        b'{"type":"attribute_changed","attribute_id":"a","email":"a@b.co","value":'
        + _deep(100_000)
        + b"}",
        b'{"type":"audience_entered","audience_id":"a","email":"a@b.co","x":'
        + b'{"k":' * 3_000
        + b"1"
        + b"}" * 3_000
        + b"}",
    ],
)
def test_deeply_nested_json_is_an_invalid_event_not_a_recursion_error(raw: bytes) -> None:
    with pytest.raises(InvalidEvent, match="nested deeper than 64 levels"):
        decode_cdp_event(raw)


def test_brackets_inside_strings_are_not_nesting() -> None:
    name = '"[{' * 500 + '\\"'
    raw = msgspec.json.encode({"type": "audience_defined", "audience_id": "a", "name": name[:200]})
    assert decode_cdp_event(raw).name == name[:200]  # type: ignore[attr-defined]


def test_a_timestamp_that_overflows_in_utc_is_refused_at_decode() -> None:
    raw = b'{"type":"audience_entered","audience_id":"a","email":"a@b.co","at":"0001-01-01T00:00:00+01:00"}'
    with pytest.raises(InvalidEvent, match="outside years 1-9999"):
        decode_cdp_event(raw)


@pytest.mark.parametrize(
    ("email", "reason"),
    [
        ("ada\x00@example.com", "U+0000"),  # Cc: NUL
        ("ada\x1b@example.com", "U+001B"),  # Cc: escape
        ("ada\x7f@example.com", "U+007F"),  # Cc: delete
        ("a\u200bda@example.com", "ZERO WIDTH SPACE"),  # Cf
        ("ada\u200d@example.com", "ZERO WIDTH JOINER"),  # Cf
        ("\ufeffada@example.com", "ZERO WIDTH NO-BREAK SPACE"),  # Cf: a BOM
        ("ada\u202e@example.com", "RIGHT-TO-LEFT OVERRIDE"),  # Cf: bidi
        ("ada\u00ad@example.com", "SOFT HYPHEN"),  # Cf
        ("a\u2028da@example.com", "LINE SEPARATOR"),  # Zl
        ("a\u2029da@example.com", "PARAGRAPH SEPARATOR"),  # Zp
        ("a da@example.com", "SPACE"),  # whitespace inside
        ("a\u00a0da@example.com", "NO-BREAK SPACE"),  # Zs
        ("a\tda@example.com", "U+0009"),
        ("a\ue000da@example.com", "U+E000"),  # private use
        ("x" * 65 + "@example.com", "the part before '@' has 65 characters, at most 64"),
        ("x@" + "a" * 250 + ".com", "at most 254"),
    ],
)
def test_emails_with_invisible_characters_or_too_long_are_refused(email: str, reason: str) -> None:
    raw = msgspec.json.encode({"type": "audience_entered", "audience_id": "a1", "email": email})
    with pytest.raises(InvalidEvent, match="invalid email") as caught:
        decode_cdp_event(raw)
    assert reason in caught.value.reason


def test_the_longest_valid_email_passes() -> None:
    local = "x" * 64
    domain = ".".join(["a" * 61] * 3) + ".com"  # 64 + 1 + 187 = 252 characters
    assert normalise_email(f"{local}@{domain}") == f"{local}@{domain}"


def test_an_enumeration_list_is_refused_with_the_reason() -> None:
    with pytest.raises(InvalidEvent, match="is a list; an enumeration takes one option"):
        check_value(TIER, ["gold"])


@pytest.mark.parametrize("value", [2**53 + 1, 10**400, -(10**30), 1.7e308])
def test_numbers_beyond_two_to_the_53_are_refused_with_the_bound(value: object) -> None:
    with pytest.raises(InvalidEvent, match=r"beyond ±2\^53"):
        check_value(NUMBER, value)  # type: ignore[arg-type]


@given(
    st.one_of(
        st.integers(),
        st.floats(),
        st.text(max_size=40),
        st.lists(st.text(max_size=5), max_size=3),
        st.booleans(),
        st.none(),
    ),
    st.sampled_from([NUMBER, TEXT, FLAG, DAY, MOMENT, TIER]),
)
def test_check_value_raises_nothing_but_invalid_event(value: object, definition: object) -> None:
    try:
        check_value(definition, value)  # type: ignore[arg-type]
    except InvalidEvent as exc:
        assert exc.reason

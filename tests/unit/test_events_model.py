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
        (TIER, ["gold", "silver"], ["gold", "silver"]),
        (NUMBER, None, None),
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

"""The event model: what the CDP says (the wire contract) and what operators say (the control plane).

Both are tagged unions of frozen msgspec Structs with the tag in the field ``type``. Input is
validated where it enters, at decode time: emails are trimmed, lower-cased and checked, an
enumeration attribute must list its options. A value can only be checked against its attribute's
``value_type`` once the attribute's definition is known, which is what `check_value` is for.

Evolution rules (msgspec's): new fields get defaults, no field changes type, a tag is never reused.

Bounds (what HubSpot could not hold, or could not hold exactly, is refused here, never sent)::

    email        no control, format or invisible characters (Unicode Cc, Cf, Zl, Zp, Zs, Co, Cn),
                 local part <= 64 and address <= 254 characters (RFC 5321)
    number       finite, |value| <= 2**53 (HubSpot stores numbers as doubles: beyond that an
                 integer is no longer exact)
    date(time)   years 1-9999 once converted to UTC (also for ``at``)
    enumeration  exactly one option, a string (single-select, as hubsync creates the property)
    JSON         at most MAX_JSON_DEPTH levels of nesting

Errors::

    InvalidEvent        an entry that cannot become an event; ``reason`` says what to fix
"""

from __future__ import annotations

import datetime as dt
import math
import re
import unicodedata
from typing import Annotated, Any, Literal, cast

import msgspec
from msgspec.structs import force_setattr

from crm.plans import DEFAULT_API_VERSION, ApiVersion

__all__ = [
    "ActivationCreated",
    "ActivationDeleted",
    "ActivationPaused",
    "ActivationResumed",
    "ApiVersion",
    "AttributeAdded",
    "AttributeChanged",
    "AttributeDefined",
    "AttributeDeleted",
    "AttributeRemoved",
    "AudienceAdded",
    "AudienceDefined",
    "AudienceDeleted",
    "AudienceEntered",
    "AudienceLeft",
    "AudienceRemoved",
    "CdpEvent",
    "ControlEvent",
    "InvalidEvent",
    "Mode",
    "Plan",
    "ResyncRequested",
    "TokenResealed",
    "ValueType",
    "check_value",
    "decode_cdp_event",
    "decode_control_event",
    "encode",
    "normalise_email",
]

ValueType = Literal["number", "string", "bool", "date", "datetime", "enumeration"]
Plan = Literal["free", "starter", "professional", "enterprise", "addon"]
Mode = Literal["upsert", "update_only"]

# CDP ids end up in Redis keys, actor names and HubSpot property names: keep them plain.
Id = Annotated[
    str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Value = str | int | float | bool | list[str] | None

MAX_STRING_VALUE = 65_536  # HubSpot's limit for a string property value
MAX_EXACT_NUMBER = 2**53  # beyond this a double (what HubSpot stores) no longer holds every integer
MAX_JSON_DEPTH = 64  # the wire contract nests 3 levels; deeper is hostile, not a CDP event
MAX_EMAIL_LENGTH = 254  # RFC 5321: a path is at most 256 octets, the address 254 of them
MAX_LOCAL_PART_LENGTH = 64  # RFC 5321 section 4.5.3.1.1
# Unicode categories no address may contain: control, format (zero-width joiners, bidi marks),
# line/paragraph separators, spaces, private use and unassigned code points. They make two
# addresses look the same to a person and differ to HubSpot, which creates a contact for each.
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"})
_EMAIL = re.compile(
    r"^[^@\s\"(),:;<>\[\\\]]+@[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)+$"
)


class InvalidEvent(ValueError):
    """An entry that cannot become an event; ``reason`` says what is wrong and how to fix it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def normalise_email(raw: str) -> str:
    """Trim and lower-case an email (HubSpot stores emails lower-case), or raise InvalidEvent."""
    email = raw.strip().lower()
    # The common case, printable ASCII without a space, has no invisible character: only other
    # emails are looked at character by character (a tenth of a Router's CPU otherwise).
    if not (email.isascii() and email.isprintable() and " " not in email):
        hidden = next((c for c in email if unicodedata.category(c) in _INVISIBLE), None)
        if hidden is not None:
            raise InvalidEvent(
                f"invalid email {raw[:100]!r}: it contains the invisible or control character "
                f"U+{ord(hidden):04X} ({unicodedata.name(hidden, unicodedata.category(hidden))})"
            )
    if len(email) > MAX_EMAIL_LENGTH:
        raise InvalidEvent(
            f"invalid email {raw[:100]!r}: {len(email)} characters, at most {MAX_EMAIL_LENGTH} (RFC 5321)"
        )
    local = email.rpartition("@")[0]
    if len(local) > MAX_LOCAL_PART_LENGTH:
        raise InvalidEvent(
            f"invalid email {raw[:100]!r}: the part before '@' has {len(local)} characters, "
            f"at most {MAX_LOCAL_PART_LENGTH} (RFC 5321)"
        )
    if not _EMAIL.match(email):
        raise InvalidEvent(
            f"invalid email {raw[:100]!r}: expected one address like ada@example.com"
        )
    return email


def _utc(moment: dt.datetime) -> dt.datetime:
    """The moment in UTC; raises InvalidEvent when that falls outside years 1-9999."""
    try:
        return moment.astimezone(dt.UTC)
    except (OverflowError, ValueError):
        raise InvalidEvent(
            f"timestamp {moment.isoformat()} is outside years 1-9999 once converted to UTC"
        ) from None


class _HasEmail:
    email: str

    def __post_init__(self) -> None:
        # ValueError raised here surfaces as msgspec.ValidationError when decoding.
        # Only ever mixed into a Struct (the events below); force_setattr needs to know that.
        force_setattr(cast("msgspec.Struct", self), "email", normalise_email(self.email))
        at = getattr(self, "at", None)
        if at is not None and at.tzinfo is not None:
            _utc(at)  # an 'at' that overflows in UTC would raise later, far from its entry


# --- the CDP wire contract --------------------------------------------------------------------


class CdpEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of every event the CDP writes to the change and catalog streams.

    msgspec passes ``frozen`` on to subclasses, type checkers do not (PEP 681): each subclass
    repeats ``frozen=True`` so mypy knows it too.
    """


class AudienceDefined(CdpEvent, frozen=True, tag="audience_defined"):
    audience_id: Id
    name: Name


class AudienceEntered(_HasEmail, CdpEvent, frozen=True, tag="audience_entered"):
    audience_id: Id
    email: str
    at: dt.datetime | None = None


class AudienceLeft(_HasEmail, CdpEvent, frozen=True, tag="audience_left"):
    audience_id: Id
    email: str
    at: dt.datetime | None = None


class AudienceDeleted(CdpEvent, frozen=True, tag="audience_deleted"):
    audience_id: Id


class AttributeDefined(CdpEvent, frozen=True, tag="attribute_defined"):
    attribute_id: Id
    name: Name
    value_type: ValueType
    options: list[Annotated[str, msgspec.Meta(min_length=1, max_length=400)]] | None = None

    def __post_init__(self) -> None:
        if self.value_type == "enumeration" and not self.options:
            raise ValueError(
                f"attribute {self.attribute_id!r}: an enumeration needs a non-empty 'options' list"
            )
        if self.options is not None and len(set(self.options)) != len(self.options):
            raise ValueError(f"attribute {self.attribute_id!r}: 'options' has duplicates")


class AttributeChanged(_HasEmail, CdpEvent, frozen=True, tag="attribute_changed"):
    attribute_id: Id
    email: str
    value: Value
    at: dt.datetime | None = None


class AttributeDeleted(CdpEvent, frozen=True, tag="attribute_deleted"):
    attribute_id: Id


CdpUnion = (
    AudienceDefined
    | AudienceEntered
    | AudienceLeft
    | AudienceDeleted
    | AttributeDefined
    | AttributeChanged
    | AttributeDeleted
)


# --- the control plane: activations are event-sourced too --------------------------------------


class ControlEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of every event on the control stream; each concerns one activation.

    Subclasses repeat ``frozen=True`` for type checkers, as CdpEvent's do.
    """

    activation_id: Id


class ActivationCreated(ControlEvent, frozen=True, tag="activation_created"):
    name: Name
    token_sealed: str  # the access token, encrypted (hubsync.secrets); never the token itself
    token_fingerprint: str  # names the RateGovernor; safe to show
    base_url: str = "https://api.hubapi.com"
    api_version: ApiVersion = DEFAULT_API_VERSION  # events written with "v3" read as written
    plan: Plan = "starter"
    mode: Mode = "upsert"
    audiences: tuple[Id, ...] = ()
    attributes: tuple[Id, ...] = ()


class AudienceAdded(ControlEvent, frozen=True, tag="audience_added"):
    audience_id: Id


class AudienceRemoved(ControlEvent, frozen=True, tag="audience_removed"):
    audience_id: Id


class AttributeAdded(ControlEvent, frozen=True, tag="attribute_added"):
    attribute_id: Id


class AttributeRemoved(ControlEvent, frozen=True, tag="attribute_removed"):
    attribute_id: Id


class ActivationPaused(ControlEvent, frozen=True, tag="activation_paused"):
    reason: str = ""


class ActivationResumed(ControlEvent, frozen=True, tag="activation_resumed"):
    pass


class ActivationDeleted(ControlEvent, frozen=True, tag="activation_deleted"):
    pass


class ResyncRequested(ControlEvent, frozen=True, tag="resync_requested"):
    """Re-send every current value (repair after someone edited HubSpot by hand)."""


class TokenResealed(ControlEvent, frozen=True, tag="token_resealed"):
    """The same token, sealed again in the current format (bound to the activation)."""

    token_sealed: str


ControlUnion = (
    ActivationCreated
    | AudienceAdded
    | AudienceRemoved
    | AttributeAdded
    | AttributeRemoved
    | ActivationPaused
    | ActivationResumed
    | ActivationDeleted
    | ResyncRequested
    | TokenResealed
)

# --- codecs -----------------------------------------------------------------------------------


class _Tag(msgspec.Struct):
    type: str


_tag_decoder = msgspec.json.Decoder(_Tag)
_cdp_decoder = msgspec.json.Decoder(CdpUnion)
_control_decoder = msgspec.json.Decoder(ControlUnion)
_encoder = msgspec.json.Encoder()
CDP_TYPES = frozenset(t.__struct_config__.tag for t in CdpUnion.__args__)
CONTROL_TYPES = frozenset(t.__struct_config__.tag for t in ControlUnion.__args__)


def json_depth_exceeds(raw: bytes | str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether JSON text nests deeper than ``limit``: checked before decoding, because msgspec
    recurses (and raises RecursionError) on deep nesting, even in fields it skips.

    Brackets inside strings are skipped; this is a scan, not a parser, so it never raises."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if data.count(b"[") + data.count(b"{") <= limit:
        return False  # the common case: not even that many brackets in all
    depth = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return False


def _decode(
    raw: bytes | str, decoder: msgspec.json.Decoder, known: frozenset[str], what: str
) -> Any:
    if json_depth_exceeds(raw):
        raise InvalidEvent(f"JSON nested deeper than {MAX_JSON_DEPTH} levels; not a {what} event")
    # One decode for a good entry; only a bad one is read again, for its tag, so that an
    # unknown type gets a reason a person can act on.
    try:
        return decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise InvalidEvent(f"invalid {_known_tag(raw, known, what)} event: {exc}") from None
    except RecursionError:  # a depth the scan above let through (it is the last line of defence)
        raise InvalidEvent(
            f"invalid {_known_tag(raw, known, what)} event: JSON nested too deeply"
        ) from None


def _known_tag(raw: bytes | str, known: frozenset[str], what: str) -> str:
    """The entry's type, or raise InvalidEvent saying why it has none hubsync knows."""
    try:
        tag: str = _tag_decoder.decode(raw).type
    except msgspec.DecodeError as exc:
        raise InvalidEvent(f"not a JSON object with a string 'type' field ({exc})") from None
    if tag not in known:
        raise InvalidEvent(
            f"unknown {what} event type {tag[:60]!r}; known types: {', '.join(sorted(known))}"
        )
    return tag


def decode_cdp_event(raw: bytes | str) -> CdpEvent:
    """Decode one CDP event from JSON, or raise InvalidEvent with the reason."""
    return _decode(raw, _cdp_decoder, CDP_TYPES, "CDP")


def decode_control_event(raw: bytes | str) -> ControlEvent:
    """Decode one control-plane event from JSON, or raise InvalidEvent with the reason."""
    return _decode(raw, _control_decoder, CONTROL_TYPES, "control")


def encode(event: CdpEvent | ControlEvent) -> bytes:
    """The JSON form written to the streams (the wire contract)."""
    return _encoder.encode(event)


# --- values against their definitions -----------------------------------------------------------


def check_value(definition: AttributeDefined, value: Value) -> Value:
    """Check an attribute value against its definition's value_type; never coerce silently.

    Returns the value (dates and datetimes normalised to ISO text); raises InvalidEvent.
    ``None`` always passes: it clears the property.
    """
    if value is None:
        return None
    kind = definition.value_type
    where = f"attribute {definition.attribute_id!r} ({kind})"
    if kind == "number":
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (isinstance(value, float) and not math.isfinite(value))
        ):
            raise InvalidEvent(f"{where}: expected a JSON number, got {_show(value)}")
        if abs(value) > MAX_EXACT_NUMBER:
            raise InvalidEvent(
                f"{where}: {_show(value)} is beyond ±2^53 ({MAX_EXACT_NUMBER}), "
                "which HubSpot cannot store exactly; send a string attribute for such values"
            )
        return value
    if kind == "string":
        if not isinstance(value, str):
            raise InvalidEvent(f"{where}: expected a JSON string, got {_show(value)}")
        if len(value) > MAX_STRING_VALUE:
            raise InvalidEvent(
                f"{where}: {len(value)} characters; HubSpot keeps at most {MAX_STRING_VALUE}"
            )
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise InvalidEvent(f"{where}: expected true or false, got {_show(value)}")
        return value
    if kind == "date":
        if not isinstance(value, str):
            raise InvalidEvent(
                f"{where}: expected a date string like 2026-11-27, got {_show(value)}"
            )
        try:
            return dt.date.fromisoformat(value).isoformat()
        except ValueError:
            raise InvalidEvent(
                f"{where}: expected a date like 2026-11-27, got {_show(value)}"
            ) from None
    if kind == "datetime":
        if not isinstance(value, str):
            raise InvalidEvent(
                f"{where}: expected an ISO 8601 timestamp string, got {_show(value)}"
            )
        try:
            moment = dt.datetime.fromisoformat(value)
        except ValueError:
            raise InvalidEvent(
                f"{where}: expected an ISO 8601 timestamp like 2026-11-27T08:00:00Z, got {_show(value)}"
            ) from None
        if moment.tzinfo is None:
            raise InvalidEvent(f"{where}: timestamp {value!r} has no time zone; add Z or an offset")
        try:
            utc = _utc(moment)
        except InvalidEvent as exc:
            raise InvalidEvent(f"{where}: {exc.reason}") from None
        return utc.isoformat().replace("+00:00", "Z")
    # enumeration: exactly one option. A list would be a multi-select, which neither the wire
    # contract nor the property hubsync creates (a single-select dropdown) supports.
    options = set(definition.options or ())
    if isinstance(value, list):
        raise InvalidEvent(
            f"{where}: {_show(value)} is a list; an enumeration takes one option, a string"
        )
    if not isinstance(value, str) or value not in options:
        shown = sorted(options)
        listed = f"{shown[:20]}{' and more' if len(shown) > 20 else ''}"
        raise InvalidEvent(f"{where}: {_show(value)} is not one of its options {listed}")
    return value


def _show(value: object) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:80]}{'…' if len(text) > 80 else ''}"

"""HubSpot contact properties for CDP audiences and attributes: names, definitions, values.

- `internal_name` turns a CDP id + name into a stable HubSpot internal name
  (`raptor_` + a lower-case slug, a short hash of the CDP id on collision).
- `audience_property` / `attribute_property` build the `PropertySpec` to ensure in HubSpot.
- `format_value` writes a CDP value as the string HubSpot accepts for the property's type
  (`""` clears). These are exactly the formats the emulator validates.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import hashlib
import math
import re
import unicodedata
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import msgspec

__all__ = [
    "GROUP_LABEL",
    "GROUP_NAME",
    "MAX_NAME_LENGTH",
    "NAME_PREFIX",
    "PropertyOption",
    "PropertySpec",
    "ValueFormatError",
    "ValueType",
    "attribute_property",
    "audience_property",
    "format_value",
    "internal_name",
    "is_valid_property_name",
]

GROUP_NAME = "raptor_smart_advisor_cdp"
GROUP_LABEL = "Raptor Smart Advisor CDP"
NAME_PREFIX = "raptor_"
MAX_NAME_LENGTH = 100
"""HubSpot's limit is UNVERIFIED (docs/hubspot-api.md §2); 100 is the emulator's default too."""
MAX_STRING_LENGTH = 65_536

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_NUMBER_RE = re.compile(r"^-?\d+(\.\d+)?$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class ValueType(enum.StrEnum):
    """The CDP's attribute value types (the wire contract's `value_type`)."""

    NUMBER = "number"
    STRING = "string"
    BOOL = "bool"
    DATE = "date"
    DATETIME = "datetime"
    ENUMERATION = "enumeration"


class ValueFormatError(ValueError):
    """A CDP value cannot be written as the property's type; park it with this message."""


class PropertyOption(msgspec.Struct, frozen=True, kw_only=True):
    label: str
    value: str
    hidden: bool = False
    display_order: int | None = None

    def to_hubspot(self) -> dict[str, Any]:
        body: dict[str, Any] = {"label": self.label, "value": self.value, "hidden": self.hidden}
        if self.display_order is not None:
            body["displayOrder"] = self.display_order
        return body


class PropertySpec(msgspec.Struct, frozen=True, kw_only=True):
    """A contact property definition that hubsync wants to exist in HubSpot."""

    name: str
    label: str
    type: str
    field_type: str
    group_name: str = GROUP_NAME
    description: str = ""
    options: tuple[PropertyOption, ...] = ()

    def to_create_body(self) -> dict[str, Any]:
        """The `PropertyCreate` JSON body."""
        body: dict[str, Any] = {
            "name": self.name,
            "label": self.label,
            "type": self.type,
            "fieldType": self.field_type,
            "groupName": self.group_name,
        }
        if self.description:
            body["description"] = self.description
        if self.options:
            body["options"] = [o.to_hubspot() for o in self.options]
        return body

    def drift(self, existing: Mapping[str, Any]) -> dict[str, Any]:
        """The `PropertyUpdate` body that brings `existing` (HubSpot's JSON) to this spec; {} if equal."""
        patch: dict[str, Any] = {}
        wanted = self.to_create_body()
        for key in ("label", "type", "fieldType", "groupName"):
            if existing.get(key) != wanted[key]:
                patch[key] = wanted[key]
        if (existing.get("description") or "") != self.description:
            patch["description"] = self.description
        have = [
            (o.get("value"), o.get("label"), bool(o.get("hidden", False)))
            for o in existing.get("options") or ()
        ]
        want = [(o.value, o.label, o.hidden) for o in self.options]
        # HubSpot may add options of its own to a bool it created; only compare when we own options.
        if self.options and have != want:
            patch["options"] = [o.to_hubspot() for o in self.options]
        return patch


def is_valid_property_name(name: str) -> bool:
    """HubSpot's internal-name rule: `^[a-z][a-z0-9_]*$`, at most MAX_NAME_LENGTH characters."""
    return len(name) <= MAX_NAME_LENGTH and _NAME_RE.fullmatch(name) is not None


def _slug(text: str) -> str:
    # Strip accents (é -> e); any other non-ASCII character separates words like punctuation.
    decomposed = unicodedata.normalize("NFKD", text)
    unaccented = "".join(c for c in decomposed if not unicodedata.combining(c))
    return re.sub(r"[^a-z0-9]+", "_", unaccented.lower()).strip("_")


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


def internal_name(cdp_id: str, cdp_name: str, taken: Collection[str] = frozenset()) -> str:
    """A stable HubSpot internal name for a CDP audience/attribute.

    `raptor_` + the slug of `cdp_name` (falling back to the slug of `cdp_id`), cut to
    MAX_NAME_LENGTH. When that is in `taken` (names used by OTHER audiences/attributes or by
    HubSpot), a suffix `_<8 hex of sha256(cdp_id)>` makes it unique; the same inputs always give
    the same name.
    """
    slug = _slug(cdp_name) or _slug(cdp_id) or "property"
    base = (NAME_PREFIX + slug)[:MAX_NAME_LENGTH].rstrip("_")
    if base not in taken:
        return base
    attempt = 0
    while True:
        seed = cdp_id if attempt == 0 else f"{cdp_id}#{attempt}"
        suffix = "_" + _short_hash(seed)
        candidate = base[: MAX_NAME_LENGTH - len(suffix)].rstrip("_") + suffix
        if candidate not in taken:
            return candidate
        attempt += 1


BOOL_OPTIONS = (
    PropertyOption(label="Yes", value="true", display_order=0),
    PropertyOption(label="No", value="false", display_order=1),
)


def audience_property(
    audience_id: str, name: str, taken: Collection[str] = frozenset()
) -> PropertySpec:
    """A checkbox that reads "true" while the contact is in the audience."""
    return PropertySpec(
        name=internal_name(audience_id, name, taken),
        label=name,
        type="bool",
        field_type="booleancheckbox",
        description=f"Member of the CDP audience {name!r} (id {audience_id}).",
        options=BOOL_OPTIONS,
    )


_ATTRIBUTE_TYPES: dict[ValueType, tuple[str, str]] = {
    ValueType.NUMBER: ("number", "number"),
    ValueType.STRING: ("string", "text"),
    ValueType.BOOL: ("bool", "booleancheckbox"),
    ValueType.DATE: ("date", "date"),
    ValueType.DATETIME: ("datetime", "date"),
    ValueType.ENUMERATION: ("enumeration", "select"),
}


def attribute_property(
    attribute_id: str,
    name: str,
    value_type: ValueType | str,
    options: Iterable[str] = (),
    taken: Collection[str] = frozenset(),
) -> PropertySpec:
    """A typed property holding a CDP calculated attribute."""
    vt = ValueType(value_type)
    hs_type, field_type = _ATTRIBUTE_TYPES[vt]
    opts: tuple[PropertyOption, ...] = ()
    if vt is ValueType.BOOL:
        opts = BOOL_OPTIONS
    elif vt is ValueType.ENUMERATION:
        opts = tuple(
            PropertyOption(label=o, value=o, display_order=i) for i, o in enumerate(options)
        )
        if not opts:
            raise ValueError(f"enumeration attribute {attribute_id!r} needs at least one option")
    return PropertySpec(
        name=internal_name(attribute_id, name, taken),
        label=name,
        type=hs_type,
        field_type=field_type,
        description=f"CDP calculated attribute {name!r} (id {attribute_id}).",
        options=opts,
    )


def _format_number(value: Any) -> str:
    if isinstance(value, bool):
        raise ValueFormatError(f"{value!r} is a bool, not a number")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueFormatError(f"{value!r} is not a finite number")
        value = decimal.Decimal(repr(value))
    if isinstance(value, str):
        text = value.strip()
        try:
            value = decimal.Decimal(text)
        except decimal.InvalidOperation:
            raise ValueFormatError(f"{text!r} is not a number") from None
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise ValueFormatError(f"{value!r} is not a finite number")
        text = format(value, "f")
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        if text in ("-0", ""):
            text = "0"
        return text
    raise ValueFormatError(f"{value!r} is not a number")


def _format_bool(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower()
    raise ValueFormatError(f"{value!r} is not a bool (true/false)")


def _format_date(value: Any) -> str:
    if isinstance(value, dt.datetime):
        utc = value.astimezone(dt.UTC) if value.tzinfo else value
        if (utc.hour, utc.minute, utc.second, utc.microsecond) != (0, 0, 0, 0):
            raise ValueFormatError(f"{value!r} is not at midnight UTC; a date property holds a day")
        return utc.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, str):
        text = value.strip()
        if _DATE_RE.fullmatch(text):
            try:
                return dt.date.fromisoformat(text).isoformat()
            except ValueError:
                pass
        else:
            try:
                return _format_date(_parse_iso_datetime(text))
            except ValueFormatError:
                pass
    raise ValueFormatError(f"{value!r} is not a date (YYYY-MM-DD)")


def _parse_iso_datetime(text: str) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueFormatError(f"{text!r} is not an ISO-8601 datetime") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _format_datetime(value: Any) -> str:
    if isinstance(value, bool):
        raise ValueFormatError(f"{value!r} is not a datetime")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueFormatError(f"{value!r} is not a datetime")
        value = dt.datetime.fromtimestamp(value / 1000.0, tz=dt.UTC)
    elif isinstance(value, str):
        value = _parse_iso_datetime(value.strip())
    elif isinstance(value, dt.datetime):
        value = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    elif isinstance(value, dt.date):
        value = dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    else:
        raise ValueFormatError(f"{value!r} is not a datetime")
    utc = value.astimezone(dt.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _format_enumeration(value: Any, options: Sequence[str] | None) -> str:
    # hubsync creates enumerations as single-select dropdowns (fieldType "select"), and the wire
    # contract sends one option: a list would be a multi-select HubSpot's property cannot hold.
    if not isinstance(value, str):
        raise ValueFormatError(
            f"{type(value).__name__} {str(value)[:80]!r} is not one option; "
            "an enumeration takes exactly one option, a string"
        )
    if options is not None and value not in options:
        raise ValueFormatError(f"{value[:80]!r} not among the options {list(options)[:20]!r}")
    return value


def format_value(
    value_type: ValueType | str, value: Any, *, options: Sequence[str] | None = None
) -> str:
    """HubSpot's string for a CDP value; None clears the property ("").

    number: plain decimal, no exponent, no trailing ".0"; bool: "true"/"false";
    date: "YYYY-MM-DD"; datetime: "YYYY-MM-DDTHH:MM:SS.mmmZ" (UTC; naive means UTC, ints are
    epoch ms); enumeration: the one option's value (a string; a list is refused: the property
    is a single-select); string: as is, ≤ 65,536.
    Raises ValueFormatError when the value does not fit the type.
    """
    if value is None:
        return ""
    match ValueType(value_type):
        case ValueType.NUMBER:
            return _format_number(value)
        case ValueType.BOOL:
            return _format_bool(value)
        case ValueType.DATE:
            return _format_date(value)
        case ValueType.DATETIME:
            return _format_datetime(value)
        case ValueType.ENUMERATION:
            return _format_enumeration(value, options)
        case ValueType.STRING:
            text = value if isinstance(value, str) else str(value)
            if len(text) > MAX_STRING_LENGTH:
                raise ValueFormatError(
                    f"string of {len(text)} characters exceeds {MAX_STRING_LENGTH}"
                )
            return text
    raise ValueFormatError(f"unknown value type {value_type!r}")  # pragma: no cover

"""Property values as HubSpot checks them on a contact write: each value against its property's
type (bool, number, date, datetime, enumeration, string), normalised as HubSpot stores it, and
HubSpot's per-property problems and 400 body when a value does not fit.

Pure functions: the property definitions come in through `lookup` (the schema's live properties).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

import msgspec

from crm.emulator.wire import error, iso

__all__ = ["EMAIL_RE", "check_values", "normalise", "values_error"]

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_NUMBER_RE = re.compile(r"^-?\d+(\.\d+)?$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_EPOCH_MS_RE = re.compile(r"^-?\d+$")
_MAX_STRING = 65_536

Lookup = Callable[[str], dict[str, Any] | None]
"""A property's definition by name, or None when there is no live (unarchived) one."""


def check_values(values: Any, lookup: Lookup) -> tuple[dict[str, str | None], list[dict[str, Any]]]:
    """Normalised values (None = clear) and HubSpot's per-property problems."""
    if not isinstance(values, dict):
        return {}, [
            {
                "isValid": False,
                "message": "properties must be an object",
                "error": "INVALID_INPUT",
                "name": "properties",
            }
        ]
    clean: dict[str, str | None] = {}
    problems: list[dict[str, Any]] = []

    def bad(name: str, code: str, message: str) -> None:
        problems.append(
            {
                "isValid": False,
                "message": message,
                "error": code,
                "name": name,
                "localizedErrorMessage": message,
            }
        )

    for name, raw in values.items():
        prop = lookup(name)
        if prop is None:
            bad(name, "PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist')
            continue
        if prop["modificationMetadata"]["readOnlyValue"]:
            bad(name, "READ_ONLY_VALUE", f'Property "{name}" is read-only')
            continue
        if raw is None or raw == "":
            clean[name] = None
            continue
        value = raw if isinstance(raw, str) else msgspec.json.encode(raw).decode()
        normalised = normalise(prop, value)
        if isinstance(normalised, tuple):
            bad(name, *normalised)
        else:
            clean[name] = normalised
    return clean, problems


def normalise(prop: dict[str, Any], value: str) -> str | tuple[str, str]:
    """`value` as HubSpot stores it in `prop`, or (error code, message) when it does not fit."""
    name, type_ = prop["name"], prop["type"]
    if name == "email":
        if not EMAIL_RE.fullmatch(value):
            return "INVALID_EMAIL", f"Email address {value} is invalid"
        return value.lower()
    if type_ == "bool":
        if value not in ("true", "false"):
            return (
                "INVALID_BOOLEAN",
                f'{value} was not a valid boolean option. Valid options: ["true", "false"]',
            )
        return value
    if type_ == "number":
        if not _NUMBER_RE.fullmatch(value):
            return "INVALID_NUMBER", f"{value} was not a valid number"
        return value
    if type_ == "date":
        if _DATE_RE.fullmatch(value):
            try:
                return dt.date.fromisoformat(value).isoformat()
            except ValueError:
                pass
        elif _EPOCH_MS_RE.fullmatch(value):
            ms = int(value)
            if ms % 86_400_000 == 0:
                return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).date().isoformat()
            return "INVALID_DATE", f"{value} is not at midnight UTC; date properties hold a day"
        return (
            "INVALID_DATE",
            f"{value} was not a valid date (YYYY-MM-DD or epoch ms at midnight UTC)",
        )
    if type_ == "datetime":
        if _EPOCH_MS_RE.fullmatch(value):
            return iso(int(value) / 1000)
        try:
            moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return (
                "INVALID_DATETIME",
                f"{value} was not a valid datetime (ISO-8601 or epoch ms)",
            )
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        return iso(moment.timestamp())
    if type_ == "enumeration":
        allowed = {o["value"] for o in prop.get("options") or ()}
        parts = value.split(";") if prop["fieldType"] == "checkbox" else [value]
        for part in parts:
            if part not in allowed:
                return "INVALID_OPTION", (
                    f"{part} was not one of the allowed options: {sorted(allowed)}"
                )
        return value
    if len(value) > _MAX_STRING:
        return "INVALID_STRING", f"value of {len(value)} characters exceeds {_MAX_STRING}"
    return value


def values_error(problems: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """The 400 body (or 207 element) for a write whose values do not fit."""
    message = "Property values were not valid: " + msgspec.json.encode(problems).decode()
    details = [
        {
            "message": p["message"],
            "code": p["error"],
            "in": p["name"],
            "context": {"propertyName": [p["name"]]},
        }
        for p in problems
    ]
    return error("VALIDATION_ERROR", message, errors=details, **extra)

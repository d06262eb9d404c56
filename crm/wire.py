"""HubSpot's JSON as it comes over the wire, decoded with msgspec, and what the client reads of it.

Lenient: every field optional. HubSpot's schemas mark `errors`, `links` and `context` of a
StandardError required and property values as strings, but HubSpot itself is not always strict:
members may be missing or null, `subCategory` is an object in one schema and a string in another,
a value may be null or "". A member that may be missing is None here, and the code reads it with
`or` (typed, no surprise). Nothing here is hubsync's public API: `crm.results` is.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from crm.results import PropertyError

__all__ = [
    "BatchResponse",
    "PropertyBatch",
    "Record",
    "StandardError",
    "TokenInfoBody",
    "context_list",
    "decode_batch",
    "decode_error",
    "decode_property_batch",
    "encode_json",
    "property_errors",
]


class StandardError(msgspec.Struct):
    status: Any = None
    category: str | None = None
    subCategory: Any = None
    message: str | None = None
    context: dict[str, Any] | None = None
    errors: list[Any] | None = None
    policyName: str | None = None


class Record(msgspec.Struct):
    id: str
    properties: dict[str, str | None] | None = None
    new: bool | None = None
    objectWriteTraceId: str | None = None


class BatchResponse(msgspec.Struct):
    results: list[Record] | None = None
    errors: list[StandardError] | None = None
    status: str | None = None


class PropertyBatch(msgspec.Struct):
    results: list[dict[str, Any]] | None = None
    errors: list[StandardError] | None = None


class TokenInfoBody(msgspec.Struct):
    hubId: int | None = None
    appId: int | None = None
    userId: int | None = None
    scopes: list[str] = []


decode_batch = msgspec.json.Decoder(BatchResponse).decode
decode_property_batch = msgspec.json.Decoder(PropertyBatch).decode
decode_error = msgspec.json.Decoder(StandardError).decode
encode_json = msgspec.json.encode


def context_list(error: StandardError, key: str) -> list[str]:
    value = (error.context or {}).get(key)
    if isinstance(value, list):
        return [str(v) for v in value]
    return [str(value)] if value is not None else []


_INVALID_VALUES = re.compile(r"Property values were not valid: (\[.*\])", re.DOTALL)


def property_errors(error: StandardError) -> tuple[PropertyError, ...]:
    """The properties an error names, with HubSpot's code for each: from `errors[].in` or
    `errors[].context.propertyName` (the documented places), the error's own
    `context.propertyName`, or the JSON list HubSpot puts in the message of a batch 400
    ("Property values were not valid: [{"name": ..., "error": ...}]")."""
    found: dict[str, PropertyError] = {}

    def add(name: Any, code: Any, message: Any) -> None:
        if isinstance(name, str) and name and name not in found:
            found[name] = PropertyError(
                name=name,
                code=code if isinstance(code, str) else None,
                message=message if isinstance(message, str) else "",
            )

    for detail in error.errors or ():
        if not isinstance(detail, dict):
            continue
        raw_context = detail.get("context")
        context = raw_context if isinstance(raw_context, dict) else {}
        names = context.get("propertyName") or []
        for name in [detail.get("in"), *(names if isinstance(names, list) else [names])]:
            add(name, detail.get("code") or detail.get("subCategory"), detail.get("message"))
    for name in context_list(error, "propertyName"):
        add(name, error.subCategory, error.message)
    listed = _INVALID_VALUES.search(error.message or "")
    if listed:
        try:
            problems = msgspec.json.decode(listed.group(1))
        except msgspec.DecodeError:
            problems = []
        for problem in problems if isinstance(problems, list) else ():
            if isinstance(problem, dict):
                add(problem.get("name"), problem.get("error"), problem.get("message"))
    return tuple(found.values())

"""What crosses the emulator's API, shared by every part of it: the request and answer types,
HubSpot's error bodies, the batch envelope (`inputs` in, `results`/`errors` out) and timestamps.

An operation that has to answer with an error raises `Reply`; the request pipeline turns it into
the answer, so deep validation code does not thread status codes back by hand.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any

import msgspec

from crm.emulator.faults import FaultAction

__all__ = [
    "ApiRequest",
    "ApiResponse",
    "Reply",
    "batch_body",
    "batch_inputs",
    "error",
    "iso",
    "reject_duplicates",
]


class ApiRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One API call, as the HTTP layer saw it."""

    operation: str
    method: str = "GET"
    params: dict[str, str] = {}
    query: dict[str, str] = {}
    body: bytes = b""
    authorization: str | None = None


class ApiResponse(msgspec.Struct, kw_only=True):
    status: int
    body: Any = None
    headers: dict[str, str] = {}
    fault: FaultAction | None = None
    latency: float = 0.0


class Reply(Exception):
    """Raised inside an operation to answer with an error response."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.body = body


@functools.lru_cache(maxsize=4096)  # one `now` per call: records repeat the same instants
def iso(ts: float) -> str:
    moment = dt.datetime.fromtimestamp(ts, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def error(category: str, message: str, **extra: Any) -> dict[str, Any]:
    """HubSpot's error body: status, message, category, and whatever else the call adds."""
    body: dict[str, Any] = {"status": "error", "message": message, "category": category}
    body.update(extra)
    return body


def _standard_error(err: dict[str, Any]) -> dict[str, Any]:
    """An element of a batch's `errors[]` as HubSpot's `StandardError` schema requires it:
    status, category, message, context, errors and links all present (a top-level error body
    may leave the last three out, an element of a 207 may not)."""
    return {"context": {}, "errors": [], "links": {}} | err


def batch_inputs(payload: Any, limit: int) -> list[dict[str, Any]]:
    """The `inputs` of a batch call, or the 400 HubSpot answers to a malformed or too big one."""
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list):
        raise Reply(400, error("VALIDATION_ERROR", "Invalid input JSON: 'inputs' must be a list"))
    inputs = payload["inputs"]
    if len(inputs) > limit:
        raise Reply(
            400,
            error(
                "VALIDATION_ERROR",
                f"Batch input size {len(inputs)} is too large. Batch inputs are limited to {limit} items.",
                context={"size": [str(len(inputs))], "limit": [str(limit)]},
            ),
        )
    for item in inputs:
        if not isinstance(item, dict):
            raise Reply(
                400,
                error("VALIDATION_ERROR", "Invalid input JSON: every input must be an object"),
            )
    return inputs


def reject_duplicates(keys: list[str], raw_ids: list[str]) -> None:
    """A batch naming one record twice fails whole (HubSpot's 400 "Duplicate IDs")."""
    seen: dict[str, str] = {}
    dupes: list[str] = []
    for key, raw in zip(keys, raw_ids, strict=True):
        if key in seen and raw not in dupes:
            dupes.append(raw)
        seen.setdefault(key, raw)
    if dupes:
        raise Reply(
            400,
            error(
                "VALIDATION_ERROR",
                f"Duplicate IDs found in batch input: [{', '.join(dupes)}]. IDs must be unique",
                context={"ids": dupes},
            ),
        )


def batch_body(
    started: float, now: float, results: list[Any], errors: list[Any]
) -> tuple[int, dict[str, Any]]:
    """A batch answer: 200 when every input succeeded, else 207 with the errors beside."""
    body: dict[str, Any] = {
        "status": "COMPLETE",
        "results": results,
        "startedAt": iso(started),
        "completedAt": iso(now),
    }
    if errors:
        body["numErrors"] = len(errors)
        body["errors"] = [_standard_error(e) for e in errors]
        return 207, body
    return 200, body

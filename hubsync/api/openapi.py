"""The OpenAPI 3.1 document, generated from the route table and the handlers' msgspec types.

Nothing here is written by hand per endpoint: paths come from `ROUTES`, bodies and answers from
`msgspec.json.schema_components` over the same Structs the handlers decode and encode.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from importlib.metadata import version
from typing import Any

import msgspec

from hubsync.api.auth import CSRF_HEADER, SESSION_COOKIE

__all__ = ["openapi"]

_REF = "#/components/schemas/{name}"
_PATH_PARAM = re.compile(r"{([^}]+)}")


def _document(routes: Sequence[Any], prefix: str) -> dict[str, Any]:
    types = sorted(
        {t for op in routes for t in (op.body, *op.responses.values()) if t is not None},
        key=lambda t: t.__name__,
    )
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF)
    ref = dict(zip(types, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for op in routes:
        declared = {p.name for p in op.params if p.where == "path"}
        missing = set(_PATH_PARAM.findall(op.path)) - declared
        if missing:
            raise ValueError(f"{op.method} {op.path}: path parameters {missing} are not declared")
        item: dict[str, Any] = {
            "operationId": op.handler.__name__,
            "summary": op.summary,
            "responses": {
                str(status): _response(status, t, op.stream, ref)
                for status, t in sorted(op.responses.items())
            },
        }
        if op.params:
            item["parameters"] = [
                {
                    "name": p.name,
                    "in": p.where,
                    "required": p.required or p.where == "path",
                    "description": p.description,
                    "schema": p.schema,
                }
                for p in op.params
            ]
        if op.body is not None:
            item["requestBody"] = {
                "required": op.method == "POST" and op.handler.__name__ not in _OPTIONAL_BODIES,
                "content": {"application/json": {"schema": ref[op.body]}},
            }
        if op.public:
            item["security"] = []
        paths.setdefault(prefix + op.path, {})[op.method.lower()] = item
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "hubsync API",
            "version": version("hubsync"),
            "description": (
                "Drive hubsync (CDP audiences and attributes to HubSpot) over HTTP. Authenticate "
                "with `Authorization: Bearer <API key>`, or sign in (POST /api/v1/session) and "
                f"send the `{SESSION_COOKIE}` cookie plus the `{CSRF_HEADER}` header on "
                "state-changing requests. Errors are `{error, message, field?}`."
            ),
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE},
            },
        },
        "security": [{"bearer": []}, {"session": []}],
    }


_OPTIONAL_BODIES = frozenset({"pause", "verify"})


def _response(status: int, t: type | None, stream: bool, ref: dict[type, Any]) -> dict[str, Any]:
    described: dict[str, Any] = {"description": _STATUS_TEXT.get(status, str(status))}
    if stream:
        described["content"] = {"text/event-stream": {"schema": {"type": "string"}}}
    elif t is not None:
        described["content"] = {"application/json": {"schema": ref[t]}}
    elif status != 204:
        described["content"] = {"application/json": {"schema": {"type": "object"}}}
    return described


_STATUS_TEXT = {
    200: "OK",
    201: "Created",
    202: "Accepted: a job was started",
    204: "No content",
    400: "The request is malformed; `field` names what to fix",
    401: "No or a wrong API key, or no valid session",
    403: "A session request without its CSRF token",
    404: "No such resource",
    409: "Conflicts with the current state",
    422: "Names an audience or attribute the CDP does not define",
    502: "HubSpot could not be reached or failed",
    503: "Not ready (Redis unreachable, or not configured)",
}


_built: dict[int, dict[str, Any]] = {}


def openapi(routes: Sequence[Any], prefix: str) -> dict[str, Any]:
    """The document for ``routes`` served under ``prefix`` (built once per route table)."""
    if id(routes) not in _built:
        _built[id(routes)] = _document(routes, prefix)
    return _built[id(routes)]

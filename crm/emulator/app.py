"""The emulator's HTTP face: Starlette routes that hand each call to `HubSpotState.handle`.

Every HubSpot path is served under both the v3 and the date-versioned (2026-03) prefixes.
`/_emulator/*` are admin endpoints: no auth, not rate limited, never faulted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from crm.emulator.faults import FaultSettings
from crm.emulator.state import ALL_SCOPES, ApiRequest, HubSpotState

__all__ = ["TRANSPORT_SCOPE_KEY", "create_app"]

TRANSPORT_SCOPE_KEY = "hubsync.emulator.transport"
"""Where `crm.emulator.server`'s protocol puts the connection's transport, to drop it."""

OBJECT_PREFIXES = ("/crm/v3/objects/contacts", "/crm/objects/2026-03/contacts")
PROPERTY_PREFIXES = ("/crm/v3/properties/contacts", "/crm/properties/2026-03/contacts")

_PROPERTY_ROUTES = (
    ("/groups", "GET", "groups_list"),
    ("/groups", "POST", "group_create"),
    ("/groups/{name}", "GET", "group_get"),
    ("/groups/{name}", "PATCH", "group_update"),
    ("/groups/{name}", "DELETE", "group_archive"),
    ("/batch/create", "POST", "properties_batch_create"),
    ("/batch/read", "POST", "properties_batch_read"),
    ("/batch/archive", "POST", "properties_batch_archive"),
    ("", "GET", "properties_list"),
    ("", "POST", "property_create"),
    ("/{name}", "GET", "property_get"),
    ("/{name}", "PATCH", "property_update"),
    ("/{name}", "DELETE", "property_archive"),
)
_OBJECT_ROUTES = (
    ("/batch/upsert", "POST", "contacts_batch_upsert"),
    ("/batch/update", "POST", "contacts_batch_update"),
    ("/batch/create", "POST", "contacts_batch_create"),
    ("/batch/read", "POST", "contacts_batch_read"),
    ("/batch/archive", "POST", "contacts_batch_archive"),
    ("/search", "POST", "contacts_search"),
    ("/{contact_id}", "GET", "contact_get"),
    ("/{contact_id}", "PATCH", "contact_patch"),
    ("/{contact_id}", "DELETE", "contact_archive"),
)

_encode = msgspec.json.encode


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        _encode(body), status_code=status, headers=headers, media_type="application/json"
    )


async def _wait_for_disconnect(request: Request, seconds: float) -> bool:
    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    try:
        await asyncio.wait_for(watch(), seconds)
        return True
    except TimeoutError:
        return False


def create_app(state: HubSpotState, *, admin_routes: Sequence[BaseRoute] = ()) -> Starlette:
    """A Starlette app serving `state` over HubSpot's paths plus `/_emulator/*`.

    `admin_routes` come first, so an instrumented emulator (a benchmark's) can add admin views
    or answer one of the built-in `/_emulator/*` paths its own way."""

    def api_endpoint(operation: str):
        async def endpoint(request: Request) -> Response:
            call = ApiRequest(
                operation=operation,
                method=request.method,
                params=dict(request.path_params),
                query=dict(request.query_params),
                body=await request.body(),
                authorization=request.headers.get("authorization"),
            )
            answer = state.handle(call)
            if answer.latency > 0:
                await asyncio.sleep(answer.latency)
            fault = answer.fault
            if fault is not None and fault.kind == "drop":
                transport = request.scope.get(TRANSPORT_SCOPE_KEY)
                if transport is None:  # served by something else than EmulatorServer
                    raise ConnectionAbortedError("emulated dropped connection")
                transport.abort()
                await asyncio.sleep(0)  # let the server notice the disconnect
                await asyncio.sleep(0)
                return Response(status_code=499)
            if fault is not None and fault.kind == "hang":
                if await _wait_for_disconnect(request, state.faults.settings.hang_seconds):
                    return Response(status_code=499)
                return _json(
                    {
                        "status": "error",
                        "category": "GATEWAY_TIMEOUT",
                        "message": "Emulated hang",
                        "correlationId": answer.headers.get("X-HubSpot-Correlation-Id", ""),
                    },
                    504,
                    answer.headers,
                )
            if answer.body is None:
                return Response(status_code=answer.status, headers=answer.headers)
            return _json(answer.body, answer.status, answer.headers)

        endpoint.__name__ = operation
        return endpoint

    async def token_info(request: Request) -> Response:
        answer = state.token_info(await request.body())
        return _json(answer.body, answer.status, answer.headers)

    async def admin_contacts(request: Request) -> Response:
        with_ts = request.query_params.get("with_timestamps", "") not in ("", "0", "false")
        return _json({"results": state.dump_contacts(with_timestamps=with_ts)})

    async def admin_properties(request: Request) -> Response:
        return _json(state.dump_properties())

    async def admin_stats(request: Request) -> Response:
        return _json(state.stats())

    async def admin_requests(request: Request) -> Response:
        return _json({"results": state.requests_seen()})

    async def admin_reset(request: Request) -> Response:
        state.reset()
        return _json({"reset": True})

    async def _body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        return msgspec.json.decode(raw) if raw else {}

    async def admin_faults(request: Request) -> Response:
        try:
            settings = msgspec.json.decode(await request.body() or b"{}", type=FaultSettings)
            state.set_faults(settings)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
            return _json({"error": str(exc)}, 400)
        return _json(msgspec.to_builtins(state.faults.settings))

    async def admin_tokens(request: Request) -> Response:
        body = await _body(request)
        token = body.get("token")
        if not isinstance(token, str) or not token:
            return _json({"error": "token (a non-empty string) is required"}, 400)
        if body.get("revoke"):
            state.revoke_token(token)
            return _json({"revoked": True})
        scopes = body.get("scopes")
        fingerprint = state.register_token(token, ALL_SCOPES if scopes is None else scopes)
        return _json({"fingerprint": fingerprint, "scopes": sorted(state.tokens[token])})

    async def admin_config(request: Request) -> Response:
        try:
            state.configure(await _body(request))
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
            return _json({"error": str(exc)}, 400)
        return _json(msgspec.to_builtins(state.config))

    async def admin_restore(request: Request) -> Response:
        restored = state.restore_property(request.path_params["name"])
        return _json({"restored": restored}, 200 if restored else 404)

    async def admin_health(request: Request) -> Response:
        return _json({"ok": True})

    routes: list[BaseRoute] = [
        *admin_routes,
        Route("/_emulator/contacts", admin_contacts, methods=["GET"]),
        Route("/_emulator/properties", admin_properties, methods=["GET"]),
        Route("/_emulator/properties/{name}/restore", admin_restore, methods=["POST"]),
        Route("/_emulator/stats", admin_stats, methods=["GET"]),
        Route("/_emulator/requests", admin_requests, methods=["GET"]),
        Route("/_emulator/reset", admin_reset, methods=["POST"]),
        Route("/_emulator/faults", admin_faults, methods=["POST"]),
        Route("/_emulator/tokens", admin_tokens, methods=["POST"]),
        Route("/_emulator/config", admin_config, methods=["POST"]),
        Route("/_emulator/health", admin_health, methods=["GET"]),
        Route("/oauth/v2/private-apps/get/access-token-info", token_info, methods=["POST"]),
    ]
    for prefixes, table in (
        (PROPERTY_PREFIXES, _PROPERTY_ROUTES),
        (OBJECT_PREFIXES, _OBJECT_ROUTES),
    ):
        for prefix in prefixes:
            by_path: dict[str, dict[str, str]] = {}
            for suffix, method, operation in table:
                by_path.setdefault(prefix + suffix, {})[method] = operation
            for path, methods in by_path.items():
                routes.append(Route(path, _dispatch(methods, api_endpoint), methods=list(methods)))
    return Starlette(routes=routes)


def _dispatch(methods: dict[str, str], make):
    endpoints = {method: make(op) for method, op in methods.items()}

    async def endpoint(request: Request) -> Response:
        return await endpoints[request.method](request)

    return endpoint

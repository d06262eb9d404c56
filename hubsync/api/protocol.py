"""The API's HTTP conventions, shared by every handler: the context they get, errors as
`{error, message, field?}`, bodies decoded into msgspec types where they enter, query and path
checks, and the activation view every activation endpoint answers."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import redis.asyncio as aioredis
from starlette.requests import Request
from starlette.responses import Response

from events.activations import Activations, ActivationSpec
from events.streams import Keys
from hubsync import views
from hubsync.api import schemas as s
from hubsync.api.auth import Authenticator
from hubsync.api.jobs import Jobs
from hubsync.config import Config, ConfigError, secret_key
from hubsync.console.history import History
from hubsync.views import read_status

__all__ = [
    "MAX_BODY",
    "PREFIX",
    "ApiProblem",
    "Context",
    "Handler",
    "Operation",
    "Param",
    "activation_view",
    "all_activations",
    "decode_body",
    "error_response",
    "field_of",
    "find_activation",
    "json_response",
    "limit_param",
    "path_id",
    "query_flag",
    "query_id",
]

PREFIX = "/api/v1"
MAX_BODY = 64 * 1024
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_encode = msgspec.json.Encoder().encode


class ApiProblem(Exception):
    """Raised by a handler to answer with an error body; the message says what to do."""

    def __init__(self, status: int, error: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.body = status, s.ApiError(error=error, message=message, field=field)


@dataclass
class Context:
    """What the handlers share: configuration, Redis, the key layout, auth and jobs."""

    config: Config
    redis: aioredis.Redis
    auth: Authenticator
    jobs: Jobs = field(default_factory=Jobs)
    clock: Callable[[], float] = time.time
    poll_interval: float = 1.0
    routes: Sequence[Any] = ()
    """The route table served (the OpenAPI document describes it)."""
    history: History = field(default_factory=History)
    """Recent calls per window and lag per activation, for the console's charts."""

    @property
    def keys(self) -> Keys:
        return self.config.keys

    def secret_key(self) -> str:
        try:
            return secret_key(self.config)
        except ConfigError as exc:
            raise ApiProblem(503, "not_configured", str(exc)) from None


Handler = Callable[[Context, Request], Awaitable[Response]]


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # "path" or "query"
    schema: dict[str, Any]
    description: str = ""
    required: bool = False


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    handler: Handler
    summary: str
    body: type | None = None
    responses: dict[int, type | None] = field(default_factory=dict)
    params: tuple[Param, ...] = ()
    public: bool = False
    stream: bool = False


# --- helpers -----------------------------------------------------------------------------------


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        _encode(body), status_code=status, headers=headers, media_type="application/json"
    )


def error_response(status: int, error: str, message: str, field: str | None = None) -> Response:
    return json_response(s.ApiError(error=error, message=message, field=field), status)


_AT = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")
_MISSING = re.compile(r"missing required field `(?P<name>[^`]+)`")
_UNKNOWN = re.compile(r"unknown field `(?P<name>[^`]+)`")


def field_of(message: str) -> str | None:
    path = (m.group("path") if (m := _AT.search(message)) else "") or ""
    for pattern in (_MISSING, _UNKNOWN):
        if m := pattern.search(message):
            return f"{path}.{m.group('name')}" if path else m.group("name")
    return path or None


async def decode_body(request: Request, type_: type, *, optional: bool = False) -> Any:
    """The request's JSON body as ``type_``, or an ApiProblem naming the field at fault."""
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise ApiProblem(413, "too_large", f"the body is over {MAX_BODY // 1024} KiB")
    if not raw.strip():
        if optional:
            raw = b"{}"
        else:
            raise ApiProblem(400, "invalid_body", "a JSON object body is required")
    try:
        return msgspec.json.decode(raw, type=type_)
    except msgspec.ValidationError as exc:
        text = str(exc)
        where = field_of(text)
        message = _AT.sub("", text)
        raise ApiProblem(
            400,
            "invalid_body",
            f"{where}: {message}" if where else message,
            field=where,
        ) from None
    except msgspec.DecodeError as exc:
        raise ApiProblem(400, "invalid_json", f"the body is not valid JSON ({exc})") from None


def query_flag(request: Request, name: str) -> bool:
    raw = request.query_params.get(name)
    if raw is None or raw.lower() in ("", "false", "0", "no"):
        return False
    if raw.lower() in ("true", "1", "yes"):
        return True
    raise ApiProblem(400, "invalid_query", f"{name} must be true or false", field=name)


def query_id(request: Request, name: str) -> str | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if not _ID.match(raw):
        raise ApiProblem(
            400, "invalid_query", f"{name}: letters, digits, '_', '.', ':' or '-'", field=name
        )
    return raw


def path_id(request: Request, name: str, what: str) -> str:
    raw = request.path_params[name]
    if not _ID.match(raw):
        raise ApiProblem(404, "not_found", f"no {what} {raw[:80]!r}")
    return raw


async def find_activation(ctx: Context, request: Request) -> tuple[Activations, ActivationSpec]:
    activation_id = path_id(request, "id", "activation")
    state = Activations()
    await state.refresh(ctx.redis, ctx.keys)
    spec = state.by_id.get(activation_id)
    if spec is None:
        raise ApiProblem(
            404,
            "not_found",
            f"no activation {activation_id!r}; GET /api/v1/activations lists them",
        )
    return state, spec


async def activation_view(
    ctx: Context, spec: ActivationSpec, notes: Sequence[str] = ()
) -> s.Activation:
    raw = await read_status(ctx.redis, ctx.keys, spec.activation_id)
    budget = await views.read_governor_status(ctx.redis, ctx.keys, spec.token_fingerprint)
    return s.Activation(
        id=spec.activation_id,
        name=spec.name,
        token_fingerprint=spec.token_fingerprint,
        plan=spec.plan,
        audiences=sorted(spec.audiences),
        attributes=sorted(spec.attributes),
        update_only=spec.mode == "update_only",
        mode=spec.mode,
        base_url=spec.base_url,
        api_version=spec.api_version,
        paused=spec.paused,
        pause_reason=spec.pause_reason,
        status=views.live_status(spec, raw, ctx.clock()),
        budget=None if budget is None else msgspec.to_builtins(budget),
        notes=list(notes),
    )


async def all_activations(ctx: Context) -> list[s.Activation]:
    state = Activations()
    await state.refresh(ctx.redis, ctx.keys)
    return [await activation_view(ctx, spec) for spec in state.by_id.values()]


def limit_param(request: Request, default: int = 50, most: int = 500) -> int:
    raw = request.query_params.get("limit")
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= most:
        raise ApiProblem(
            400, "invalid_query", f"limit must be a whole number from 1 to {most}", "limit"
        )
    return int(raw)

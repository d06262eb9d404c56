"""The API as a Starlette app: `create_app` builds the routes from `ROUTES`, in front of every
handler checks the key or the session (and its CSRF token), and turns errors into JSON bodies.

A handler never echoes an exception it did not raise on purpose: it could quote a request body."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from events.activations import CommandRejected
from hubsync.api.auth import CSRF_HEADER, SESSION_COOKIE, Authenticator
from hubsync.api.jobs import Jobs
from hubsync.api.protocol import (
    PREFIX,
    ApiProblem,
    Context,
    Operation,
    all_activations,
    error_response,
    json_response,
)
from hubsync.api.routes import ROUTES
from hubsync.config import Config
from hubsync.console.pages import console_routes

__all__ = ["PREFIX", "ROUTES", "ApiProblem", "Operation", "create_app"]

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
log = logging.getLogger("hubsync.api")


def _authenticate(ctx: Context, request: Request) -> Response | None:
    """None when the request may go on; else the 401/403 answer."""
    authorization = request.headers.get("authorization")
    if authorization:
        if ctx.auth.bearer_matches(authorization):
            return None
        return _unauthorized("the API key is wrong; `hubsync api-key` shows the right one")
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie and ctx.auth.session_valid(cookie):
        if request.method in _SAFE_METHODS:
            return None
        token = request.headers.get(CSRF_HEADER, "")
        if token and ctx.auth.csrf_valid(cookie, token):
            return None
        return error_response(
            403,
            "csrf",
            "a request made with the session cookie must send the X-CSRF-Token header the sign-in gave",
        )
    if cookie:
        return _unauthorized("the session has expired: sign in again")
    return _unauthorized(
        "send Authorization: Bearer <API key> (`hubsync api-key` shows it), or sign in"
    )


def _unauthorized(message: str) -> Response:
    response = error_response(401, "unauthorized", message)
    response.headers["WWW-Authenticate"] = 'Bearer realm="hubsync"'
    return response


def _endpoint(ctx: Context, op: Operation) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        if not op.public and (refused := _authenticate(ctx, request)) is not None:
            return refused
        try:
            return await op.handler(ctx, request)
        except ApiProblem as problem:
            return json_response(problem.body, problem.status)
        except CommandRejected as exc:
            return error_response(409, "rejected", str(exc))
        except Exception:
            # Never echo an exception (it could quote a request body): log its type and where.
            log.exception("API %s %s failed", op.method, op.path)
            return error_response(500, "internal", "hubsync failed to answer; its log says why")

    endpoint.__name__ = op.handler.__name__
    return endpoint


def create_app(
    config: Config,
    redis: aioredis.Redis,
    *,
    api_key: str,
    clock: Callable[[], float] = time.time,
    poll_interval: float = 1.0,
    close_redis: bool = False,
) -> Starlette:
    """The API as a Starlette app over ``redis``; ``close_redis`` closes it on shutdown."""
    ctx = Context(
        config=config,
        redis=redis,
        auth=Authenticator(api_key, clock=clock),
        jobs=Jobs(clock=clock),
        clock=clock,
        poll_interval=poll_interval,
        routes=ROUTES,
    )
    by_path: dict[str, dict[str, Operation]] = {}
    for op in ROUTES:
        by_path.setdefault(op.path, {})[op.method] = op
    routes = [
        Route(
            PREFIX + path,
            _by_method({m: _endpoint(ctx, op) for m, op in ops.items()}),
            methods=list(ops),
        )
        for path, ops in by_path.items()
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        return error_response(404, "not_found", f"no such endpoint: {request.url.path}")

    async def not_allowed(request: Request, exc: Exception) -> Response:
        return error_response(405, "method_not_allowed", f"{request.method} is not served here")

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        sampler = asyncio.get_running_loop().create_task(
            ctx.history.run(lambda: all_activations(ctx), clock)
        )
        yield
        sampler.cancel()
        await ctx.jobs.cancel_all()
        if close_redis:
            await redis.aclose()

    app = Starlette(
        routes=[*routes, *console_routes(ctx)],
        exception_handlers={404: not_found, 405: not_allowed},
        lifespan=lifespan,
    )
    app.state.context = ctx
    return app


def _by_method(
    endpoints: dict[str, Callable[[Request], Awaitable[Response]]],
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        handler = endpoints.get(request.method) or endpoints["GET"]  # HEAD is served as GET
        return await handler(request)

    return endpoint

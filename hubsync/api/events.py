"""`GET /api/v1/events`: status changes as Server-Sent Events, so a page need not poll every
activation. Each client's stream reads the statuses once per poll interval and sends an
`activation` event when an activation's view changed (publication times aside), `deleted` when
one is gone, and a comment every 15 s of quiet to keep proxies from closing the stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from hubsync.api import schemas as s
from hubsync.api.protocol import (
    Context,
    all_activations,
)

__all__ = ["events"]

_encode = msgspec.json.Encoder().encode


def _comparable(view: s.Activation) -> bytes:
    """The view without what changes every second by itself (publication times)."""
    data = msgspec.to_builtins(view)
    data["status"].pop("updated_at", None)
    if data.get("budget"):
        data["budget"].pop("updated_at", None)
    return _encode(data)


async def events(ctx: Context, request: Request) -> Response:
    async def stream() -> AsyncIterator[bytes]:
        seen: dict[str, bytes] = {}
        counter = 0
        quiet_since = ctx.clock()
        yield b"retry: 3000\n\n"
        while True:
            views = await all_activations(ctx)
            current = {v.id for v in views}
            for view in views:
                marker = _comparable(view)
                if seen.get(view.id) != marker:
                    seen[view.id] = marker
                    counter += 1
                    yield b"event: activation\nid: %d\ndata: %s\n\n" % (counter, _encode(view))
                    quiet_since = ctx.clock()
            for gone in sorted(set(seen) - current):
                del seen[gone]
                counter += 1
                yield b"event: deleted\nid: %d\ndata: %s\n\n" % (counter, _encode({"id": gone}))
            if ctx.clock() - quiet_since > 15:
                yield b": keep-alive\n\n"
                quiet_since = ctx.clock()
            if await request.is_disconnected():
                return
            await asyncio.sleep(ctx.poll_interval)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )

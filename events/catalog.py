"""The catalog: which audiences and attributes exist, folded from the catalog stream.

The catalog stream is small (definitions and deletions only), so any process rebuilds it by reading
the stream; `refresh()` reads only what was appended since the last call, cheap enough for every
Router step. Definitions follow the stream: a later ``*_defined`` replaces the definition (new
enumeration options), and one after a ``*_deleted`` makes the id live again.
"""

from __future__ import annotations

import msgspec
import redis.asyncio as aioredis

from events.model import (
    AttributeDefined,
    AttributeDeleted,
    AudienceDefined,
    AudienceDeleted,
    CdpEvent,
    decode_cdp_event,
)
from events.ports import EventStream
from events.redis_backend import RedisEventStream
from events.streams import Keys

__all__ = ["Catalog"]


class Catalog(msgspec.Struct):
    """Current definitions; a deleted id stays known as deleted (its tag is never reused silently)."""

    audiences: dict[str, AudienceDefined] = {}
    attributes: dict[str, AttributeDefined] = {}
    deleted_audiences: set[str] = set()
    deleted_attributes: set[str] = set()
    last_id: str = "0-0"

    def apply(self, event: CdpEvent) -> None:
        match event:
            case AudienceDefined(audience_id=aid):
                self.audiences[aid] = event
                self.deleted_audiences.discard(aid)
            case AudienceDeleted(audience_id=aid):
                self.audiences.pop(aid, None)
                self.deleted_audiences.add(aid)
            case AttributeDefined(attribute_id=attr):
                self.attributes[attr] = event
                self.deleted_attributes.discard(attr)
            case AttributeDeleted(attribute_id=attr):
                self.attributes.pop(attr, None)
                self.deleted_attributes.add(attr)

    async def refresh(self, redis: aioredis.Redis, keys: Keys) -> int:
        """Fold what the catalog stream on ``redis`` gained since the last refresh; returns how
        many entries (the entry points' way; the cores fold their Storage's stream)."""
        return await self.fold(RedisEventStream(redis, keys.catalog))

    async def fold(self, stream: EventStream) -> int:
        """Fold what the catalog stream gained since the last fold; returns how many entries."""
        seen = 0
        async for entry_id, raw in stream.read_after(self.last_id):
            self.last_id = entry_id
            seen += 1
            try:
                self.apply(decode_cdp_event(raw or b""))
            except Exception:  # whatever it raises: it is not a definition, and must not stop
                continue  # every Router's refresh; its producer finds it refused by publish
        return seen

    def audience_problem(self, audience_id: str) -> str | None:
        """Why a change for this audience cannot be used, or None."""
        if audience_id in self.audiences:
            return None
        if audience_id in self.deleted_audiences:
            return f"audience {audience_id!r} was deleted; publish audience_defined again to reuse the id"
        return f"unknown audience {audience_id!r}: publish an audience_defined event for it first"

    def attribute_problem(self, attribute_id: str) -> str | None:
        if attribute_id in self.attributes:
            return None
        if attribute_id in self.deleted_attributes:
            return f"attribute {attribute_id!r} was deleted; publish attribute_defined again to reuse the id"
        return (
            f"unknown attribute {attribute_id!r}: publish an attribute_defined event for it first"
        )

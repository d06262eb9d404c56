"""Reading the dead-letter stream for people: newest first, a page at a time, filtered.

Entries carry ``stream``, ``id``, ``reason`` and ``raw`` (README documents them), and, where the
entry names one, ``audience_id``, ``attribute_id`` and ``email``; older entries lack those, so
a filter on the email also looks into the raw entry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from events.streams import Keys
from hubsync.api.schemas import DeadLetter

__all__ = ["read_dead_letters"]

RAW_SHOWN = 4096  # bytes of the raw entry shown; the stream keeps it whole
PAGE = 500


def _text(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _letter(entry_id: Any, fields: Any) -> DeadLetter:
    dead_id = _text(entry_id) or ""
    raw = fields.get(b"raw") or b""
    return DeadLetter(
        dead_id=dead_id,
        stream=_text(fields.get(b"stream")) or "",
        id=_text(fields.get(b"id")) or "",
        reason=_text(fields.get(b"reason")) or "",
        raw=raw[:RAW_SHOWN].decode("utf-8", "replace"),
        audience_id=_text(fields.get(b"audience_id")) or None,
        attribute_id=_text(fields.get(b"attribute_id")) or None,
        email=_text(fields.get(b"email")) or None,
        at=int(dead_id.partition("-")[0] or 0) / 1000,
    )


async def read_dead_letters(
    redis: aioredis.Redis,
    keys: Keys,
    *,
    limit: int,
    before: str | None = None,
    match: Callable[[DeadLetter, bytes], bool] | None = None,
    max_scan: int = 50_000,
) -> tuple[list[DeadLetter], str | None, int]:
    """Up to ``limit`` matching letters older than ``before``, newest first; returns them, the
    cursor for the next page (None: the stream is exhausted) and how many entries were read."""
    out: list[DeadLetter] = []
    upper = "+" if before is None else f"({before}"
    scanned = 0
    last: str | None = None
    while scanned < max_scan:
        rows: Any = await redis.xrevrange(keys.dead, max=upper, min="-", count=PAGE)
        if not rows:
            return out, None, scanned
        for entry_id, fields in rows:
            scanned += 1
            letter = _letter(entry_id, fields)
            last = letter.dead_id
            upper = f"({last}"
            if match is None or match(letter, fields.get(b"raw") or b""):
                out.append(letter)
                if len(out) >= limit:
                    return out, last, scanned
            if scanned >= max_scan:
                break
    return out, last, scanned

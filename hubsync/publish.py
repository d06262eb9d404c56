"""Publishing a JSON Lines file of CDP events: bad lines are reported with their number, good ones go.

A line is bad when the Routers would park it: it does not decode (malformed, too deeply nested,
an invalid email...), it is larger than HUBSYNC_MAX_ENTRY_BYTES, or its value does not fit an
attribute whose definition is known (in the catalog stream, or earlier in the same file). A
change for an attribute not defined yet is published: the definition may still come.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from crm.properties import format_value
from events.catalog import Catalog
from events.model import (
    AttributeChanged,
    AttributeDefined,
    AttributeDeleted,
    AudienceDefined,
    AudienceDeleted,
    CdpEvent,
    InvalidEvent,
    check_value,
    decode_cdp_event,
    encode,
)
from events.streams import (
    EVENT_FIELD,
    MAX_ENTRY_BYTES,
    Keys,
    Publisher,
    describe_error,
    ensure_partitions,
)

__all__ = ["BadLine", "PublishReport", "parse_lines", "publish_lines"]


@dataclass(frozen=True)
class BadLine:
    number: int
    reason: str


@dataclass
class PublishReport:
    published: int = 0
    bad: list[BadLine] = field(default_factory=list)


def parse_lines(
    lines: Iterable[bytes],
    report: PublishReport,
    *,
    max_entry_bytes: int = MAX_ENTRY_BYTES,
    catalog: Catalog | None = None,
) -> Iterator[CdpEvent]:
    """The events of the good lines, in order; each bad line goes to ``report`` with its reason.

    ``catalog``: the definitions known so far; definitions in the lines are added to it as they
    come, so a value is checked against the definition in force where it stands in the file.
    """
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield _event(line.rstrip(b"\r\n"), max_entry_bytes, catalog)
        except Exception as exc:  # whatever one line raises is that line's problem only
            report.bad.append(BadLine(number, describe_error(exc)))


def _event(line: bytes, max_entry_bytes: int, catalog: Catalog | None) -> CdpEvent:
    _check_size(len(line), max_entry_bytes)
    event = decode_cdp_event(line)
    _check_size(len(encode(event)), max_entry_bytes)  # what the Routers will read
    if catalog is not None:
        match event:
            case AudienceDefined() | AudienceDeleted() | AttributeDefined() | AttributeDeleted():
                catalog.apply(event)
            case AttributeChanged(attribute_id=attr, value=value) if attr in catalog.attributes:
                definition = catalog.attributes[attr]
                checked = check_value(definition, value)
                format_value(definition.value_type, checked, options=definition.options)
    return event


def _check_size(size: int, max_entry_bytes: int) -> None:
    if size + len(EVENT_FIELD) > max_entry_bytes:
        raise InvalidEvent(
            f"{size} bytes: larger than HUBSYNC_MAX_ENTRY_BYTES ({max_entry_bytes}); "
            "the Routers would park it unread"
        )


async def publish_lines(
    redis: aioredis.Redis,
    keys: Keys,
    lines: Iterable[bytes],
    *,
    partitions: int | None = None,
    batch: int = 500,
    on_progress: object = None,
    max_entry_bytes: int = MAX_ENTRY_BYTES,
) -> PublishReport:
    """Decode and publish every line; a bad line is recorded and skipped, never fatal.

    The partition count is read from Redis (NotStarted before `hubsync up` fixed it); pass
    ``partitions`` only as an explicit operator step that fixes it.
    """
    report = PublishReport()
    p = await ensure_partitions(redis, keys, partitions)
    publisher = Publisher(redis, keys, p, batch=batch)
    catalog = Catalog()
    await catalog.refresh(redis, keys)
    chunk: list[CdpEvent] = []
    for event in parse_lines(lines, report, max_entry_bytes=max_entry_bytes, catalog=catalog):
        chunk.append(event)
        if len(chunk) >= batch:
            report.published += len(await publisher.publish(chunk))
            chunk = []
            if callable(on_progress):
                on_progress(report.published)
    if chunk:
        report.published += len(await publisher.publish(chunk))
        if callable(on_progress):
            on_progress(report.published)
    return report

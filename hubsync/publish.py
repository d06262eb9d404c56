"""Publishing a JSON Lines file of CDP events: bad lines are reported with their number, good ones go."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from events.model import CdpEvent, InvalidEvent, decode_cdp_event
from events.streams import Keys, Publisher, ensure_partitions

__all__ = ["BadLine", "PublishReport", "publish_lines"]


@dataclass(frozen=True)
class BadLine:
    number: int
    reason: str


@dataclass
class PublishReport:
    published: int = 0
    bad: list[BadLine] = field(default_factory=list)


def parse_lines(lines: Iterable[bytes], report: PublishReport) -> Iterator[CdpEvent]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield decode_cdp_event(line)
        except InvalidEvent as exc:
            report.bad.append(BadLine(number, exc.reason))


async def publish_lines(
    redis: aioredis.Redis,
    keys: Keys,
    lines: Iterable[bytes],
    *,
    partitions: int | None = None,
    batch: int = 500,
    on_progress: object = None,
) -> PublishReport:
    """Decode and publish every line; a bad line is recorded and skipped, never fatal.

    The partition count is read from Redis (NotStarted before `hubsync up` fixed it); pass
    ``partitions`` only as an explicit operator step that fixes it.
    """
    report = PublishReport()
    p = await ensure_partitions(redis, keys, partitions)
    publisher = Publisher(redis, keys, p, batch=batch)
    chunk: list[CdpEvent] = []
    for event in parse_lines(lines, report):
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

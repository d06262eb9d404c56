"""`hubsync publish FILE.jsonl`: bad lines are reported with their number, good ones still go."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from events.model import decode_cdp_event
from events.streams import EVENT_FIELD, Keys, partition_of
from hubsync.cli import main

pytestmark = pytest.mark.integration


def test_publish_reports_bad_lines_by_number_and_publishes_the_rest(
    tmp_path: Path, redis_url: str
) -> None:
    namespace = f"pub{uuid.uuid4().hex[:8]}"
    lines = [
        '{"type":"audience_defined","audience_id":"a17","name":"Abandon Basket"}',
        '{"type":"audience_entered","audience_id":"a17","email":" Ada@Example.com "}',
        "not json at all",
        '{"type":"audience_entered","audience_id":"a17","email":"nobody"}',
        "",
        '{"type":"attribute_changed","attribute_id":"ltv","email":"bob@example.com","value":12.5}',
        '{"type":"audience_entered","audience_id":"a17","email":"a@b.co","x":'
        + "[" * 5_000
        + "]" * 5_000
        + "}",
        '{"type":"audience_entered","audience_id":"a17","email":"a@b.co","pad":"'
        + "p" * 70_000
        + '"}',
        '{"type":"attribute_defined","attribute_id":"ltv","name":"LTV","value_type":"number"}',
        '{"type":"attribute_changed","attribute_id":"ltv","email":"bob@example.com","value":1e300}',
        '{"type":"audience_entered","audience_id":"a17","email":"zw\u200b@example.com"}',
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    client = redis.Redis.from_url(redis_url)
    keys = Keys(namespace)
    client.hset(keys.config, "partitions", 3)  # as `hubsync up` fixes it; publish only reads it
    result = CliRunner().invoke(
        main,
        ["publish", str(path)],
        env={
            "HUBSYNC_REDIS_URL": redis_url,
            "HUBSYNC_NAMESPACE": namespace,
            "HUBSYNC_SECRET_KEY": "unused",
        },
    )
    assert result.exit_code == 1  # some lines were bad
    assert "published 4 events; 6 bad lines skipped" in result.output
    assert "line 3" in result.output and "not a JSON object" in result.output
    assert "line 4" in result.output and "invalid email 'nobody'" in result.output
    out = " ".join(result.output.split())  # rich wraps long lines
    assert "line 7: JSON nested deeper than 64 levels" in out
    assert "line 8: 70" in out and "larger than HUBSYNC_MAX_ENTRY_BYTES (65536)" in out
    assert "line 10: attribute 'ltv' (number): float 1e+300 is beyond ±2^53" in out
    assert "line 11: invalid audience_entered event: invalid email" in out
    assert "U+200B (ZERO WIDTH SPACE)" in out

    partitions = int(client.hget(keys.config, "partitions"))
    assert partitions == 3
    (_, catalog), _ = client.xrange(keys.catalog)
    assert decode_cdp_event(catalog[EVENT_FIELD]).audience_id == "a17"  # type: ignore[attr-defined]
    ada = client.xrange(keys.changes(partition_of("ada@example.com", partitions)))
    assert any(b'"ada@example.com"' in fields[EVENT_FIELD] for _, fields in ada)

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
    assert "published 3 events; 2 bad lines skipped" in result.output
    assert "line 3" in result.output and "not a JSON object" in result.output
    assert "line 4" in result.output and "invalid email 'nobody'" in result.output

    partitions = int(client.hget(keys.config, "partitions"))
    assert partitions == 3
    [(_, catalog)] = client.xrange(keys.catalog)
    assert decode_cdp_event(catalog[EVENT_FIELD]).audience_id == "a17"  # type: ignore[attr-defined]
    ada = client.xrange(keys.changes(partition_of("ada@example.com", partitions)))
    assert any(b'"ada@example.com"' in fields[EVENT_FIELD] for _, fields in ada)

"""`python -m bench soak`, very short and slow, as the lead runs it long: in a process of its own
(its own Redis, emulator over HTTP, Ray and hubsync on 127.0.0.1), it samples every series, the
bad entries reach the dead-letter stream, and every series gets a verdict the exit code follows."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bench.soak import backlog
from events.connection import connect
from events.streams import Keys

pytestmark = pytest.mark.integration

ACTIVATIONS = ("soak0", "soak1")
PARTITIONS = 4


def test_a_short_soak_samples_every_series_and_judges_each() -> None:
    env = dict(os.environ)
    for name in ("HUBSYNC_REDIS_URL", "RAY_ADDRESS"):
        env.pop(name, None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "soak",
            "--minutes",
            "0.4",
            "--rate",
            "200",
            "--contacts",
            "2000",
            "--activations",
            str(len(ACTIVATIONS)),
            "--every",
            "2",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert done.returncode in (0, 1), done.stdout[-2000:] + done.stderr[-3000:]
    r = json.loads(done.stdout)

    assert r["published"] > 0.8 * 200 * 24 and r["rate_sustained"]
    samples = r["samples"]
    assert len(samples) >= 10
    expected = {"redis.used_memory_bytes", "xlen.dead", "memory.dead_bytes"}
    expected |= {f"xlen.changes:{p}" for p in range(PARTITIONS)}
    expected |= {f"backlog.changes:{p}" for p in range(PARTITIONS)}
    expected |= {f"xlen.inbox:{a}" for a in ACTIVATIONS} | {f"pending.{a}" for a in ACTIVATIONS}
    rss = {"redis-server", "emulator", "supervisor"}
    rss |= {f"router:{p}" for p in range(PARTITIONS)} | {f"activation:{a}" for a in ACTIVATIONS}
    expected |= {f"rss.{name}_bytes" for name in rss}
    # the latest value of each series (an actor busy past where()'s timeout misses a sample)
    last: dict[str, float] = {}
    for sample in samples:
        last |= {k: v for k, v in sample["series"].items() if v is not None}
    assert expected <= set(last), expected - set(last)
    governors = [k for k in last if k.startswith("rss.governor:")]
    assert len(governors) == len(ACTIVATIONS)  # one token each
    assert all(last[f"rss.{name}_bytes"] > 1_000_000 for name in rss)
    assert last["redis.used_memory_bytes"] > samples[0]["series"]["redis.used_memory_bytes"]
    assert last["xlen.dead"] > 0 and last["memory.dead_bytes"] > 0  # the 1% bad entries
    assert sum(last[f"xlen.changes:{p}"] for p in range(PARTITIONS)) > 0

    verdicts = {v["series"]: v for v in r["verdicts"]}
    assert set(verdicts) == set(last)
    assert all(v["judged"] for v in verdicts.values())
    growing = sorted(k for k, v in verdicts.items() if v["keeps_growing"])
    assert r["keeps_growing"] == growing
    assert done.returncode == (1 if growing else 0)
    assert r["goal_met"] == (not growing)
    assert isinstance(r["dead_letters_capped"], bool)


async def test_the_backlog_of_a_stream_not_created_yet_is_zero(redis_url: str, keys: Keys) -> None:
    # The first sample can come before the first XADD and before a Router created its group: a
    # soak once died there, 10 minutes of load lost to "no such key".
    redis = connect(redis_url)
    try:
        stream = keys.changes(0)
        assert await backlog(redis, stream) == 0
        await redis.xgroup_create(stream, "routers", id="0", mkstream=True)
        for _ in range(5):
            await redis.xadd(stream, {b"event": b"{}"})
        await redis.xreadgroup("routers", "r0", {stream: ">"}, count=2)  # 2 pending, 3 unread
        assert await backlog(redis, stream) == 5
    finally:
        await redis.aclose()

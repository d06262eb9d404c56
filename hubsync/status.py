"""`hubsync status`: what every activation is doing, from the status the actors publish in Redis.

Actors write a small JSON status every second (``...:status`` keys); reading it needs only Redis,
not Ray, so the command works from any machine that reaches the Redis.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import click
import redis.asyncio as aioredis
from rich.console import Console
from rich.live import Live
from rich.table import Table

from hubsync.config import Config, with_redis
from hubsync.views import collect

__all__ = ["render", "status"]


def _fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
        if seconds >= 3600
        else f"{seconds // 60}m{seconds % 60:02d}s"
    )


def render(records: list[dict[str, Any]]) -> Table:
    table = Table(
        "activation",
        "state",
        "syncs",
        "pending",
        "written today",
        "calls left (window/day)",
        "lag",
        "backfill",
        "last error",
        title="hubsync status",
    )
    now = time.time()
    for r in records:
        s = r["status"] or {}
        t = r["token"] or {}
        state = "paused" if r["paused"] else s.get("state", "starting")
        if s and now - s.get("updated_at", 0) > 30:
            state += " (stale)"
        backfills = s.get("backfills") or {}
        progress = (
            ", ".join(
                f"{k}: {b['done']}/{b['total']} ETA {_fmt_eta(b.get('eta_s'))}"
                for k, b in backfills.items()
                if b["done"] < b["total"]
            )
            or "-"
        )
        lag = s.get("lag_s")
        table.add_row(
            f"{r['name']}\n[dim]{r['activation_id']}[/]",
            state,
            "\n".join(
                [
                    *(f"audience {a}" for a in r["audiences"]),
                    *(f"attribute {a}" for a in r["attributes"]),
                ]
            )
            or "-",
            str(s.get("pending", "-")),
            str(s.get("written_today", "-")),
            f"{t.get('window_left', '?')}/{t.get('daily_left', '?')}",
            "-" if lag is None else f"{lag:.1f}s",
            progress,
            r["pause_reason"]
            or t.get("waiting_for")
            or t.get("rejected")
            or t.get("problem")
            or s.get("last_error")
            or "",
        )
    return table


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for scripts.")
@click.option("--watch", is_flag=True, help="Refresh every second until Ctrl-C.")
def status(as_json: bool, watch: bool) -> None:
    """A table per activation: state, pending contacts, budget left, lag, backfill progress, errors."""

    config = Config.from_environ()

    async def once(redis: aioredis.Redis) -> list[dict[str, Any]]:
        return await collect(redis, config.keys)

    async def run(redis: aioredis.Redis) -> None:
        if as_json:
            click.echo(json.dumps({"activations": await once(redis), "at": time.time()}))
            return
        if not watch:
            Console().print(render(await once(redis)))
            return
        with Live(render(await once(redis)), refresh_per_second=2) as live:
            while True:
                await asyncio.sleep(1)
                live.update(render(await once(redis)))

    try:
        with_redis(config, run)
    except KeyboardInterrupt:
        pass

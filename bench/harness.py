"""What every end-to-end scenario shares: a LocalStack that is always stopped, CDP publishing,
activations, waiting, latency from stream positions, and the table + JSON output.

A scenario is an ``async def scenario(stack, args) -> dict`` run by ``run_scenario``: the stack
(private Redis, the HubSpot emulator in its own process, a local Ray on 127.0.0.1 and hubsync)
is started first and stopped on the way out whatever happens (an error, Ctrl-C or SIGTERM).
Progress goes to stderr; stdout gets the table, or with ``--json`` one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any

import ray
import redis.asyncio as aioredis

from crm.tokens import token_fingerprint
from events.activations import Activations
from events.model import ActivationCreated, ActivationPaused, CdpEvent, Plan
from events.secrets import Sealer
from events.streams import Publisher, group_backlog
from hubsync.config import secret_key
from hubsync.stack import EmulatorProcess, LocalStack

__all__ = [
    "STARTER_CEILING",
    "LocalStack",
    "Row",
    "activation_handle",
    "actor_pid",
    "add_common",
    "by_email",
    "code_state",
    "cpu_seconds",
    "create_activation",
    "emit",
    "emulator_contacts",
    "emulator_stats",
    "log",
    "percentiles",
    "pid_rss",
    "publish_paced",
    "publisher_of",
    "redis_of",
    "run_scenario",
    "status",
    "wait_routed",
    "wait_settled",
    "xadd_seconds",
]

COUNTING_EMULATOR = ("bench.counting_emulator",)
"""The emulator, instrumented to keep every write time per contact (`python -m` this)."""

STARTER_CEILING = 100 * 100 / 10.0  # contacts/s: 100 contacts per call x 100 calls per 10 s


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the stack -------------------------------------------------------------------------------


def _terminate_as_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# A coroutine, not any awaitable: run_scenario hands it to asyncio.run.
Scenario = Callable[[LocalStack, argparse.Namespace], Coroutine[Any, Any, dict[str, Any]]]


def code_state() -> dict[str, Any]:
    """The commit and the locally modified files this run measured (the tree may move under us)."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*args: str) -> str:
        out = subprocess.run(
            ["git", "-C", repo, *args], capture_output=True, text=True, check=False
        )
        return out.stdout.rstrip("\n")

    modified = [
        line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()
    ]
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "modified": [m for m in modified if not m.startswith("bench/")],
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def run_scenario(
    scenario: Scenario,
    args: argparse.Namespace,
    *,
    emulator_args: Sequence[str] = (),
    linger_ms: int = 250,
    partitions: int = 4,
    counting_emulator: bool = False,
    before_service: Callable[[LocalStack], None] | None = None,
) -> dict[str, Any]:
    """Start a stack, run the scenario, stop everything (also on error, Ctrl-C or SIGTERM)."""
    signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    code = code_state()
    # Without an address ray.init joins the cluster of the last `ray start` on this machine
    # (/tmp/ray/ray_current_cluster) or RAY_ADDRESS; a benchmark wants its own private Ray.
    os.environ["RAY_ADDRESS"] = "local"
    started = time.monotonic()
    stack = LocalStack(
        emulator_args=tuple(emulator_args),
        partitions=partitions,
        linger_ms=linger_ms,
        environ=os.environ,  # a scenario may set HUBSYNC_* settings
        emulator_command=COUNTING_EMULATOR if counting_emulator else EmulatorProcess.command,
        before_service=before_service,
    )
    try:
        try:
            log("starting Redis, the HubSpot emulator, Ray and hubsync on 127.0.0.1 ...")
            stack.start()
            log(f"stack up in {time.monotonic() - started:.1f}s")
            result = asyncio.run(scenario(stack, args))
        finally:
            log("stopping the stack ...")
            stack.stop()
            log(f"stopped ({time.monotonic() - started:.0f}s in all)")
    except KeyboardInterrupt:
        log("interrupted; everything this run started is stopped")
        raise SystemExit(130) from None
    result["code"] = code
    return result


# --- output ----------------------------------------------------------------------------------


Row = tuple[str, Any, str]  # figure, value, note


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object instead of the table"
    )


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "-" if value is None else str(value)


def emit(title: str, rows: Iterable[Row], result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result), flush=True)
        return
    rows = list(rows)
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(_fmt(r[1])) for r in rows)
    print(title)
    print("-" * len(title))
    for figure, value, note in rows:
        print(f"{figure:<{w0}}  {_fmt(value):>{w1}}  {note}".rstrip())
    sys.stdout.flush()


# --- the CDP side ----------------------------------------------------------------------------


def redis_of(stack: LocalStack) -> aioredis.Redis:
    assert stack.config is not None
    return aioredis.Redis.from_url(stack.config.resolve_redis_url())


def publisher_of(stack: LocalStack, redis: aioredis.Redis) -> Publisher:
    assert stack.config is not None
    return Publisher(redis, stack.config.keys, stack.config.partitions)


def xadd_seconds(stream_id: str) -> float:
    """When Redis appended an entry (its id's milliseconds), epoch seconds."""
    return int(stream_id.partition("-")[0]) / 1000.0


async def publish_paced(
    publisher: Publisher, events: Sequence[CdpEvent], rate: float, *, tick: float = 0.05
) -> list[str]:
    """Publish at `rate` events a second, in small pipelined chunks every `tick` seconds."""
    ids: list[str] = []
    per_tick = max(1, round(rate * tick))
    start = time.monotonic()
    for i in range(0, len(events), per_tick):
        due = start + (i / rate)
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        ids += await publisher.publish(events[i : i + per_tick])
    return ids


# --- activations -----------------------------------------------------------------------------


async def create_activation(
    stack: LocalStack,
    redis: aioredis.Redis,
    activation_id: str,
    token: str,
    *,
    audiences: Sequence[str] = (),
    attributes: Sequence[str] = (),
    plan: Plan = "starter",
    paused: bool = False,
) -> float:
    """Create an activation against the emulator; returns the wall-clock time it was created."""
    assert stack.config is not None
    created = time.time()
    await Activations().execute(
        redis,
        stack.config.keys,
        ActivationCreated(
            activation_id=activation_id,
            name=f"bench {activation_id}",
            token_sealed=Sealer(secret_key(stack.config)).seal(
                token, activation_id=activation_id, base_url=stack.emulator.url
            ),
            token_fingerprint=token_fingerprint(token),
            base_url=stack.emulator.url,
            plan=plan,
            audiences=tuple(audiences),
            attributes=tuple(attributes),
        ),
    )
    if paused:
        await Activations().execute(
            redis, stack.config.keys, ActivationPaused(activation_id=activation_id, reason="bench")
        )
    return created


async def activation_handle(stack: LocalStack, activation_id: str, timeout: float = 60.0) -> Any:
    assert stack.config is not None
    deadline = time.monotonic() + timeout
    while True:
        try:
            return ray.get_actor(f"activation:{activation_id}", namespace=stack.config.namespace)
        except ValueError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"activation:{activation_id} did not start") from None
            await asyncio.sleep(0.1)


async def status(handle: Any) -> dict[str, Any]:
    return await handle.status.remote()


async def actor_pid(handle: Any) -> int:
    return await handle.__ray_call__.remote(lambda self: os.getpid())


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process on this machine has used so far (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pid_rss(pid: int) -> int:
    """Resident set size of a process on this machine, bytes (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def wait_routed(stack: LocalStack, redis: aioredis.Redis, timeout: float = 300.0) -> None:
    """Until every change stream is read and acknowledged by the Routers."""
    assert stack.config is not None
    keys = stack.config.keys
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        groups = [await redis.xinfo_groups(keys.changes(p)) for p in range(stack.config.partitions)]
        if all(groups) and not [
            p
            for p in range(stack.config.partitions)
            if await group_backlog(redis, keys.changes(p), "routers")
        ]:
            return
        await asyncio.sleep(0.2)
    raise TimeoutError("the Routers did not catch up with the change streams")


async def wait_settled(
    handle: Any, *, changes_in: int, timeout: float, quiet: float = 1.0
) -> dict[str, Any]:
    """Until the activation received `changes_in` changes and nothing is pending for `quiet` s."""
    deadline = time.monotonic() + timeout
    calm_since: float | None = None
    while True:
        s = await status(handle)
        idle = (
            s["changes_in"] >= changes_in
            and s["pending"] == 0
            and all(not b.get("loading") for b in s["backfills"].values())
        )
        now = time.monotonic()
        if idle:
            calm_since = calm_since or now
            if now - calm_since >= quiet:
                return s
        else:
            calm_since = None
        if now > deadline:
            raise TimeoutError(f"not settled after {timeout:.0f}s: {s}")
        await asyncio.sleep(0.2)


async def emulator_stats(stack: LocalStack) -> dict[str, Any]:
    return await asyncio.to_thread(stack.emulator.admin.stats)


async def emulator_contacts(stack: LocalStack) -> list[dict[str, Any]]:
    return await asyncio.to_thread(stack.emulator.admin.contacts, with_timestamps=True)


# --- figures ---------------------------------------------------------------------------------


def percentiles(
    values: Sequence[float], ps: Sequence[float] = (50, 95, 99)
) -> dict[str, float | None]:
    """Nearest-rank percentiles, rounded to the millisecond."""
    if not values:
        return {f"p{p:g}": None for p in ps}
    ordered = sorted(values)
    out: dict[str, float | None] = {}
    for p in ps:
        rank = max(1, math.ceil(p / 100 * len(ordered)))
        out[f"p{p:g}"] = round(ordered[rank - 1], 3)
    out["max"] = round(ordered[-1], 3)
    return out


def by_email(contacts: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["properties"]["email"]: c for c in contacts if c["properties"].get("email")}

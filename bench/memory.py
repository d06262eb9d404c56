"""Memory: the resident set (RSS) of an idle ActivationActor, and bytes per pending contact.

    python -m bench memory [--routed 1000000] [--skip-coalescer] [--json]

Two measurements of bytes per pending contact, both reported:

- ``coalescer``: bench.coalescer_memory in a fresh process (1,000,000 contacts, one pending
  audience value each; tracemalloc and RSS growth): the Coalescer's own data structures.
- ``actor``: the whole ActivationActor process. An activation is created paused (HubSpot is never
  called for contacts), its RSS read from /proc once idle; then `--routed` distinct contacts
  enter its audience through the streams and the Routers, and once they are all in (plus 7 s,
  usually past a snapshot, and a gc.collect()) the RSS growth / contacts is the figure. It counts
  everything the actor holds per contact, and what the allocator keeps after transient peaks
  (decoding, snapshots). It is read again after the checkpoint below.

Stalls: a tracer task on the actor's own event loop sleeps 10 ms in a loop and records how late
it wakes; then the bench runs one checkpoint (`ActivationCore.checkpoint`, as the actor does every
few seconds while anything changes) at the full pending count, and reports the checkpoint's
duration and the max and p99 lateness during it: how long the activation's realtime changes
could have waited behind the snapshot.

The actor's pid, the tracer and the checkpoint go through Ray's ``__ray_call__`` (no change to
the actor needed). Goals: <= 120 bytes per pending contact; no stall over 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import secrets
import subprocess
import sys
import time
from typing import Any

from bench import harness as h
from events.model import AudienceDefined, AudienceEntered
from events.snapshots import SnapshotStore
from events.streams import Publisher

GOAL_BYTES = 120
GOAL_STALL_S = 0.050
TRACER_PERIOD = 0.010


def _time_snapshot(actor: Any) -> float:
    started = time.perf_counter()
    actor.core.coalescer.snapshot()
    return time.perf_counter() - started


def _actor_loop(actor: Any) -> asyncio.AbstractEventLoop:
    return actor.core._tasks[0].get_loop()


def _start_stall_tracer(actor: Any) -> None:
    """Runs in the actor: a task on its event loop that records how late each 10 ms sleep ends."""
    loop = _actor_loop(actor)
    actor._bench_stalls = []

    async def trace() -> None:
        while True:
            asleep = loop.time()
            await asyncio.sleep(TRACER_PERIOD)
            actor._bench_stalls.append(loop.time() - asleep - TRACER_PERIOD)

    actor._bench_tracer = asyncio.run_coroutine_threadsafe(trace(), loop)


def _start_checkpoint(actor: Any) -> None:
    """Runs in the actor: one checkpoint on its loop, the tracer's record restarted for it."""

    async def timed() -> float:
        actor._bench_stalls.clear()
        started = time.perf_counter()
        await actor.core.checkpoint()
        await asyncio.sleep(2 * TRACER_PERIOD)  # the sample spanning the end is in
        return time.perf_counter() - started

    actor._bench_checkpoint = asyncio.run_coroutine_threadsafe(timed(), _actor_loop(actor))


def _checkpoint_result(actor: Any) -> tuple[float, list[float]] | None:
    done = actor._bench_checkpoint
    if not done.done():
        return None
    return done.result(), list(actor._bench_stalls)


def _idle_stalls(actor: Any) -> list[float]:
    return list(actor._bench_stalls)


def _checkpoint_parts(actor: Any) -> dict[str, float]:
    """Runs in the actor, blocking its loop on purpose: the synchronous parts of a checkpoint,
    timed one by one (the cut, the longest piece, giving freed heap back), to tell them from
    the machine's own scheduling delays in the tracer's figures."""
    from actors.activation import _return_freed_memory

    started = time.perf_counter()
    pieces = actor.core.coalescer.snapshot_pieces()
    cut = time.perf_counter() - started
    longest = 0.0
    while True:
        started = time.perf_counter()
        if next(pieces, None) is None:
            break
        longest = max(longest, time.perf_counter() - started)
    started = time.perf_counter()
    _return_freed_memory()
    trim = time.perf_counter() - started
    return {
        "cut_ms": round(1000 * cut, 1),
        "longest_piece_ms": round(1000 * longest, 1),
        "malloc_trim_ms": round(1000 * trim, 1),
    }


async def _stalls_during_checkpoint(handle: Any) -> dict[str, Any]:
    await handle.__ray_call__.remote(_start_stall_tracer)
    await asyncio.sleep(3.0)
    idle = sorted(await handle.__ray_call__.remote(_idle_stalls))
    await handle.__ray_call__.remote(_start_checkpoint)
    while (got := await handle.__ray_call__.remote(_checkpoint_result)) is None:
        await asyncio.sleep(0.1)
    seconds, stalls = got
    stalls.sort()
    parts = await handle.__ray_call__.remote(_checkpoint_parts)
    return {
        **parts,
        "idle_stall_max_ms": round(1000 * idle[-1], 1) if idle else None,
        "idle_stall_p99_ms": round(1000 * idle[int(0.99 * (len(idle) - 1))], 1) if idle else None,
        "checkpoint_s": round(seconds, 3),
        "stall_samples": len(stalls),
        "stall_max_ms": round(1000 * stalls[-1], 1) if stalls else None,
        "stall_p99_ms": round(1000 * stalls[int(0.99 * (len(stalls) - 1))], 1) if stalls else None,
    }


async def _snapshot_bytes(redis: Any, keys: Any, name: str) -> int:
    snap = await SnapshotStore(redis, keys).load(name)
    return 0 if snap is None else sum(map(len, await SnapshotStore(redis, keys).pieces(snap)))


async def _settle_rss(handle: Any, pid: int, seconds: float) -> int:
    await asyncio.sleep(seconds)
    await handle.__ray_call__.remote(lambda self: gc.collect())
    await asyncio.sleep(0.5)
    return h.pid_rss(pid)


async def scenario(stack: h.LocalStack, args: argparse.Namespace) -> dict[str, Any]:
    assert stack.config is not None
    redis = h.redis_of(stack)
    try:
        publisher = h.publisher_of(stack, redis)
        await publisher.publish([AudienceDefined(audience_id="mem", name="Bench Memory")])
        await h.create_activation(
            stack,
            redis,
            "memory",
            f"pat-bench-{secrets.token_hex(6)}",
            audiences=["mem"],
            paused=True,
        )
        handle = await h.activation_handle(stack, "memory")
        await h.wait_settled(handle, changes_in=0, timeout=60, quiet=1.0)
        pid = await h.actor_pid(handle)
        idle = await _settle_rss(handle, pid, 5.0)
        h.log(
            f"idle ActivationActor (pid {pid}): RSS {idle / 2**20:.1f} MiB; routing {args.routed:,} contacts to it"
        )
        result: dict[str, Any] = {
            "scenario": "memory",
            "idle_actor_rss_bytes": idle,
            "idle_actor_rss_mib": round(idle / 2**20, 1),
        }
        if args.routed:
            started = time.monotonic()
            chunk = 100_000
            for start in range(0, args.routed, chunk):
                await Publisher(
                    redis, stack.config.keys, stack.config.partitions, batch=2000
                ).publish(
                    [
                        AudienceEntered(audience_id="mem", email=f"m{i:08d}@example.com")
                        for i in range(start, min(args.routed, start + chunk))
                    ]
                )
            peak = idle
            while True:
                s = await h.status(handle)
                peak = max(peak, h.pid_rss(pid))
                if s["changes_in"] >= args.routed:
                    break
                if time.monotonic() - started > 1200:
                    raise TimeoutError(f"only {s['changes_in']:,} routed")
                await asyncio.sleep(0.5)
            routed_in = time.monotonic() - started
            # Usually past a snapshot, so its transient buffers are part of the picture.
            full = await _settle_rss(handle, pid, 7.0)
            s = await h.status(handle)
            h.log("one checkpoint at the full pending count, a stall tracer on the actor's loop")
            stalls = await _stalls_during_checkpoint(handle)
            after_checkpoint = await _settle_rss(handle, pid, 2.0)
            snap = await _snapshot_bytes(redis, stack.config.keys, "activation:memory")
            # ActivationCore.checkpoint leaves the Coalescer's snapshot bytes in state.coalescer.
            retained = await handle.__ray_call__.remote(lambda self: len(self.core.state.coalescer))
            encode_s = await handle.__ray_call__.remote(_time_snapshot)
            result.update(
                {
                    "routed": args.routed,
                    "pending_contacts": s["pending"],
                    "routed_in_s": round(routed_in, 1),
                    "actor_rss_after_bytes": full,
                    "actor_rss_peak_bytes": peak,
                    "actor_bytes_per_pending_contact": round(
                        (full - idle) / max(1, s["pending"]), 1
                    ),
                    "actor_peak_bytes_per_pending_contact": round(
                        (peak - idle) / max(1, s["pending"]), 1
                    ),
                    "actor_rss_after_checkpoint_bytes": after_checkpoint,
                    "actor_bytes_per_pending_contact_after_checkpoint": round(
                        (after_checkpoint - idle) / max(1, s["pending"]), 1
                    ),
                    **stalls,
                    "snapshot_bytes": snap,
                    "snapshot_bytes_retained_in_actor": retained,
                    "snapshot_encode_s": round(encode_s, 3),
                }
            )
    finally:
        await redis.aclose()
    return result


def coalescer_figures(contacts: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.coalescer_memory", "--contacts", str(contacts), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def rows(r: dict[str, Any]) -> list[h.Row]:
    out: list[h.Row] = [
        ("idle ActivationActor RSS", f"{r['idle_actor_rss_mib']} MiB", "paused, nothing pending")
    ]
    if "routed" in r:
        out += [
            (
                "contacts routed to it (pending)",
                f"{r['routed']:,} ({r['pending_contacts']:,})",
                f"in {r['routed_in_s']} s",
            ),
            (
                "actor RSS after",
                f"{r['actor_rss_after_bytes'] / 2**20:.1f} MiB",
                f"peak {r['actor_rss_peak_bytes'] / 2**20:.1f} MiB",
            ),
            (
                "actor bytes per pending contact",
                r["actor_bytes_per_pending_contact"],
                f"goal <= {GOAL_BYTES}; at the peak {r['actor_peak_bytes_per_pending_contact']}",
            ),
            (
                "actor bytes per pending contact after a checkpoint",
                r["actor_bytes_per_pending_contact_after_checkpoint"],
                "the checkpoint below, then gc.collect()",
            ),
            (
                "checkpoint at the full pending count",
                f"{r['checkpoint_s']} s",
                "encoded and written piece by piece, the loop running between pieces",
            ),
            (
                "event-loop stall during it: max",
                f"{r['stall_max_ms']} ms",
                f"goal <= {GOAL_STALL_S * 1000:.0f} ms; p99 {r['stall_p99_ms']} ms, "
                f"{r['stall_samples']} samples of a {TRACER_PERIOD * 1000:.0f} ms sleep",
            ),
            (
                "the same tracer for 3 s before, no checkpoint: max",
                f"{r['idle_stall_max_ms']} ms",
                f"p99 {r['idle_stall_p99_ms']} ms: what the machine's load alone adds",
            ),
            (
                "synchronous parts, timed apart",
                f"cut {r['cut_ms']} ms",
                f"longest piece {r['longest_piece_ms']} ms, malloc_trim {r['malloc_trim_ms']} ms",
            ),
            (
                "snapshot size in Redis",
                f"{r['snapshot_bytes'] / 2**20:.1f} MiB",
                "rewritten while anything changes (every 5 s or more)",
            ),
            (
                "snapshot bytes kept in the actor",
                f"{r['snapshot_bytes_retained_in_actor'] / 2**20:.1f} MiB",
                "ActivationCore.state.coalescer after a checkpoint",
            ),
            (
                "Coalescer.snapshot() in the actor",
                f"{r['snapshot_encode_s']} s",
                "all pieces at once (the checkpoint spreads them out)",
            ),
        ]
    if "coalescer" in r:
        c = r["coalescer"]
        out += [
            (
                "Coalescer alone, bytes per contact (tracemalloc)",
                c["bytes_per_contact_tracemalloc"],
                f"{c['contacts']:,} contacts",
            ),
            (
                "Coalescer alone, bytes per contact (RSS)",
                c["bytes_per_contact_rss"],
                f"goal <= {GOAL_BYTES}",
            ),
        ]
    out.append(("goal met", r["goal_met"], ""))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench memory", description=__doc__.split("\n\n")[0].replace("\n", " ")
    )
    parser.add_argument(
        "--routed",
        type=int,
        default=1_000_000,
        help="contacts routed to the paused actor (0: idle only)",
    )
    parser.add_argument("--coalescer-contacts", type=int, default=1_000_000)
    parser.add_argument("--skip-coalescer", action="store_true")
    h.add_common(parser)
    args = parser.parse_args(argv)
    result = h.run_scenario(scenario, args, emulator_args=("--plan", "starter"))
    goals = []
    if "actor_bytes_per_pending_contact" in result:
        goals.append(result["actor_bytes_per_pending_contact"] <= GOAL_BYTES)
        goals.append((result["stall_max_ms"] or 0) <= GOAL_STALL_S * 1000)
    if not args.skip_coalescer:
        h.log(f"bench.coalescer_memory with {args.coalescer_contacts:,} contacts ...")
        result["coalescer"] = coalescer_figures(args.coalescer_contacts)
        goals.append(bool(result["coalescer"]["within_goal"]))
    result["goal_met"] = bool(goals) and all(goals)
    h.emit(
        "memory: ActivationActor RSS and bytes per pending contact", rows(result), result, args.json
    )
    return 0 if result["goal_met"] else 1


if __name__ == "__main__":
    sys.exit(main())

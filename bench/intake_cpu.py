"""Intake CPU per change, in one process: what `bench ingest` measures across processes, without
Ray, so that a profile of the Router's and the ActivationActor's own code is quick to take.

A private redis-server (no AOF) holds N changes (the `ingest` workload) in P partitions; one
RouterCore per partition routes them all, then one ActivationCore (paused, damping on, as the
service runs it) takes its whole inbox. Each phase is timed in CPU seconds of this process, and
the garbage collector's passes are counted per generation, with their time. ``--freeze`` freezes
the start-up heap first, as the actors do (`gc.freeze`); ``--profile router|activation`` prints
cProfile's top functions of that phase (which inflates Python calls several times over: read
the shares, not the times).

    python -m bench intake_cpu [--changes 200000] [--contacts 50000] [--partitions 4]
                               [--freeze] [--profile router|activation] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import sys
import tempfile
import time
from typing import Any

from cryptography.fernet import Fernet

from actors.activation import ActivationCore
from actors.router import RouterCore
from bench import harness as h
from bench.ingest import workload
from crm.tokens import token_fingerprint
from events.connection import connect
from events.model import (
    ActivationCreated,
    ActivationPaused,
    AttributeDefined,
    AudienceDefined,
    encode,
)
from events.redis_backend import RedisStorage
from events.redis_server import RedisServer
from events.secrets import Sealer
from events.streams import Keys
from scheduler import DampingPolicy

BASE_URL = "http://127.0.0.1:9"  # never called: the activation is paused


class GcTimer:
    """Collections per generation and the seconds they took (`gc.callbacks`)."""

    def __init__(self) -> None:
        self.passes = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            generation = info["generation"]
            self.passes[generation] += 1
            self.seconds[generation] += time.perf_counter() - self._started

    def take(self) -> dict[str, Any]:
        taken = {"passes": self.passes, "seconds": [round(s, 3) for s in self.seconds]}
        self.passes, self.seconds = [0, 0, 0], [0.0, 0.0, 0.0]
        return taken


async def _prepare(storage: RedisStorage, args: argparse.Namespace) -> ActivationCore:
    await storage.config.partitions(args.partitions)
    for event in (
        AudienceDefined(audience_id="in", name="Bench Ingest"),
        AttributeDefined(attribute_id="v", name="Bench Value", value_type="number"),
    ):
        await storage.catalog.append(encode(event))
    token = f"pat-bench-{time.time_ns()}"
    sealed = Sealer(Fernet.generate_key().decode()).seal(
        token, activation_id="ingest", base_url=BASE_URL
    )
    for control in (
        ActivationCreated(
            activation_id="ingest",
            name="bench ingest",
            token_sealed=sealed,
            token_fingerprint=token_fingerprint(token),
            base_url=BASE_URL,
            audiences=("in",),
            attributes=("v",),
        ),
        ActivationPaused(activation_id="ingest", reason="bench"),
    ):
        await storage.activations.append(encode(control))

    def no_governor(fingerprint: str) -> Any:
        raise AssertionError("a paused activation calls no governor")

    activation = ActivationCore(storage, "ingest", no_governor, damping=DampingPolicy())
    await activation.recover()  # the control and catalog folded, nothing to backfill yet
    await storage.changes.publish(workload(args.changes, args.contacts), args.partitions)
    return activation


def _phase(name: str, args: argparse.Namespace) -> cProfile.Profile | None:
    return cProfile.Profile() if args.profile == name else None


async def measure(url: str, args: argparse.Namespace) -> dict[str, Any]:
    storage = RedisStorage(connect(url), Keys("bench"))
    try:
        activation = await _prepare(storage, args)
        routers = [
            RouterCore(storage, p, partitions=args.partitions) for p in range(args.partitions)
        ]
        for router in routers:
            await router.start()
        gc.collect()
        if args.freeze:
            gc.freeze()
        timer = GcTimer()
        gc.callbacks.append(timer)
        try:
            profile = _phase("router", args)
            started = time.process_time()
            if profile:
                profile.enable()
            routed = 0
            for router in routers:
                while n := await router.step(block=False):
                    routed += n
            if profile:
                profile.disable()
                pstats.Stats(profile, stream=sys.stderr).sort_stats("tottime").print_stats(25)
            router_cpu = time.process_time() - started
            router_gc = timer.take()

            profile = _phase("activation", args)
            started = time.process_time()
            if profile:
                profile.enable()
            while True:  # what the inbox loop does, until the inbox has nothing new
                before = activation.state.inbox_id
                await activation._read_inbox()
                if activation.state.inbox_id == before:
                    break
            if profile:
                profile.disable()
                pstats.Stats(profile, stream=sys.stderr).sort_stats("tottime").print_stats(25)
            activation_cpu = time.process_time() - started
            activation_gc = timer.take()
        finally:
            gc.callbacks.remove(timer)
            gc.unfreeze()
        status = activation.status()
        return {
            "scenario": "intake_cpu",
            "changes": args.changes,
            "contacts": args.contacts,
            "partitions": args.partitions,
            "freeze": args.freeze,
            "routed": routed,
            "changes_in": status.changes_in,
            "router_cpu_us_per_change": round(router_cpu / max(routed, 1) * 1e6, 2),
            "activation_cpu_us_per_change": round(
                activation_cpu / max(status.changes_in, 1) * 1e6, 2
            ),
            "router_gc": router_gc,
            "activation_gc": activation_gc,
        }
    finally:
        await storage.redis.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench intake_cpu", description=__doc__.split("\n\n")[0].replace("\n", " ")
    )
    parser.add_argument("--changes", type=int, default=200_000)
    parser.add_argument("--contacts", type=int, default=50_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--freeze", action="store_true", help="gc.freeze() first, as the actors do")
    parser.add_argument("--profile", choices=("router", "activation"), default=None)
    h.add_common(parser)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as home:
        server = RedisServer(home, appendonly=False).start()
        try:
            result = asyncio.run(measure(server.url, args))
        finally:
            server.stop()
    result["code"] = h.code_state()
    rows: list[h.Row] = [
        (
            "changes (contacts)",
            f"{args.changes:,} ({args.contacts:,})",
            f"{args.partitions} Routers",
        ),
        ("Router CPU us per change", result["router_cpu_us_per_change"], "RouterCore.step, all"),
        (
            "ActivationActor CPU us per change",
            result["activation_cpu_us_per_change"],
            "its inbox loop, paused",
        ),
        (
            "GC passes gen 0/1/2 (s) while routing",
            "/".join(map(str, result["router_gc"]["passes"])),
            f"{result['router_gc']['seconds']}",
        ),
        (
            "GC passes gen 0/1/2 (s) in the activation",
            "/".join(map(str, result["activation_gc"]["passes"])),
            f"{result['activation_gc']['seconds']}",
        ),
    ]
    h.emit("intake CPU per change, in one process", rows, result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

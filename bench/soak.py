"""Soak: a steady mixed load for minutes (issue 12): does hubsync stay bounded, or does something
in Redis or in a process keep growing?

    python -m bench soak [--minutes 10] [--rate 5000] [--contacts 50000] [--activations 3]
                         [--every 5] [--plan professional] [--dead-letters-max 2000] [--json]

A publisher in a process of its own (niced, so it yields the cores to the pipeline) appends
``--rate`` changes a second for ``--minutes``: audience flips (enter/leave) and number-attribute
values over a bounded population of ``--contacts`` contacts (so the projections plateau), one
audience and one attribute per activation, and 1% bad entries (bad JSON, an unknown audience, a
value of the wrong type, a bad email) so the dead-letter stream is exercised. It paces itself on
a schedule and never bursts to catch up: when the machine cannot keep up, the shortfall is
dropped and the rate it did sustain is reported. ``--activations`` activations (one token and so
one RateGovernor each) write to the HubSpot emulator on the ``--plan`` limits.

Every ``--every`` seconds the bench samples: Redis's ``used_memory``; the RSS of every hubsync
process (each Ray actor of the run's namespace, found through its ``where()``; the redis-server;
the emulator); XLEN of each change stream and of each activation's inbox; the dead-letter
stream's XLEN and ``MEMORY USAGE``; the routers' backlog (consumer-group lag + pending); and each
activation's pending contacts.

The verdict per series compares the mean of the last third of the samples with the mean of the
middle third (the first third is warm-up: projections filling, the dead-letter cap being
reached): a series **keeps growing** when the last third's mean is more than 5% above the middle
third's, AND above it by more than a floor, so that a tiny, noisy series is not judged on noise
(100 for counts: entries, contacts; 256 KiB for bytes), AND by more than twice the standard error
of that difference, so that a sawtooth (an inbox trimmed at every snapshot) is not judged on where
a few samples fell. Sampling intervals are jittered by 25% so that they do not lock onto such a
period. The run exits 1 when any series keeps growing, or when it is too short to judge (fewer
than 2 samples in a third). ``HUBSYNC_DEAD_LETTERS_MAX`` is set to ``--dead-letters-max`` for the stack, so the
dead-letter stream reaches its cap within the warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import secrets
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, get_args

import msgspec
import ray

from bench import harness as h
from events.model import (
    AttributeChanged,
    AttributeDefined,
    AudienceDefined,
    AudienceEntered,
    AudienceLeft,
    Plan,
    encode,
)
from events.redis_server import stop_process
from events.streams import EVENT_FIELD, Keys, group_backlog, partition_of

GROWTH = 0.05  # the last third's mean may exceed the middle third's by this share
FLOOR_COUNT = 100.0  # entries or contacts: below this difference, a series is noise
FLOOR_BYTES = 256 * 1024.0  # bytes: ditto
MIN_PER_THIRD = 2  # fewer samples than this in a third: the series is not judged
BAD_EVERY = 100  # one entry in BAD_EVERY is bad (1%)
TICK = 0.05  # the publisher sends a pipelined chunk every TICK seconds
MAX_BEHIND = 1.0  # seconds: a publisher further behind its schedule drops the shortfall
SUSTAINED = 0.95  # a publisher below this share of the asked rate did not sustain it
JITTER = 0.25  # sampling intervals vary by this share, so a periodic series (an inbox trimmed
# at every snapshot, ~5 s) is not sampled at the same phase every time

__all__ = [
    "Verdict",
    "floor_of",
    "main",
    "soak_entry",
    "verdict",
    "verdicts",
]


# --- the verdict (pure) ----------------------------------------------------------------------


class Verdict(msgspec.Struct, frozen=True):
    """One series judged: does it keep growing between the middle and the last third?"""

    series: str
    samples: int
    middle_mean: float | None
    last_mean: float | None
    floor: float
    noise: float | None  # twice the standard error of (last mean - middle mean)
    judged: bool  # enough samples in each third to say anything
    keeps_growing: bool

    @property
    def growth(self) -> float | None:
        """The last third's mean over the middle third's, minus one (None when not computable)."""
        if self.middle_mean is None or self.last_mean is None or self.middle_mean == 0:
            return None
        return self.last_mean / self.middle_mean - 1


def floor_of(series: str) -> float:
    """The absolute floor of a series, by its unit: names ending in ``_bytes`` are bytes."""
    return FLOOR_BYTES if series.endswith("_bytes") else FLOOR_COUNT


def verdict(series: str, values: Sequence[float | None], floor: float | None = None) -> Verdict:
    """Judge one series sampled at regular times (None: no sample then, e.g. a process restarting).

    The thirds are taken over the sampling times, so a gap does not shift them. A series keeps
    growing when mean(last third) > (1 + GROWTH) x mean(middle third), the difference is above the
    floor (a small noisy series, a stream of 0-50 entries, is not judged on noise) and it is above
    twice its standard error (a sawtooth, an inbox trimmed at every checkpoint, is not judged on
    where a few samples happened to fall).
    """
    floor = floor_of(series) if floor is None else floor
    third = len(values) // 3
    middle = [v for v in values[third : 2 * third] if v is not None]
    last = [v for v in values[len(values) - third :] if v is not None] if third else []
    count = sum(v is not None for v in values)
    if len(middle) < MIN_PER_THIRD or len(last) < MIN_PER_THIRD:
        return Verdict(series, count, None, None, floor, None, judged=False, keeps_growing=False)
    m, lst = statistics.fmean(middle), statistics.fmean(last)
    noise = 2 * math.sqrt(
        statistics.variance(middle) / len(middle) + statistics.variance(last) / len(last)
    )
    growing = lst > (1 + GROWTH) * m and lst - m > floor and lst - m > noise
    return Verdict(series, count, m, lst, floor, noise, judged=True, keeps_growing=growing)


def verdicts(samples: Sequence[Mapping[str, Any]]) -> list[Verdict]:
    """A verdict for every series that appears in any sample's ``series``, in name order."""
    names = sorted({name for s in samples for name in s["series"]})
    return [verdict(name, [s["series"].get(name) for s in samples]) for name in names]


# --- the publisher (its own process) ---------------------------------------------------------


def audience_id(k: int) -> str:
    return f"soak{k}"


def attribute_id(k: int) -> str:
    return f"soakv{k}"


def soak_entry(
    i: int, rng: random.Random, *, contacts: int, activations: int, partitions: int, keys: Keys
) -> tuple[str, bytes]:
    """The ``i``-th entry of the soak as (stream, raw event): audience flips and attribute values
    over ``contacts`` contacts, and every BAD_EVERY-th entry bad in one of four ways, in turn."""
    n = rng.randrange(contacts)
    k = rng.randrange(activations)
    email = f"sk{n:07d}@example.com"
    stream = keys.changes(partition_of(email, partitions))
    if i % BAD_EVERY == 0:
        match (i // BAD_EVERY) % 4:
            case 0:  # malformed JSON: cut short
                cut = f'{{"type":"audience_entered","audience_id":"{audience_id(k)}'
                return stream, cut.encode()
            case 1:  # an audience the CDP never defined
                return stream, encode(AudienceEntered(audience_id="soak_unknown", email=email))
            case 2:  # a string for a number attribute
                raw = {"type": "attribute_changed", "attribute_id": attribute_id(k)}
                return stream, json.dumps({**raw, "email": email, "value": "lots"}).encode()
            case _:  # not an email
                raw = {"type": "audience_left", "audience_id": audience_id(k)}
                return stream, json.dumps({**raw, "email": f"sk{n}.example.com"}).encode()
    roll = rng.random()
    if roll < 0.35:
        return stream, encode(AudienceEntered(audience_id=audience_id(k), email=email))
    if roll < 0.7:
        return stream, encode(AudienceLeft(audience_id=audience_id(k), email=email))
    value = rng.randrange(100_000)
    return stream, encode(AttributeChanged(attribute_id=attribute_id(k), email=email, value=value))


def publish(args: argparse.Namespace) -> int:
    """The publisher process: paced XADDs, a JSON progress line on stdout every second.

    It never bursts to catch up: more than MAX_BEHIND seconds behind its schedule, it drops the
    shortfall (counted), so a machine that cannot sustain the rate gets the rate it can, and the
    pipeline is not starved by a publisher running flat out."""
    import redis

    os.nice(5)  # the pipeline first: this process only stands in for the CDP
    client = redis.Redis.from_url(args.publisher_for)
    keys = Keys(args.namespace)
    rng = random.Random(args.seed)
    per_tick = max(1, round(args.rate * TICK))
    seconds = args.minutes * 60
    published = dropped = 0
    max_behind = 0.0
    start = last_report = time.monotonic()
    while (now := time.monotonic()) - start < seconds:
        due = start + (published + dropped) / args.rate
        if due > now:
            time.sleep(due - now)
        elif now - due > MAX_BEHIND:
            skip = int((now - due) * args.rate)
            dropped += skip
            max_behind = max(max_behind, now - due)
        pipe = client.pipeline(transaction=False)
        for n in range(published, published + per_tick):
            stream, raw = soak_entry(
                n,
                rng,
                contacts=args.contacts,
                activations=args.activations,
                partitions=args.partitions,
                keys=keys,
            )
            pipe.xadd(stream, {EVENT_FIELD: raw})
        pipe.execute()
        published += per_tick
        if now - last_report >= 1.0:
            last_report = now
            print(json.dumps({"published": published, "dropped": dropped}), flush=True)
    elapsed = time.monotonic() - start
    print(
        json.dumps(
            {
                "done": True,
                "published": published,
                "dropped": dropped,
                "seconds": round(elapsed, 2),
                "max_behind_s": round(max_behind, 2),
            }
        ),
        flush=True,
    )
    client.close()
    return 0


class PublisherProcess:
    """``python -m bench.soak --publisher-for URL ...`` in a child process; its progress lines
    are read by a thread, so the sampler sees the latest count without waiting on it."""

    def __init__(self, redis_url: str, args: argparse.Namespace, namespace: str) -> None:
        self.command = [
            sys.executable,
            "-m",
            "bench.soak",
            "--publisher-for",
            redis_url,
            "--namespace",
            namespace,
            "--rate",
            str(args.rate),
            "--minutes",
            str(args.minutes),
            "--contacts",
            str(args.contacts),
            "--activations",
            str(args.activations),
            "--partitions",
            str(args.partitions),
            "--seed",
            str(args.seed),
        ]
        self.process: subprocess.Popen[str] | None = None
        self.latest: dict[str, Any] = {"published": 0, "dropped": 0}
        self._reader: threading.Thread | None = None

    def start(self) -> PublisherProcess:
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            try:
                self.latest = json.loads(line)
            except ValueError:
                continue

    async def wait(self, timeout: float) -> dict[str, Any]:
        assert self.process is not None
        code = await asyncio.to_thread(self.process.wait, timeout)
        if self._reader is not None:
            await asyncio.to_thread(self._reader.join, 5.0)
        if code != 0:
            raise RuntimeError(f"the soak publisher exited with {code}")
        return self.latest

    def stop(self) -> None:
        stop_process(self.process)


# --- sampling --------------------------------------------------------------------------------


async def actor_pids(namespace: str) -> dict[str, int]:
    """The pid of every hubsync actor of this namespace, by actor name, through ``where()``."""
    names = sorted(
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == namespace
    )

    async def pid(name: str) -> int | None:
        try:
            where: dict[str, Any] = await asyncio.wait_for(
                ray.get_actor(name, namespace=namespace).where.remote(), 5.0
            )
        except Exception:  # restarting or gone: no sample this time
            return None
        return int(where["pid"])

    found = await asyncio.gather(*(pid(n) for n in names))
    return {n: p for n, p in zip(names, found, strict=True) if p is not None}


def rss_or_none(pid: int | None) -> int | None:
    if pid is None:
        return None
    try:
        return h.pid_rss(pid)
    except (OSError, RuntimeError):
        return None


async def backlog(redis: Any, stream: str) -> int:
    """Entries of one change stream not yet acknowledged by the routers (lag + pending); 0 for a
    stream that does not exist yet (nothing published to it, its Router not started)."""
    return await group_backlog(redis, stream, "routers")


async def take_sample(
    redis: Any,
    stack: h.LocalStack,
    handles: Mapping[str, Any],
    redis_pid: int,
    t: float,
    publisher: Mapping[str, Any],
) -> dict[str, Any]:
    """One sample: every series by name (None where a value could not be read this time)."""
    assert stack.config is not None and stack.emulator.process is not None
    keys = stack.config.keys
    series: dict[str, float | None] = {}
    info = await redis.info("memory")
    series["redis.used_memory_bytes"] = int(info["used_memory"])
    pids = await actor_pids(stack.config.namespace)
    pids["redis-server"] = redis_pid
    pids["emulator"] = stack.emulator.process.pid
    for name, pid in sorted(pids.items()):
        series[f"rss.{name}_bytes"] = rss_or_none(pid)
    for p in range(stack.config.partitions):
        stream = keys.changes(p)
        series[f"xlen.changes:{p}"] = await redis.xlen(stream)
        series[f"backlog.changes:{p}"] = await backlog(redis, stream)
    for activation_id, handle in handles.items():
        series[f"xlen.inbox:{activation_id}"] = await redis.xlen(keys.inbox(activation_id))
        try:
            status = await asyncio.wait_for(h.status(handle), 5.0)
            series[f"pending.{activation_id}"] = status["pending"]
        except Exception:
            series[f"pending.{activation_id}"] = None
    series["xlen.dead"] = await redis.xlen(keys.dead)
    series["memory.dead_bytes"] = await redis.memory_usage(keys.dead) or 0
    return {
        "t": round(t, 1),
        "published": int(publisher.get("published", 0)),
        "dropped": int(publisher.get("dropped", 0)),
        "series": series,
    }


# --- the scenario ----------------------------------------------------------------------------


async def scenario(stack: h.LocalStack, args: argparse.Namespace) -> dict[str, Any]:
    assert stack.config is not None
    redis = h.redis_of(stack)
    publisher_proc = PublisherProcess(stack.config.redis_url or "", args, stack.config.namespace)
    try:
        definitions: list[Any] = []
        for k in range(args.activations):
            definitions.append(AudienceDefined(audience_id=audience_id(k), name=f"Soak {k}"))
            definitions.append(
                AttributeDefined(
                    attribute_id=attribute_id(k), name=f"Soak value {k}", value_type="number"
                )
            )
        await h.publisher_of(stack, redis).publish(definitions)
        handles: dict[str, Any] = {}
        for k in range(args.activations):
            activation_id = f"soak{k}"
            await h.create_activation(
                stack,
                redis,
                activation_id,
                f"pat-bench-{secrets.token_hex(6)}",
                audiences=[audience_id(k)],
                attributes=[attribute_id(k)],
                plan=args.plan,
            )
            handles[activation_id] = await h.activation_handle(stack, activation_id)
        await asyncio.sleep(2.0)  # let the routers and the activations settle
        redis_pid = int((await redis.info("server"))["process_id"])

        h.log(
            f"soaking: {args.rate:,} changes/s for {args.minutes:g} min over {args.contacts:,} "
            f"contacts, {args.activations} activations, a sample every {args.every:g} s"
        )
        samples: list[dict[str, Any]] = []
        failed: list[str] = []
        jitter, next_at = random.Random(args.seed), 0.0
        publisher_proc.start()
        start = time.monotonic()
        seconds = args.minutes * 60
        while (t := time.monotonic() - start) < seconds:
            try:
                sample = await take_sample(
                    redis, stack, handles, redis_pid, t, publisher_proc.latest
                )
            except Exception as exc:  # one sample lost is a gap, not the end of an hour's soak
                failed.append(f"t={t:.1f}s: {type(exc).__name__}: {exc}")
                h.log(f"sample at t={t:.1f}s failed: {exc!r}")
            else:
                samples.append(sample)
                if not args.json:
                    h.log(progress_line(sample))
            next_at += args.every * jitter.uniform(1 - JITTER, 1 + JITTER)
            await asyncio.sleep(max(0.0, start + next_at - time.monotonic()))
        done = await publisher_proc.wait(timeout=max(60.0, seconds))
    finally:
        publisher_proc.stop()
        await redis.aclose()

    judged = verdicts(samples)
    rate = done["published"] / done["seconds"] if done.get("seconds") else 0.0
    sustained = rate >= SUSTAINED * args.rate
    growing = [v.series for v in judged if v.keeps_growing]
    dead_last = samples[-1]["series"]["xlen.dead"] if samples else 0
    return {
        "scenario": "soak",
        "minutes": args.minutes,
        "target_rate": args.rate,
        "contacts": args.contacts,
        "activations": args.activations,
        "plan": args.plan,
        "every_s": args.every,
        "dead_letters_max": args.dead_letters_max,
        "dead_letters_at_end": dead_last,
        "dead_letters_capped": dead_last <= dead_letters_bound(args.dead_letters_max),
        "published": done["published"],
        "dropped": done.get("dropped", 0),
        "published_rate": round(rate, 1),
        "publisher_max_behind_s": done.get("max_behind_s"),
        "rate_sustained": sustained,
        "growth_rule": {
            "growth": GROWTH,
            "floor_count": FLOOR_COUNT,
            "floor_bytes": FLOOR_BYTES,
            "min_samples_per_third": MIN_PER_THIRD,
        },
        "samples": samples,
        "failed_samples": failed,
        "verdicts": [{**msgspec.structs.asdict(v), "growth": _round(v.growth, 4)} for v in judged],
        "keeps_growing": growing,
        "all_judged": all(v.judged for v in judged),
        "goal_met": not growing and all(v.judged for v in judged),
    }


def dead_letters_bound(cap: int) -> int:
    """The most entries an approximately trimmed stream capped at ``cap`` may hold: Redis trims
    whole nodes (up to 100 entries each, stream-node-max-entries), so it may exceed the cap by one."""
    return cap + 100


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


# --- output ----------------------------------------------------------------------------------


def _sum(series: Mapping[str, float | None], prefix: str, suffix: str = "") -> float:
    return sum(v or 0 for k, v in series.items() if k.startswith(prefix) and k.endswith(suffix))


def _actors_rss(series: Mapping[str, float | None]) -> float:
    """The RSS of the Ray actors together (not the redis-server's nor the emulator's)."""
    others = ("rss.redis-server_bytes", "rss.emulator_bytes")
    return _sum(series, "rss.", "_bytes") - sum(series.get(k) or 0 for k in others)


def progress_line(sample: Mapping[str, Any]) -> str:
    s = sample["series"]
    return (
        f"t={sample['t']:>6.1f}s published {sample['published']:,} "
        f"redis {s['redis.used_memory_bytes'] / 2**20:.1f} MiB "
        f"changes {int(_sum(s, 'xlen.changes:')):,} backlog {int(_sum(s, 'backlog.')):,} "
        f"dead {int(s['xlen.dead']):,} pending {int(_sum(s, 'pending.')):,}"
    )


TIME_COLUMNS = (
    ("t s", lambda s, x: f"{x['t']:.0f}"),
    ("published", lambda s, x: f"{x['published']:,}"),
    ("redis MiB", lambda s, x: f"{s['redis.used_memory_bytes'] / 2**20:.1f}"),
    ("XLEN changes", lambda s, x: f"{int(_sum(s, 'xlen.changes:')):,}"),
    ("backlog", lambda s, x: f"{int(_sum(s, 'backlog.')):,}"),
    ("XLEN inboxes", lambda s, x: f"{int(_sum(s, 'xlen.inbox:')):,}"),
    ("XLEN dead", lambda s, x: f"{int(s['xlen.dead']):,}"),
    ("dead KiB", lambda s, x: f"{s['memory.dead_bytes'] / 1024:.0f}"),
    ("pending", lambda s, x: f"{int(_sum(s, 'pending.')):,}"),
    ("RSS actors MiB", lambda s, x: f"{_actors_rss(s) / 2**20:.0f}"),
    ("RSS redis MiB", lambda s, x: f"{(s.get('rss.redis-server_bytes') or 0) / 2**20:.1f}"),
    ("RSS emulator MiB", lambda s, x: f"{(s.get('rss.emulator_bytes') or 0) / 2**20:.1f}"),
)


def time_table(samples: Sequence[Mapping[str, Any]]) -> str:
    """The samples over time, a few summed columns (every series is in --json)."""
    head = [name for name, _ in TIME_COLUMNS]
    body = [[cell(x["series"], x) for _, cell in TIME_COLUMNS] for x in samples]
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    lines = [
        "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in [head, *body]
    ]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def _shown(series: str, value: float | None) -> str:
    if value is None:
        return "-"
    if series.endswith("_bytes"):
        return f"{value / 2**20:,.2f} MiB"
    return f"{value:,.0f}"


def rows(r: dict[str, Any]) -> list[h.Row]:
    out: list[h.Row] = [
        (
            "target / published changes/s",
            f"{r['target_rate']:,} / {r['published_rate']:,.0f}",
            f"{r['minutes']:g} min, {r['contacts']:,} contacts, {r['activations']} activation(s)"
            + ("" if r["rate_sustained"] else "; NOT sustained on this machine (see the log)"),
        ),
    ]
    for v in r["verdicts"]:
        if not v["judged"]:
            word = "not judged (too few samples)"
        else:
            word = "KEEPS GROWING" if v["keeps_growing"] else "flat"
        growth = "" if v["growth"] is None else f" ({v['growth']:+.1%})"
        out.append(
            (
                v["series"],
                f"{_shown(v['series'], v['middle_mean'])} -> {_shown(v['series'], v['last_mean'])}",
                word + growth,
            )
        )
    dead = r["samples"][-1]["series"]["xlen.dead"] if r["samples"] else 0
    if not r["dead_letters_capped"]:
        held = "NOT held (is the cap in this build?)"
    elif dead < r["dead_letters_max"]:
        held = "not reached in this run, so not tested"
    else:
        held = "reached and held"
    out.append(("dead letters at the end", dead, f"cap {r['dead_letters_max']:,}: {held}"))
    out.append(("keeps growing", len(r["keeps_growing"]), ", ".join(r["keeps_growing"]) or ""))
    return out


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the load runs")
    parser.add_argument("--rate", type=int, default=5_000, help="changes per second")
    parser.add_argument("--contacts", type=int, default=50_000, help="the population")
    parser.add_argument(
        "--activations", type=int, default=3, help="each with its own token, audience, attribute"
    )
    parser.add_argument("--partitions", type=int, default=4, help="change-stream partitions")
    parser.add_argument("--seed", type=int, default=12, help="seed of the publisher's choices")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench soak", description=__doc__.split("\n\n")[0].replace("\n", " ")
    )
    add_options(parser)
    parser.add_argument("--every", type=float, default=5.0, help="seconds between samples")
    parser.add_argument(
        "--plan",
        choices=get_args(Plan),
        default="professional",
        help="the activations' and the emulator's plan",
    )
    parser.add_argument(
        "--dead-letters-max",
        type=int,
        default=2_000,
        help="HUBSYNC_DEAD_LETTERS_MAX for the stack: the dead-letter cap, reached in the warm-up",
    )
    h.add_common(parser)
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.rate < 1 or args.contacts < 1 or args.activations < 1:
        parser.error("--minutes, --rate, --contacts and --activations must be positive")
    if args.every <= 0 or args.partitions < 1 or args.dead_letters_max < 1:
        parser.error("--every, --partitions and --dead-letters-max must be positive")
    # Ray's local workers inherit the driver's environment: the actors see the cap.
    os.environ["HUBSYNC_DEAD_LETTERS_MAX"] = str(args.dead_letters_max)
    result = h.run_scenario(
        scenario, args, partitions=args.partitions, emulator_args=("--plan", args.plan)
    )
    if not result["rate_sustained"]:
        h.log(
            f"the publisher sustained {result['published_rate']:,.0f} of the {args.rate:,} "
            "changes/s asked: this machine's cores are shared by the publisher, Redis, the "
            "pipeline and the emulator; lower --rate to soak at a rate it holds"
        )
    if any(name.startswith("backlog.") for name in result["keeps_growing"]):
        h.log(
            "the Routers' backlog keeps growing: the pipeline does not keep up with this rate on "
            "this machine, and the change streams grow with it; lower --rate to soak at a rate "
            "it holds"
        )
    if not result["dead_letters_capped"]:
        h.log(
            f"the dead-letter stream holds more than HUBSYNC_DEAD_LETTERS_MAX={args.dead_letters_max:,} "
            "entries: this build does not cap it (or does not read the variable in its actors)"
        )
    if not args.json:
        print(time_table(result["samples"]))
        print()
    h.emit(
        f"soak: {args.rate:,} changes/s for {args.minutes:g} min", rows(result), result, args.json
    )
    return 0 if result["goal_met"] else 1


def publisher_main(argv: list[str]) -> int:
    """The publisher process's entry (PublisherProcess starts it)."""
    parser = argparse.ArgumentParser(prog="python -m bench.soak --publisher-for URL")
    parser.add_argument("--publisher-for", required=True, help="the Redis URL to publish to")
    parser.add_argument("--namespace", default="hubsync")
    add_options(parser)
    return publish(parser.parse_args(argv))


if __name__ == "__main__":
    if "--publisher-for" in sys.argv[1:]:
        sys.exit(publisher_main(sys.argv[1:]))
    sys.exit(main())

"""Tenants: N activations, each with its own token (so its own RateGovernor) and its own small
audience, created at once; what it costs to run them side by side on one machine.

    python -m bench tenants [--tenants 50] [--contacts 300] [--trickle 4] [--rate 40] [--json]

Figures:
- time from the creations (all at once) until every audience is backfilled in HubSpot, and per
  tenant (creation -> its first write, creation -> its last backfill write);
- memory per process kind, RSS and USS (unique set size: the pages no other process shares, what
  one more process really costs): ActivationActors, RateGovernors, Routers, the Supervisor, and
  Ray's own processes (GCS, raylet, the rest), with the total; memory per tenant = the USS of one
  ActivationActor + one RateGovernor (goal <= 110 MiB);
- what an actor process imported (``sys.modules`` asked of one live actor of each kind): none may
  load the CLI, the web framework, the console, the emulator or terminal rendering;
- the p99 latency of a trickle to every tenant once the backfills are done and ``--settle-s``
  passed (``--trickle`` changes per tenant, each a new contact entering the tenant's audience,
  from its XADD to the emulator's write);
- what the tenants cost the shared parts as N grows: the CPU each process kind uses over an idle
  window (the Supervisor reconciles every second: it lists the named actors), the Routers' CPU
  during the trickle, and the time of one reconcile pass over all the activations
  (run from this process on the live cluster, cold: folding the control stream and getting every
  handle, then warm: what each pass of the Supervisor's loop costs).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import secrets
import sys
import time
from collections import defaultdict
from typing import Any

import psutil
import ray

from actors import shells
from actors.supervisor import SupervisorCore
from bench import harness as h
from events.model import AudienceDefined, AudienceEntered

GOAL_USS_PER_TENANT_MIB = 110.0
GOAL_P99 = 2.0
MIB = 2**20

# What no actor process may load; nor, but the RateGovernor (which opens its token), cryptography's
# OpenSSL bindings. tests/unit/test_actor_imports.py pins the same for a bare ``import
# actors.shells``. Ray's worker imports starlette and pydantic by itself
# when they are installed (to register serializers), so they are not ours to cut and not listed.
FORBIDDEN = ("click", "rich", "pygments", "uvicorn", "hubsync", "bench", "crm.emulator")


def audience(i: int) -> str:
    return f"t{i:04d}"


def member(i: int, j: int) -> str:
    return f"t{i:04d}m{j:06d}@example.com"


def newcomer(i: int, k: int) -> str:
    return f"t{i:04d}n{k:04d}@example.com"


async def scenario(stack: h.LocalStack, args: argparse.Namespace) -> dict[str, Any]:
    n, m = args.tenants, args.contacts
    assert stack.config is not None
    namespace = stack.config.namespace
    redis = h.redis_of(stack)
    try:
        publisher = h.publisher_of(stack, redis)
        await publisher.publish(
            [AudienceDefined(audience_id=audience(i), name=f"Tenant {i}") for i in range(n)]
        )
        for i in range(n):
            await publisher.publish(
                [AudienceEntered(audience_id=audience(i), email=member(i, j)) for j in range(m)]
            )
        await h.wait_routed(stack, redis)
        h.log(f"{n} audiences of {m:,} members projected; creating {n} activations at once")
        ids = [f"tenant{i:04d}" for i in range(n)]
        created = await asyncio.gather(
            *(
                h.create_activation(
                    stack,
                    redis,
                    ids[i],
                    f"pat-bench-{secrets.token_hex(8)}",
                    audiences=[audience(i)],
                )
                for i in range(n)
            )
        )
        created_at = min(created)
        handles = await asyncio.gather(*(h.activation_handle(stack, a, timeout=600) for a in ids))
        placed_in = time.time() - created_at
        h.log(f"{n} activations placed in {placed_in:.1f}s; waiting for their backfills")
        total = n * m
        deadline = time.monotonic() + max(600.0, n * 12.0)  # a loaded 2-core machine is slow
        while (await h.emulator_stats(stack))["contacts"] < total:
            if time.monotonic() > deadline:
                raise TimeoutError("the backfills did not finish")
            await asyncio.sleep(0.5)
        statuses = await _settled(handles, deadline)
        timelines = await asyncio.gather(
            *(
                x.__ray_call__.remote(lambda self: dict(getattr(self.core, "timeline", {})))
                for x in handles
            )
        )
        all_done_seen = time.time() - created_at
        props = {
            a: s["properties"][f"a:{audience(i)}"]
            for i, (a, s) in enumerate(zip(ids, statuses, strict=True))
        }
        contacts = h.by_email(await h.emulator_contacts(stack))
        per_tenant = []
        for i, a in enumerate(ids):
            times = [contacts[member(i, j)]["written_at"][props[a]] for j in range(m)]
            per_tenant.append((min(times) - created[i], max(times) - created[i]))
        correct = sum(
            1
            for i, a in enumerate(ids)
            for j in range(m)
            if contacts.get(member(i, j), {}).get("properties", {}).get(props[a]) == "true"
        )
        startup = {
            step: h.percentiles(
                [t[step] - created[i] for i, t in enumerate(timelines) if step in t], (50,)
            )
            for step in ("started", "reconcile", "schema_ready", "members_loaded")
        }
        backfilled_all = max(created[i] + last for i, (_, last) in enumerate(per_tenant))
        h.log(f"all backfilled {backfilled_all - created_at:.1f}s after the creations")

        # Let the last worker processes finish starting: the trickle measures live tenants.
        await asyncio.sleep(args.settle_s)
        pids = await _actor_pids(namespace)
        routers = {k: p for k, p in pids.items() if k.startswith("router:")}
        cpu_before = {k: h.cpu_seconds(p) for k, p in pids.items()}
        trickle_events = [
            AudienceEntered(audience_id=audience(i), email=newcomer(i, k))
            for k in range(args.trickle)
            for i in range(n)
        ]
        h.log(f"trickle: {len(trickle_events)} changes at {args.rate:g}/s across {n} tenants")
        before = await h.emulator_stats(stack)
        trickle_started = time.monotonic()
        trickle_ids = await h.publish_paced(publisher, trickle_events, args.rate)
        deadline = time.monotonic() + 120
        while (await h.emulator_stats(stack))["contacts"] < total + len(trickle_events):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.25)
        await asyncio.sleep(0.5)
        after = await h.emulator_stats(stack)
        cpu_trickle = {k: h.cpu_seconds(p) - cpu_before[k] for k, p in routers.items()}
        trickle_s = time.monotonic() - trickle_started
        contacts = h.by_email(await h.emulator_contacts(stack))
        latencies, missing = [], 0
        for event, stream_id in zip(trickle_events, trickle_ids, strict=True):
            i = int(event.audience_id[1:])
            written = contacts.get(event.email, {}).get("written_at", {}).get(props[ids[i]])
            if written is None:
                missing += 1
            else:
                latencies.append(written - h.xadd_seconds(stream_id))

        h.log(f"idle window of {args.idle_s:g}s: CPU per process kind")
        cpu0 = {k: h.cpu_seconds(p) for k, p in pids.items()}
        await asyncio.sleep(args.idle_s)
        idle_cpu = {k: h.cpu_seconds(p) - cpu0[k] for k, p in pids.items()}

        h.log("memory of every process; modules of one actor of each kind")
        memory = _memory(pids)
        modules = await _modules(namespace, pids)
        reconcile = await _reconcile_times(stack)
    finally:
        await redis.aclose()

    firsts = [f for f, _ in per_tenant]
    lasts = [last for _, last in per_tenant]
    kinds = memory["kinds"]
    per_tenant_uss = (
        kinds["activation"]["uss_mib_mean"] + kinds["governor"]["uss_mib_mean"]
        if kinds.get("activation") and kinds.get("governor")
        else None
    )
    pct = h.percentiles(latencies)
    result: dict[str, Any] = {
        "scenario": "tenants",
        "tenants": n,
        "contacts_per_tenant": m,
        "load_average_at_end": list(os.getloadavg()),
        "correct_in_hubspot": correct,
        "contacts": total,
        "seconds_until_all_placed": round(placed_in, 2),
        "seconds_until_all_backfilled": round(backfilled_all - created_at, 2),
        "seconds_until_bench_saw_all_settled": round(all_done_seen, 2),
        "first_write_s": h.percentiles(firsts, (50,)),
        "backfilled_s": h.percentiles(lasts, (50,)),
        "trickle": {
            "changes": len(trickle_events),
            "per_tenant": args.trickle,
            "rate": args.rate,
            "written": len(latencies),
            "missing": missing,
            **{f"{k}_s": v for k, v in pct.items()},
            "calls": after["requests"] - before["requests"],
            "rate_limited_429": after["rate_limited"] - before["rate_limited"],
        },
        "rate_limited_429": after["rate_limited"],
        "memory": memory,
        "uss_mib_per_tenant": round(per_tenant_uss, 1) if per_tenant_uss else None,
        "modules": modules,
        "idle_s": args.idle_s,
        "settle_s": args.settle_s,
        "idle_cpu_share": _by_kind_cpu(idle_cpu, args.idle_s),
        "idle_cpu_share_per_actor": {
            kind: round(share / sum(1 for x in pids if _kind(x) == kind), 4)
            for kind, share in _by_kind_cpu(idle_cpu, args.idle_s).items()
        },
        # the Routers' CPU (share of a core, all of them) while the trickle ran, to set against
        # their idle share: a few hundred changes are too few to tell a cost per change apart
        # from the idle loops' noise (a difference of the two once came out negative)
        "router_cpu_share_during_trickle": round(sum(cpu_trickle.values()) / trickle_s, 4),
        "startup_s": startup,
        "reconcile_s": reconcile,
    }
    result["goal_met"] = (
        per_tenant_uss is not None
        and per_tenant_uss <= GOAL_USS_PER_TENANT_MIB
        and correct == total
        and missing == 0
        and pct["p99"] is not None
        and pct["p99"] < GOAL_P99
        and not any(v["forbidden"] for v in modules.values())
    )
    return result


async def _settled(handles: list[Any], deadline: float) -> list[dict[str, Any]]:
    """Every activation's status once none has anything pending or a backfill loading."""
    while True:
        statuses = await asyncio.gather(*(h.status(x) for x in handles))
        if all(
            s["pending"] == 0
            and s["backfills"]
            and all(not b.get("loading") for b in s["backfills"].values())
            for s in statuses
        ):
            return list(statuses)
        if time.monotonic() > deadline:
            raise TimeoutError("the activations did not settle")
        await asyncio.sleep(0.5)


async def _actor_pids(namespace: str) -> dict[str, int]:
    """The pid of every hubsync actor of the namespace, by actor name (through ``where()``)."""
    names = sorted(
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == namespace
    )
    wheres: list[dict[str, Any]] = await asyncio.gather(
        *(ray.get_actor(x, namespace=namespace).where.remote() for x in names)
    )
    return {x: int(w["pid"]) for x, w in zip(names, wheres, strict=True)}


def _kind(name: str) -> str:
    return name.partition(":")[0]


def _other_kind(proc: psutil.Process) -> str:
    name = proc.name()
    cmdline = " ".join(proc.cmdline())
    if name == "gcs_server":
        return "ray gcs_server"
    if name == "raylet":
        return "ray raylet"
    if "redis-server" in name or "redis-server" in cmdline:
        return "redis-server"
    if "emulator" in cmdline:
        return "emulator"
    if name.startswith("ray::") or "default_worker" in cmdline:
        return "ray workers, idle or no actor of ours"
    for part in ("dashboard", "log_monitor", "monitor.py", "runtime_env", "agent"):
        if part in cmdline:
            return f"ray {part}"
    return f"other: {name}"


def _memory(pids: dict[str, int]) -> dict[str, Any]:
    """RSS and USS per process kind, and in total, over this bench's process tree."""
    gc.collect()
    kind_of = {p: _kind(x) for x, p in pids.items()}
    rows: dict[str, list[tuple[int, int]]] = defaultdict(list)
    me = psutil.Process()
    for proc in [me, *me.children(recursive=True)]:
        try:
            info = proc.memory_full_info()
            kind = (
                "bench driver (hubsync's Service client)"
                if proc.pid == me.pid
                else kind_of.get(proc.pid) or _other_kind(proc)
            )
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rows[kind].append((info.rss, info.uss))
    kinds = {
        kind: {
            "processes": len(v),
            "rss_mib": round(sum(r for r, _ in v) / MIB, 1),
            "uss_mib": round(sum(u for _, u in v) / MIB, 1),
            "rss_mib_mean": round(sum(r for r, _ in v) / len(v) / MIB, 1),
            "uss_mib_mean": round(sum(u for _, u in v) / len(v) / MIB, 1),
            "uss_mib_min": round(min(u for _, u in v) / MIB, 1),
            "uss_mib_max": round(max(u for _, u in v) / MIB, 1),
        }
        for kind, v in sorted(rows.items())
    }
    everything = [x for v in rows.values() for x in v]
    return {
        "kinds": kinds,
        "total_rss_mib": round(sum(r for r, _ in everything) / MIB, 1),
        "total_uss_mib": round(sum(u for _, u in everything) / MIB, 1),
        "processes": len(everything),
    }


async def _modules(namespace: str, pids: dict[str, int]) -> dict[str, Any]:
    """For one live actor of each kind: how many modules it holds, and any it must not."""
    out: dict[str, Any] = {}
    for name in sorted(pids):
        kind = _kind(name)
        if kind in out:
            continue
        handle = ray.get_actor(name, namespace=namespace)
        loaded: list[str] = await handle.__ray_call__.remote(
            lambda self: sorted(__import__("sys").modules)
        )
        forbidden = FORBIDDEN if kind == "governor" else (*FORBIDDEN, "cryptography.hazmat")
        bad = [  # the forbidden packages found, not each of their modules
            f for f in forbidden if any(x == f or x.startswith(f + ".") for x in loaded)
        ]
        out[kind] = {"modules": len(loaded), "forbidden": bad}
    return out


def _by_kind_cpu(cpu: dict[str, float], seconds: float) -> dict[str, float]:
    """Share of one core each process kind used (summed over its processes)."""
    kinds: dict[str, float] = defaultdict(float)
    for name, used in cpu.items():
        kinds[_kind(name)] += used
    return {k: round(v / seconds, 4) for k, v in sorted(kinds.items())}


async def _reconcile_times(stack: h.LocalStack) -> dict[str, float]:
    """One reconcile over all the live activations, from this process: cold (the control stream
    folded from its start, a handle fetched for every actor), then warm (as each pass of the
    Supervisor's loop runs: nothing new to fold, handles cached, the named actors listed)."""
    assert stack.config is not None and stack.service is not None
    settings = stack.service.settings
    assert settings is not None
    core = SupervisorCore(
        shells._storage(settings), shells._RayPlacement(settings), partitions=settings.partitions
    )
    out = {}
    for label in ("cold", "warm", "warm_again"):
        started = time.perf_counter()
        await core.reconcile()
        out[label] = round(time.perf_counter() - started, 3)
    started = time.perf_counter()
    ray.util.list_named_actors(all_namespaces=True)
    out["list_named_actors"] = round(time.perf_counter() - started, 4)
    return out


def rows(r: dict[str, Any]) -> list[h.Row]:
    t = r["trickle"]
    out: list[h.Row] = [
        ("tenants x contacts", f"{r['tenants']} x {r['contacts_per_tenant']:,}", "own token each"),
        ("correct in HubSpot", f"{r['correct_in_hubspot']:,}/{r['contacts']:,}", ""),
        ("all placed after", f"{r['seconds_until_all_placed']} s", "names registered"),
        (
            "all backfilled after",
            f"{r['seconds_until_all_backfilled']} s",
            f"per tenant p50 {r['backfilled_s']['p50']} s; first write p50 "
            f"{r['first_write_s']['p50']} s, max {r['first_write_s']['max']} s",
        ),
        (
            "tenant start-up, medians",
            " / ".join(f"{v['p50']}" for v in r["startup_s"].values()),
            "s from creation to: " + " / ".join(r["startup_s"]),
        ),
        (
            "trickle p50 / p99 / max",
            f"{t['p50_s']} / {t['p99_s']} / {t['max_s']} s",
            f"{t['changes']} changes ({t['per_tenant']} per tenant) at {t['rate']:g}/s; "
            f"missing {t['missing']}; goal p99 < {GOAL_P99:g} s",
        ),
        ("429s", r["rate_limited_429"], ""),
    ]
    for kind, k in r["memory"]["kinds"].items():
        out.append(
            (
                f"  {kind}",
                f"{k['processes']} x USS {k['uss_mib_mean']} MiB",
                f"RSS {k['rss_mib_mean']} MiB each; USS {k['uss_mib']} / RSS {k['rss_mib']} MiB in all",
            )
        )
    out += [
        (
            "memory, all processes",
            f"USS {r['memory']['total_uss_mib']:,} MiB",
            f"RSS {r['memory']['total_rss_mib']:,} MiB over {r['memory']['processes']} processes",
        ),
        (
            "USS per tenant (activation + governor)",
            f"{r['uss_mib_per_tenant']} MiB",
            f"goal <= {GOAL_USS_PER_TENANT_MIB:g} MiB",
        ),
        (
            "forbidden modules in actors",
            sum(len(v["forbidden"]) for v in r["modules"].values()),
            ", ".join(f"{k}: {v['modules']} modules" for k, v in r["modules"].items()),
        ),
        (
            "idle CPU (share of a core)",
            ", ".join(f"{k} {v:.3f}" for k, v in r["idle_cpu_share"].items()),
            f"over {r['idle_s']:g} s; per actor: "
            + ", ".join(f"{k} {v:.4f}" for k, v in r["idle_cpu_share_per_actor"].items()),
        ),
        (
            "Routers' CPU during the trickle",
            f"{r['router_cpu_share_during_trickle']:.3f} of a core",
            f"idle: {r['idle_cpu_share']['router']:.3f}",
        ),
        (
            "one reconcile: cold / warm",
            f"{r['reconcile_s']['cold']} / {r['reconcile_s']['warm']} s",
            f"list_named_actors {r['reconcile_s']['list_named_actors']} s",
        ),
        ("load average at the end", " ".join(f"{x:.1f}" for x in r["load_average_at_end"]), ""),
        ("goal met", r["goal_met"], ""),
    ]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench tenants", description=__doc__.split("\n\n")[0].replace("\n", " ")
    )
    parser.add_argument("--tenants", type=int, default=50, help="activations, one token each")
    parser.add_argument("--contacts", type=int, default=300, help="audience members per tenant")
    parser.add_argument("--trickle", type=int, default=4, help="changes per tenant after backfill")
    parser.add_argument("--rate", type=float, default=40.0, help="trickle changes per second")
    parser.add_argument(
        "--settle-s", type=float, default=15.0, help="pause between the backfills and the trickle"
    )
    parser.add_argument(
        "--idle-s", type=float, default=10.0, help="idle window measuring each kind's CPU"
    )
    h.add_common(parser)
    args = parser.parse_args(argv)
    result = h.run_scenario(scenario, args, emulator_args=("--plan", "starter"))
    h.emit(
        f"tenants: {args.tenants} activations x {args.contacts:,} contacts, one token each",
        rows(result),
        result,
        args.json,
    )
    return 0 if result["goal_met"] else 1


if __name__ == "__main__":
    sys.exit(main())

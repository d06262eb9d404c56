"""`python -m bench tenants`, tiny (3 tenants), so the scenario cannot rot: in a process of its own
(its own Redis, emulator over HTTP, Ray and hubsync on 127.0.0.1) every tenant is backfilled and
gets its trickle, each process kind is measured, and no live actor loaded what it must not."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

TENANTS = 3
CONTACTS = 20
PARTITIONS = 4  # run_scenario's default


def test_three_tenants_are_backfilled_measured_and_lean() -> None:
    env = dict(os.environ)
    for name in ("HUBSYNC_REDIS_URL", "RAY_ADDRESS"):
        env.pop(name, None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "tenants",
            "--tenants",
            str(TENANTS),
            "--contacts",
            str(CONTACTS),
            "--trickle",
            "2",
            "--idle-s",
            "1",
            "--settle-s",
            "0",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert done.returncode in (0, 1), done.stdout[-2000:] + done.stderr[-3000:]
    # Ray's raylet may print warnings on stdout too: the result is the last JSON line.
    r = json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])

    assert r["correct_in_hubspot"] == r["contacts"] == TENANTS * CONTACTS
    assert r["seconds_until_all_backfilled"] > 0
    assert r["trickle"]["changes"] == TENANTS * 2 and r["trickle"]["missing"] == 0
    assert r["trickle"]["p99_s"] is not None and r["trickle"]["p99_s"] > 0

    kinds = r["memory"]["kinds"]
    counts = {k: kinds[k]["processes"] for k in ("activation", "governor", "router", "supervisor")}
    assert counts == {
        "activation": TENANTS,
        "governor": TENANTS,
        "router": PARTITIONS,
        "supervisor": 1,
    }
    for kind in counts:
        assert 0 < kinds[kind]["uss_mib_mean"] < kinds[kind]["rss_mib_mean"]
    assert r["uss_mib_per_tenant"] == pytest.approx(
        kinds["activation"]["uss_mib_mean"] + kinds["governor"]["uss_mib_mean"], abs=0.2
    )
    assert r["memory"]["total_uss_mib"] > sum(kinds[k]["uss_mib"] for k in counts)

    # every kind was asked what it imported, and none loaded the CLI, web server, console,
    # emulator or terminal rendering (nor, but for the governor, the OpenSSL bindings)
    assert set(r["modules"]) == set(counts)
    assert all(m["modules"] > 100 for m in r["modules"].values())
    assert {k: m["forbidden"] for k, m in r["modules"].items()} == {k: [] for k in counts}

    assert set(r["idle_cpu_share"]) == set(counts)
    assert r["reconcile_s"]["cold"] > 0 and r["reconcile_s"]["warm"] > 0
    assert r["goal_met"] == (done.returncode == 0)

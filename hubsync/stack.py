"""Everything on one machine, for the demo and the benchmarks: a private redis-server, the HubSpot
emulator in its own process, a local Ray on 127.0.0.1 and a hubsync Service, all on loopback,
all stopped (no process left behind) when the stack closes.

The benchmarks run on this stack too (`bench.harness`), with the knobs they need: the
environment's HUBSYNC_* settings, an instrumented emulator, and a hook that fills the streams
before hubsync starts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from crm.emulator import EmulatorAdmin
from events.redis_server import RedisServer, stop_process
from events.secrets import load_or_create_key
from events.streams import ensure_partitions
from hubsync.config import Config
from hubsync.service import Service

__all__ = ["EmulatorProcess", "LocalStack"]


class EmulatorProcess:
    """`hubsync emulator` in a child process, so it never competes with the caller for the GIL."""

    command: tuple[str, ...] = (
        "hubsync.cli",
        "emulator",
    )  # `python -m` this, with the emulator's flags

    def __init__(self, *args: str, command: tuple[str, ...] | None = None) -> None:
        self.args = args
        if command is not None:
            self.command = command
        self.process: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self, timeout: float = 30.0) -> EmulatorProcess:
        self.process = subprocess.Popen(
            [sys.executable, "-m", *self.command, "--host", "127.0.0.1", "--port", "0", *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            found = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
            if found:
                self.url = found.group(1)
                return self
            if not line and self.process.poll() is not None:
                break
        self.stop()
        raise RuntimeError("the HubSpot emulator did not start")

    @property
    def admin(self) -> EmulatorAdmin:
        return EmulatorAdmin(self.url)

    def stop(self) -> None:
        stop_process(self.process)


@dataclass
class LocalStack:
    emulator_args: tuple[str, ...] = ()
    partitions: int = 4
    linger_ms: int = 250
    dashboard: bool = False
    keep_home: bool = False
    home: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="hubsync-")))
    environ: Mapping[str, str] | None = None
    """HUBSYNC_* settings to start from (the stack's own override them); None: the defaults."""
    emulator_command: tuple[str, ...] = EmulatorProcess.command
    """`python -m` what, for the emulator (a benchmark's instrumented one takes the same flags)."""
    before_service: Callable[[LocalStack], None] | None = None
    """Called once Redis and the emulator are up and before hubsync starts (the partition count
    fixed first), so a benchmark can fill the streams before any Router reads them."""

    def __post_init__(self) -> None:
        self.redis: RedisServer | None = None
        self.emulator = EmulatorProcess(*self.emulator_args, command=self.emulator_command)
        self.service: Service | None = None
        self.config: Config | None = None

    def start(self) -> LocalStack:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        self.redis = RedisServer(self.home / "redis").start()
        self.emulator.start()
        # The environment's HUBSYNC_* settings when asked for (a benchmark), then the stack's own.
        base = (
            Config(redis_url=None, home=self.home)
            if self.environ is None
            else Config.from_environ(self.environ)
        )
        self.config = dataclasses.replace(
            base,
            redis_url=self.redis.url,
            home=self.home,
            partitions=self.partitions,
            linger_ms=self.linger_ms,
            secret_key=load_or_create_key(self.home),
        )
        if self.before_service is not None:
            # Whoever publishes before hubsync starts needs the partition count: fix it first,
            # explicitly, as the `hubsync up` that follows would (publishers only read it).
            asyncio.run(_fix_partitions(self.config))
            self.before_service(self)
        self.service = Service(self.config, dashboard=self.dashboard, log_to_driver=False)
        self.service.start()
        return self

    def stop(self) -> None:
        try:
            if self.service is not None:
                self.service.stop()
        finally:
            self.emulator.stop()
            if self.redis is not None:
                self.redis.stop()
            if not self.keep_home:
                shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> LocalStack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: Any) -> None:
        self.stop()


async def _fix_partitions(config: Config) -> None:
    redis = aioredis.Redis.from_url(config.resolve_redis_url())
    try:
        await ensure_partitions(redis, config.keys, config.partitions)
    finally:
        await redis.aclose()

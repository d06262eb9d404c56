"""Serving the API: uvicorn on 127.0.0.1:8077 by default, in a background thread.

    server = ApiServer.from_config(config, environ=os.environ).start()
    print(f"hubsync is up: ... API {server.url}")
    ...
    server.stop()

The server binds its own socket (port 0 = any free port), so `.url` is known before the first
request, and owns its own event loop and Redis client in that thread: nothing it does blocks or
shares the caller's loop.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any

import uvicorn

from events.connection import connect
from hubsync.api.app import create_app
from hubsync.api.auth import load_or_create_api_key
from hubsync.config import Config, ConfigError

__all__ = [
    "API_ADDRESS_ENV",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "ApiServer",
    "api_address",
    "is_loopback",
]

API_ADDRESS_ENV = "HUBSYNC_API_ADDRESS"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8077


def api_address(
    environ: Mapping[str, str], host: str | None = None, port: int | None = None
) -> tuple[str, int]:
    """Where to serve: the flags (``--api-host``/``--api-port``) win over ``HUBSYNC_API_ADDRESS=H:P``,
    which wins over 127.0.0.1:8077. ``[::1]:8077`` names an IPv6 host."""
    env_host, env_port = DEFAULT_HOST, DEFAULT_PORT
    raw = (environ.get(API_ADDRESS_ENV) or "").strip()
    if raw:
        text_host, sep, text_port = raw.rpartition(":")
        if not sep or not text_host or not text_port.isdigit():
            raise ConfigError(f"{API_ADDRESS_ENV}={raw!r}: expected HOST:PORT, e.g. 127.0.0.1:8077")
        env_host, env_port = text_host.strip("[]"), int(text_port)
    chosen_host = host or env_host
    chosen_port = env_port if port is None else port
    if not 0 <= chosen_port <= 65535:
        raise ConfigError(f"API port {chosen_port} is out of range (0-65535; 0 picks a free one)")
    return chosen_host, chosen_port


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ApiServer:
    """The HTTP API served over real HTTP from a background thread."""

    def __init__(
        self,
        config: Config,
        *,
        api_key: str,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        redis_url: str | None = None,
        poll_interval: float = 1.0,
        log_level: str = "warning",
    ) -> None:
        self.host = host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((host, port))
        except OSError as exc:
            self._socket.close()
            raise ConfigError(
                f"the API cannot listen on {host}:{port} ({exc.strerror}): pick another with "
                f"--api-port or {API_ADDRESS_ENV}"
            ) from None
        self.port = self._socket.getsockname()[1]
        self._config = config
        self._api_key = api_key
        self._redis_url = redis_url  # None: the configured one, resolved at start (the embedded
        # Redis of `hubsync up` only runs once the service started)
        self._poll_interval = poll_interval
        self._log_level = log_level
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def from_config(
        cls,
        config: Config,
        *,
        environ: Mapping[str, str],
        host: str | None = None,
        port: int | None = None,
        **kwargs: Any,
    ) -> ApiServer:
        """The server `hubsync up` runs: address from flags/env, key from env or HUBSYNC_HOME."""
        where_host, where_port = api_address(environ, host, port)
        try:
            key = load_or_create_api_key(config.home, environ)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return cls(config, api_key=key, host=where_host, port=where_port, **kwargs)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _serve(self) -> None:
        async def main() -> None:
            assert self._redis_url is not None
            redis = connect(self._redis_url)  # created in, and used only by, this thread's loop
            app = create_app(
                self._config,
                redis,
                api_key=self._api_key,
                poll_interval=self._poll_interval,
                close_redis=True,
            )
            config = uvicorn.Config(
                app,
                lifespan="on",
                log_level=self._log_level,
                access_log=False,  # paths carry emails; bodies are never logged anywhere
                timeout_graceful_shutdown=2,
                server_header=False,
            )
            self._server = uvicorn.Server(config)
            await self._server.serve(sockets=[self._socket])

        asyncio.run(main())

    def start(self, timeout: float = 15.0) -> ApiServer:
        if self._thread is not None:
            return self
        if self._redis_url is None:
            self._redis_url = self._config.resolve_redis_url()
        self._thread = threading.Thread(
            target=self._serve, name=f"hubsync-api:{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while self._server is None or not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the hubsync API did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is None:
            self._socket.close()  # never started (`hubsync up` failed first): free the port
            return
        if self._server is not None:
            self._server.should_exit = True
        self._thread.join(timeout)
        self._thread = None
        self._socket.close()

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""Run the emulator: uvicorn on 127.0.0.1, in a background thread or in the foreground.

    with EmulatorServer(tokens={"pat-test": ALL_SCOPES}) as emulator:
        httpx.get(emulator.url + "/_emulator/stats")

`EmulatorServer` binds its own socket (port 0 = any free port), so `.url` is known before the
first request. `serve_forever()` is what `hubsync emulator` runs in the main thread.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import uvicorn
from starlette.routing import BaseRoute
from uvicorn.protocols.http.h11_impl import H11Protocol

from crm.emulator.admin import EmulatorAdmin
from crm.emulator.app import TRANSPORT_SCOPE_KEY, create_app
from crm.emulator.state import EmulatorConfig, HubSpotState

__all__ = ["EmulatorServer"]


class _DroppableH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, exposing the connection's transport so a fault can drop it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        inner = self.app

        async def app(scope: Any, receive: Any, send: Any) -> None:
            scope[TRANSPORT_SCOPE_KEY] = self.transport
            await inner(scope, receive, send)

        self.app = app


class EmulatorServer:
    """The HubSpot emulator served over real HTTP on a loopback port."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        config: EmulatorConfig | None = None,
        tokens: Mapping[str, Iterable[str]] | None = None,
        seed: int = 0,
        state: HubSpotState | None = None,
        log_level: str = "warning",
        admin_routes: Sequence[BaseRoute] = (),
    ) -> None:
        self.state = state or HubSpotState(config, tokens=tokens, seed=seed)
        self.host = host
        # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on accepted sockets whose proto
        # says TCP, and without it Nagle + delayed ACKs add ~40 ms to every response.
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.port = self._socket.getsockname()[1]
        self._config = uvicorn.Config(
            create_app(self.state, admin_routes=admin_routes),
            http=_DroppableH11Protocol,
            lifespan="off",
            log_level=log_level,
            access_log=False,
            timeout_graceful_shutdown=1,
            backlog=2048,
        )
        self._server = uvicorn.Server(self._config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def admin(self) -> EmulatorAdmin:
        """A small synchronous client for the `/_emulator/*` endpoints."""
        return EmulatorAdmin(self.url)

    def start(self, timeout: float = 10.0) -> EmulatorServer:
        if self._thread is not None:
            return self
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._server.serve(sockets=[self._socket])),
            name=f"hubspot-emulator:{self.port}",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the HubSpot emulator did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout)
        self._thread = None
        self._socket.close()

    def serve_forever(self) -> None:
        """Serve in the calling thread until Ctrl-C (uvicorn handles the signals)."""
        self._server.run(sockets=[self._socket])

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

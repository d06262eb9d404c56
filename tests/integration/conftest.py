"""Integration fixtures: one local Ray for the whole session (bound to 127.0.0.1, no auth token),
the HubSpot emulator over real HTTP, and a fresh hubsync per test."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
from cryptography.fernet import Fernet

from crm.emulator import EmulatorServer
from tests.integration.harness import Hubsync

SECRET_KEY = Fernet.generate_key().decode()


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    import ray

    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ["HUBSYNC_SECRET_KEY"] = SECRET_KEY  # inherited by the local workers
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        configure_logging=False,
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer() as server:
        yield server


@pytest.fixture
async def hubsync(
    ray_session: None, redis_url: str, emulator: EmulatorServer
) -> AsyncIterator[Hubsync]:
    emulator.admin.reset()
    running = Hubsync(redis_url, emulator, SECRET_KEY)
    await running.start()
    yield running
    await running.stop()

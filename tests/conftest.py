"""Shared fixtures: a private real Redis per test run, a fresh namespace per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from events.connection import connect
from events.memory import MemoryStorage
from events.ports import Storage
from events.redis_backend import RedisStorage
from events.redis_server import RedisClusterServers, RedisServer
from events.streams import Keys

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server started for this test run on a free loopback port (never a shared one)."""
    external = os.environ.get("HUBSYNC_TEST_REDIS_URL")
    if external:
        yield external
        return
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A 3-master Redis Cluster on loopback ports, for the tests that must pass on both."""
    external = os.environ.get("HUBSYNC_TEST_REDIS_CLUSTER_URL")
    if external:
        yield external
        return
    with RedisClusterServers(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster.url


@pytest.fixture
def keys() -> Keys:
    """A namespace of its own per test: tests never see, or flush, each other's keys."""
    return Keys(namespace=f"t{uuid.uuid4().hex[:10]}")


@pytest.fixture(params=["redis", "redis-cluster"])
async def redis(request: pytest.FixtureRequest) -> AsyncIterator[aioredis.Redis]:
    """The log's backends: one Redis, and a Redis Cluster (every contract test runs on both)."""
    url = request.getfixturevalue("redis_url" if request.param == "redis" else "redis_cluster_url")
    client = connect(url)
    yield client
    await client.aclose()


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
async def storage(request: pytest.FixtureRequest, keys: Keys) -> AsyncIterator[Storage]:
    """Every backend of the storage ports: the contract tests run on each (as the eventsourcing
    library runs one suite against every recorder)."""
    if request.param == "memory":
        yield MemoryStorage(keys)
        return
    url = request.getfixturevalue("redis_url" if request.param == "redis" else "redis_cluster_url")
    client = connect(url)
    yield RedisStorage(client, keys)
    await client.aclose()

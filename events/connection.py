"""Connecting to Redis: one place that decides how hubsync talks to it.

Connection errors and timeouts are retried with jittered exponential backoff (up to ~10 s), so a
Redis restart (from its AOF) or a failover shows as a short delay, not as failed steps.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError, TimeoutError

__all__ = ["connect"]


def connect(url: str) -> aioredis.Redis:
    """An asyncio Redis client for ``url`` (redis:// or rediss://) that rides out restarts."""
    return aioredis.Redis.from_url(
        url,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=2.0), retries=12),
        retry_on_error=[ConnectionError, TimeoutError],
        health_check_interval=10,
        socket_connect_timeout=5,
    )

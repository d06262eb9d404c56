"""Retry policy as two small pure functions (after openai-python's `_base_client`).

- `should_retry(outcome)`: is this outcome worth another attempt? 429 (rate limited), 423
  (locked), 408, 5xx, timeouts and dropped connections are; 400/401/403/404 and other 4xx are
  not (the request or the token is wrong: retrying would only add error responses, which HubSpot
  wants below 5% of daily requests).
- `backoff(attempt, retry_after)`: how long to wait: Retry-After up to a cap when present,
  else capped exponential backoff with full jitter.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable

__all__ = ["TransportFailure", "backoff", "should_retry"]


class TransportFailure(enum.StrEnum):
    """A call that got no HTTP response."""

    TIMEOUT = "timeout"
    CONNECTION = "connection"  # refused, reset or dropped


_RETRY_STATUS = frozenset({408, 423, 429})


def should_retry(outcome: int | TransportFailure | str) -> bool:
    """True for 408/423/429/5xx and transport failures; False for everything else."""
    if isinstance(outcome, int):
        return outcome in _RETRY_STATUS or 500 <= outcome <= 599
    try:
        TransportFailure(outcome)
    except ValueError:
        return False
    return True


def backoff(
    attempt: int,
    retry_after: float | None = None,
    *,
    base: float = 0.5,
    cap: float = 30.0,
    retry_after_cap: float = 60.0,
    rng: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before retry number `attempt` (1 for the first retry).

    A server's Retry-After wins (at most `retry_after_cap`); otherwise a uniformly random wait
    in [0, min(cap, base * 2**(attempt-1))) ("full jitter"), so retrying clients spread out.
    """
    if attempt < 1:
        raise ValueError(f"attempt counts retries from 1, got {attempt}")
    if retry_after is not None and retry_after >= 0:
        return min(retry_after, retry_after_cap)
    ceiling = cap if attempt > 64 else min(cap, base * 2 ** (attempt - 1))
    return rng() * ceiling

"""The actors' loop that never dies: run one step again and again; a step that fails is logged
and retried after a capped exponential backoff, never fatal (Ray's own controllers do the same).

One helper for every actor (Routers, ActivationActors, RateGovernors and the Supervisor), so the
backoff and the logging are the same everywhere and a reader learns them once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["backoff_s", "forever"]


def backoff_s(failures: int, *, base: float = 0.1, cap: float = 10.0) -> float:
    """Seconds to wait after ``failures`` failed steps in a row: base * 2^failures, at most cap."""
    return min(base * 2 ** min(failures, 30), cap)


async def forever(
    what: str,
    step: Callable[[], Awaitable[Any]],
    *,
    log: logging.Logger,
    pause: float = 0.0,
    once: bool = False,
    base: float = 0.1,
    cap: float = 10.0,
    on_error: Callable[[str, Exception], None] | None = None,
    idle: Callable[[], Awaitable[Any]] | None = None,
    stop: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> None:
    """Run ``step`` forever (``once``: until it succeeds once; ``stop``: until it says so),
    ``pause`` seconds apart.

    A failure is logged with ``what`` and the count in a row, handed to ``on_error`` (which may
    record it for the actor's status, or mark state to rebuild), then waited out with
    `backoff_s`. After a success, ``idle`` (if given) is awaited before the next step: a loop
    that waits for work (a blocking read) rather than for time. Cancellation is never swallowed.
    """
    failures = 0
    while not stop():
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failures += 1
            log.exception("%s failed (%d in a row); retrying", what, failures)
            if on_error is not None:
                on_error(what, exc)
            await sleep(backoff_s(failures, base=base, cap=cap))
        else:
            failures = 0
            if once:
                return
            if idle is not None:
                await idle()
        if pause:
            await sleep(pause)

"""The actors' loop that never dies: a failing step is retried with a capped backoff, success
resets it, cancellation goes through, `once` stops at the first success. No real sleeping."""

from __future__ import annotations

import asyncio
import logging

import pytest

from actors.loops import backoff_s, forever

log = logging.getLogger("test.loops")


def test_the_backoff_doubles_and_is_capped() -> None:
    assert [backoff_s(n) for n in (1, 2, 3)] == [0.2, 0.4, 0.8]
    assert backoff_s(60) == 10.0 and backoff_s(10_000, cap=5.0) == 5.0


async def test_a_failing_step_is_retried_with_backoff_until_it_succeeds_once() -> None:
    waits: list[float] = []
    errors: list[str] = []
    outcomes = iter([ValueError("one"), ValueError("two"), None])

    async def step() -> None:
        outcome = next(outcomes)
        if outcome is not None:
            raise outcome

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    await forever(
        "recover",
        step,
        log=log,
        once=True,
        on_error=lambda what, exc: errors.append(f"{what}: {exc}"),
        sleep=sleep,
    )
    assert errors == ["recover: one", "recover: two"]
    assert waits == [backoff_s(1), backoff_s(2)]


async def test_success_resets_the_backoff_and_cancellation_goes_through() -> None:
    waits: list[float] = []
    calls = 0

    async def step() -> None:
        nonlocal calls
        calls += 1
        if calls in (1, 3):
            raise RuntimeError("flaky")

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) >= 5:
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await forever("loop", step, log=log, pause=1.0, sleep=sleep)
    # fail (backoff 1), pause; ok, pause; fail again: back to the first backoff, not the second
    assert waits == [backoff_s(1), 1.0, 1.0, backoff_s(1), 1.0]


async def test_idle_waits_for_work_after_a_success_and_stop_ends_the_loop() -> None:
    """The Supervisor's shape: after a success wait for work (a blocking read), after a failure
    only the backoff (what failed may be what the wait would read), until asked to stop."""
    events: list[str] = []
    outcomes = iter([None, RuntimeError("redis down"), None, None])

    async def step() -> None:
        outcome = next(outcomes)
        events.append("step")
        if outcome is not None:
            raise outcome

    async def idle() -> None:
        events.append("idle")

    async def sleep(seconds: float) -> None:
        events.append(f"sleep {seconds:g}")

    await forever(
        "reconcile",
        step,
        log=log,
        base=1.0,
        cap=30.0,
        idle=idle,
        stop=lambda: events.count("step") == 4,
        sleep=sleep,
    )
    assert events == ["step", "idle", "step", "sleep 2", "step", "idle", "step", "idle"]

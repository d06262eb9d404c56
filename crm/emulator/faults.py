"""Faults on demand: 5xx answers, 423 Locked, added latency, hangs, dropped connections, and
inputs HubSpot refuses (`reject_emails`: a batch write refuses those emails as invalid, like a
HubSpot that validates emails more strictly than hubsync does).

Decisions come from a seeded `random.Random`, so a test that sets a seed sees the same faults
on every run. `next_n` forces the next N API requests to one outcome, ahead of the rates.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any, Literal

import msgspec

__all__ = ["FaultAction", "FaultInjector", "FaultSettings"]

Outcome = int | Literal["drop", "hang"]


class FaultSettings(msgspec.Struct, kw_only=True):
    """The JSON body of `POST /_emulator/faults` (every field optional)."""

    error_rate: float = 0.0
    error_status: int = 503
    latency_ms: float = 0.0
    hang_rate: float = 0.0
    hang_seconds: float = 30.0
    drop_rate: float = 0.0
    locked_rate: float = 0.0
    seed: int | None = None
    next_n: dict[str, Any] | None = None
    """{"count": N, "status": 503 | 423 | 429 | "drop" | "hang"}"""
    reject_emails: list[str] = []
    """Batch writes refuse inputs with these (lower-cased) emails: INVALID_EMAIL."""
    omit_emails: list[str] = []
    """The next batch write of each of these emails leaves it out of its answer, unwritten,
    once (a 207/200 with neither result nor error for it: the client's MISSING_RESULT)."""


class FaultAction(msgspec.Struct, frozen=True):
    kind: Literal["status", "drop", "hang"]
    status: int = 0


class FaultInjector:
    def __init__(self, seed: int = 0) -> None:
        self.settings = FaultSettings()
        self._rng = random.Random(seed)
        self._forced: deque[Outcome] = deque()

    def configure(self, settings: FaultSettings) -> None:
        if settings.seed is not None:
            self._rng = random.Random(settings.seed)
        for name in ("error_rate", "hang_rate", "drop_rate", "locked_rate"):
            rate = getattr(settings, name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {rate}")
        if settings.next_n:
            count = int(settings.next_n.get("count", 1))
            outcome = settings.next_n.get("status", 503)
            if outcome not in ("drop", "hang"):
                outcome = int(outcome)
            self._forced.extend([outcome] * count)
        self.settings = msgspec.structs.replace(
            settings,
            next_n=None,
            reject_emails=[e.lower() for e in settings.reject_emails],
            omit_emails=[e.lower() for e in settings.omit_emails],
        )

    def rejects(self, email: str) -> bool:
        return email.lower() in self.settings.reject_emails

    def omits(self, key: str) -> bool:
        """Whether to leave this input out of a batch answer (once per listed email)."""
        omitted = self.settings.omit_emails
        if key.lower() in omitted:
            omitted.remove(key.lower())
            return True
        return False

    def clear(self, seed: int = 0) -> None:
        self.settings = FaultSettings()
        self._rng = random.Random(seed)
        self._forced.clear()

    @property
    def latency_seconds(self) -> float:
        return self.settings.latency_ms / 1000.0

    def decide(self) -> FaultAction | None:
        """The fault for one API request, or None to answer it normally."""
        if self._forced:
            outcome = self._forced.popleft()
            if outcome in ("drop", "hang"):
                return FaultAction(outcome)
            return FaultAction("status", int(outcome))
        s = self.settings
        if not (s.drop_rate or s.hang_rate or s.locked_rate or s.error_rate):
            return None
        draw = self._rng.random()
        for rate, action in (
            (s.drop_rate, FaultAction("drop")),
            (s.hang_rate, FaultAction("hang")),
            (s.locked_rate, FaultAction("status", 423)),
            (s.error_rate, FaultAction("status", s.error_status)),
        ):
            if draw < rate:
                return action
            draw -= rate
        return None

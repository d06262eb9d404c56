"""Flap damping per contact: HubSpot sees settled states, not every flip (as routers damp
flapping routes, RFC 2439).

A contact "flips" when a change supersedes or cancels a value of it that is still waiting to be
written, or when it changes again while it still carries a penalty from earlier flips. Each flip
adds `penalty`; the penalty halves every `half_life` seconds. Once it reaches `suppress`, the
contact is held: its changes keep coalescing but nothing of it is written until the penalty has
decayed below `reuse`, or `max_hold` seconds after the hold began at the latest. Then what it
settled on is written, once.

State is kept only for contacts that flipped (a dict entry of three floats), never for the many
contacts that change once: memory per pending contact does not grow. The price is that the first
change of a contact leaves no trace: the flip that follows it counts both (as if the first had
happened just now), and a contact that changes only after its last value was written and its
penalty forgotten starts from scratch.

`settle` is the other half: a realtime change waits at least that long before it can join a
batch, so that a flip following within it cancels it instead of costing a write; a contact that
changes once is never held, only `settle` later than it would be otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

__all__ = ["Damper", "DampingPolicy"]

# A decayed penalty under this share of `reuse` is forgotten (RFC 2439 keeps it until half).
_FORGET = 0.5
# 2 ** _MAX_EXPONENT stays a finite float whatever max_hold / half_life is.
_MAX_EXPONENT = 1000.0


class DampingPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """What damping trades: HubSpot calls and workflow noise against delay for flapping contacts."""

    penalty: float = 1.0
    """Added per flip."""
    half_life: float = 1.0
    """Seconds for a penalty to halve: how long a flip is remembered."""
    suppress: float = 2.0
    """A contact whose penalty reaches this is held (2: a waiting change flipped back once)."""
    reuse: float = 0.75
    """A held contact is released once its penalty decays below this."""
    max_hold: float = 30.0
    """Seconds a contact is held at most, however it keeps flipping (then written, as it is)."""
    settle: float = 0.5
    """Seconds a realtime change waits at least before it may be written (0: no wait)."""

    def __post_init__(self) -> None:
        if not (self.penalty > 0 and math.isfinite(self.penalty)):
            raise ValueError(f"damping penalty must be > 0, got {self.penalty}")
        if not (self.half_life > 0 and math.isfinite(self.half_life)):
            raise ValueError(f"damping half_life must be > 0 seconds, got {self.half_life}")
        if not 0 < self.reuse < self.suppress < math.inf:
            raise ValueError(
                "damping thresholds must satisfy 0 < reuse < suppress, "
                f"got reuse={self.reuse}, suppress={self.suppress}"
            )
        if not (0 <= self.max_hold < math.inf):
            raise ValueError(f"damping max_hold must be >= 0 seconds, got {self.max_hold}")
        if not (0 <= self.settle < math.inf):
            raise ValueError(f"damping settle must be >= 0 seconds, got {self.settle}")

    @property
    def ceiling(self) -> float:
        """The highest penalty kept: one that decays to `reuse` in `max_hold` (RFC 2439)."""
        return self.reuse * 2.0 ** min(self.max_hold / self.half_life, _MAX_EXPONENT)

    def decayed(self, penalty: float, elapsed: float) -> float:
        """`penalty` after `elapsed` seconds."""
        return penalty * 2.0 ** (-max(0.0, elapsed) / self.half_life)

    def reuse_at(self, penalty: float, at: float) -> float:
        """When `penalty`, as of `at`, decays below `reuse`."""
        if penalty < self.reuse:
            return at
        # a hair past the crossing, so that `decayed` at that time is below reuse
        return at + self.half_life * math.log2(penalty / self.reuse) * (1 + 1e-9) + 1e-9


class Damper:
    """Flap penalties of the contacts that flipped, keyed like the Coalescer (email bytes).

    Each entry is `[penalty, at, held_since]`: the penalty as of `at`, and when the contact's hold
    began (`math.nan` while it is not held). Pure and clock-free: callers pass `now`.
    """

    __slots__ = ("_policy", "_state", "_swept_at")

    def __init__(self, policy: DampingPolicy) -> None:
        self._policy = policy
        self._state: dict[bytes, list[float]] = {}
        self._swept_at = -math.inf

    @property
    def policy(self) -> DampingPolicy:
        return self._policy

    def __len__(self) -> int:
        return len(self._state)

    def tracks(self, key: bytes) -> bool:
        """True while `key` carries a penalty (so any change of it is a flip)."""
        return key in self._state

    def flip(self, key: bytes, now: float) -> bool:
        """Count one flip of `key` at `now`; True if it is held (now or already)."""
        self.count(key, now)
        entry = self._state[key]
        if math.isnan(entry[2]) and entry[0] >= self._policy.suppress:
            entry[2] = now
        return not math.isnan(entry[2])

    def count(self, key: bytes, now: float) -> None:
        """Add one flip's penalty to `key` without starting a hold."""
        p = self._policy
        entry = self._state.get(key)
        if entry is None:
            # The change this flip undoes left no trace: count it too, as if it were just now.
            entry = self._state[key] = [p.penalty, now, math.nan]
        else:
            entry[0] = p.decayed(entry[0], now - entry[1])
            entry[1] = max(entry[1], now)
        entry[0] = min(entry[0] + p.penalty, p.ceiling)

    def held(self, key: bytes) -> bool:
        entry = self._state.get(key)
        return entry is not None and not math.isnan(entry[2])

    def held_since(self, key: bytes) -> float | None:
        entry = self._state.get(key)
        return None if entry is None or math.isnan(entry[2]) else entry[2]

    def release_at(self, key: bytes) -> float | None:
        """When held `key` may be written: its penalty below `reuse`, or `max_hold` after the
        hold began, whichever comes first; None if it is not held."""
        entry = self._state.get(key)
        if entry is None or math.isnan(entry[2]):
            return None
        p = self._policy
        return min(p.reuse_at(entry[0], entry[1]), entry[2] + p.max_hold)

    def release(self, key: bytes) -> None:
        """End the hold of `key`; its penalty stays and goes on decaying."""
        entry = self._state.get(key)
        if entry is not None:
            entry[2] = math.nan

    def sweep(self, now: float, *, every: float | None = None) -> int:
        """Forget penalties decayed under half of `reuse` (contacts not held); at most once per
        `every` seconds (default: a half-life). Returns how many were forgotten."""
        p = self._policy
        if now - self._swept_at < (p.half_life if every is None else every):
            return 0
        self._swept_at = now
        floor = p.reuse * _FORGET
        stale = [
            key
            for key, (penalty, at, held_since) in self._state.items()
            if math.isnan(held_since) and p.decayed(penalty, now - at) < floor
        ]
        for key in stale:
            del self._state[key]
        return len(stale)

    # ------------------------------------------------------------------ snapshots

    def to_builtins(self) -> list[tuple[str, float, float, float | None]]:
        """Rows (key text, penalty, at, held since or None), for a snapshot."""
        return [
            (key.decode(), penalty, at, None if math.isnan(held_since) else held_since)
            for key, (penalty, at, held_since) in self._state.items()
        ]

    def load(self, entries: Iterable[Sequence[Any]]) -> None:
        """Rows as ``to_builtins`` wrote them, decoded from a snapshot: [email, penalty, at,
        held_since or None]; float() checks each number as it goes in."""
        for email, penalty, at, held_since in entries:
            self._state[str(email).encode()] = [
                float(penalty),
                float(at),
                math.nan if held_since is None else float(held_since),
            ]

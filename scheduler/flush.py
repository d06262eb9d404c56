"""When a batch goes: full (`batch_size` contacts) or its oldest change has waited `linger`."""

from __future__ import annotations

import msgspec

__all__ = ["FlushPolicy"]


class FlushPolicy(msgspec.Struct, frozen=True, kw_only=True):
    batch_size: int = 100
    """Contacts per HubSpot batch upsert (HubSpot's maximum is 100)."""
    linger: float = 0.25
    """Seconds the oldest pending change may wait for company before its batch goes anyway."""
    backfill_every: int = 5
    """When both lanes are due, every n-th batch is taken from backfill (see LaneSelector)."""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.linger < 0:
            raise ValueError(f"linger must be >= 0 seconds, got {self.linger}")
        if self.backfill_every < 1:
            raise ValueError(f"backfill_every must be >= 1, got {self.backfill_every}")

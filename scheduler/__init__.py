"""scheduler: pure, clock-injected scheduling logic (no Ray, no Redis, no network).

- `Coalescer`: an activation's pending writes per contact and property, latest position wins;
  batches of distinct contacts, oldest first, in a realtime and a backfill lane.
- `FlushPolicy`, `Lane`, `LaneSelector`: when a batch goes, and which lane it comes from.
- `DampingPolicy`, `Damper`: flap damping per contact (held while flapping, written once settled).
- `RollingWindow`, `DailyQuota`, `TokenBudget`: HubSpot's per-token limits, refined from headers.
- `FairQueue`: calls shared fairly between the activations of one token.
- `Dispatcher`, `Permit`: one token's permits (fair queue, budget, realtime reserve, warm-up
  probe, refusal after a 429), decided from state and `now`.
- `should_retry`, `backoff`, `BatchSplitter`: what to do when a call fails.
- `Clock`, `SystemClock`, `FakeClock`: the only source of time.
"""

from scheduler.budget import TokenBudget
from scheduler.clock import Clock, FakeClock, SystemClock
from scheduler.coalescer import Batch, Coalescer, CoalescerStats, ContactWrite
from scheduler.daily import DailyQuota
from scheduler.damping import Damper, DampingPolicy
from scheduler.dispatch import Dispatcher, Grant, Permit
from scheduler.fairqueue import FairQueue
from scheduler.flush import FlushPolicy
from scheduler.lanes import Lane, LaneSelector
from scheduler.retry import TransportFailure, backoff, should_retry
from scheduler.splitter import BatchSplitter, split_call_bound
from scheduler.window import RollingWindow

__all__ = [
    "Batch",
    "BatchSplitter",
    "Clock",
    "Coalescer",
    "CoalescerStats",
    "ContactWrite",
    "DailyQuota",
    "Damper",
    "DampingPolicy",
    "Dispatcher",
    "FairQueue",
    "FakeClock",
    "FlushPolicy",
    "Grant",
    "Lane",
    "LaneSelector",
    "Permit",
    "RollingWindow",
    "SystemClock",
    "TokenBudget",
    "TransportFailure",
    "backoff",
    "should_retry",
    "split_call_bound",
]

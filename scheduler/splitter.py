"""BatchSplitter: isolate the bad inputs of a batch HubSpot rejected as a whole (400).

A pure state machine: it says which sub-batch to send next, you report whether HubSpot took it,
and at the end it holds the inputs that were written and the bad ones isolated (to park).
Rejected parts are halved until each bad input stands alone; good parts are written as they go.

When the left half of a rejected part is accepted, the right half must hold the bad input, so
it is split without being sent whole. Calls made after the initial rejection, for k bad inputs
among n: at most 2 * sum_{d < D} min(2**d, k) <= 2 * k * D, D = ceil(log2 n), because at each
depth of the halving tree at most min(2**d, k) parts hold a bad input and each rejected part
costs at most its two halves.

    splitter = BatchSplitter(batch.contacts)        # the whole was already rejected
    while (part := splitter.next_part()) is not None:
        splitter.report(send(part))
    splitter.written, splitter.bad
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, TypeVar

__all__ = ["BatchSplitter", "split_call_bound"]

T = TypeVar("T")


def split_call_bound(n: int, k: int) -> int:
    """The most calls BatchSplitter makes for `k` bad inputs among `n` (after the whole batch)."""
    if n <= 1:
        return 0  # a lone input rejected is the bad one: nothing more to send
    depth = (n - 1).bit_length()  # ceil(log2 n)
    return 2 * sum(min(2**d, k) for d in range(depth))


class BatchSplitter(Generic[T]):
    def __init__(self, items: Sequence[T], *, whole_rejected: bool = True) -> None:
        """`whole_rejected`: the batch was already sent and rejected (usual); else the first
        part handed out is the whole batch."""
        self._items = list(items)
        self.written: list[T] = []
        self.bad: list[T] = []
        self.calls = 0
        # Stack of (start, end, is_left_half, known_bad); the top is sent next. A right half is
        # "known bad" once its parent was rejected and its left half accepted.
        self._stack: list[tuple[int, int, bool, bool]] = []
        self._sent: tuple[int, int, bool] | None = None
        n = len(self._items)
        if n:
            if whole_rejected:
                self._rejected(0, n)
            else:
                self._stack.append((0, n, False, False))

    def _rejected(self, start: int, end: int) -> None:
        if end - start == 1:
            self.bad.append(self._items[start])
            return
        mid = (start + end) // 2
        self._stack.append((mid, end, False, False))
        self._stack.append((start, mid, True, False))

    def next_part(self) -> list[T] | None:
        """The next sub-batch to send, or None when done."""
        if self._sent is not None:
            raise RuntimeError("report the outcome of the part already handed out first")
        while self._stack:
            start, end, is_left, known_bad = self._stack.pop()
            if known_bad:
                self._rejected(start, end)
                continue
            self._sent = (start, end, is_left)
            self.calls += 1
            return self._items[start:end]
        return None

    def report(self, ok: bool) -> None:
        """Whether HubSpot accepted the part last handed out."""
        if self._sent is None:
            raise RuntimeError("no part is waiting for an outcome")
        start, end, is_left = self._sent
        self._sent = None
        if ok:
            self.written.extend(self._items[start:end])
            if is_left:
                # Its right sibling is on top of the stack (pushed together, nothing since).
                s, e, _, _ = self._stack.pop()
                self._stack.append((s, e, False, True))
        else:
            self._rejected(start, end)

    @property
    def done(self) -> bool:
        return self._sent is None and not self._stack

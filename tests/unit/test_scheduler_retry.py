"""Retry policy and BatchSplitter."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler import BatchSplitter, TransportFailure, backoff, should_retry, split_call_bound


@pytest.mark.parametrize("status", [429, 423, 408, 500, 502, 503, 504])
def test_transient_statuses_are_retried(status: int) -> None:
    assert should_retry(status)


@pytest.mark.parametrize("status", [200, 207, 400, 401, 403, 404, 409])
def test_request_or_token_errors_are_not(status: int) -> None:
    assert not should_retry(status)


def test_timeouts_and_dropped_connections_are_retried() -> None:
    assert should_retry(TransportFailure.TIMEOUT)
    assert should_retry("connection")
    assert not should_retry("bad-json")


def test_backoff_honours_retry_after_up_to_a_cap() -> None:
    assert backoff(1, retry_after=3.0) == 3.0
    assert backoff(1, retry_after=3600.0, retry_after_cap=60.0) == 60.0


@given(attempt=st.integers(1, 10_000), r=st.floats(0, 0.999999))
def test_backoff_is_full_jitter_capped(attempt: int, r: float) -> None:
    wait = backoff(attempt, rng=lambda: r, base=0.5, cap=30.0)
    assert 0 <= wait <= min(30.0, 0.5 * 2 ** min(attempt - 1, 64))
    assert wait == pytest.approx(r * min(30.0, 0.5 * 2 ** min(attempt - 1, 64)))


def test_backoff_rejects_attempt_zero() -> None:
    with pytest.raises(ValueError):
        backoff(0)


def run(items: list[int], bad: set[int], *, whole_rejected: bool = True) -> BatchSplitter[int]:
    s = BatchSplitter(items, whole_rejected=whole_rejected)
    while (part := s.next_part()) is not None:
        s.report(not bad.intersection(part))
    return s


def test_one_bad_input_among_100() -> None:
    s = run(list(range(100)), {37})
    assert s.bad == [37]
    assert s.written == [i for i in range(100) if i != 37]
    assert s.calls <= 2 * math.ceil(math.log2(100))


def test_a_batch_not_yet_sent_goes_whole_first() -> None:
    s = run(list(range(8)), set(), whole_rejected=False)
    assert s.calls == 1 and s.written == list(range(8))


def test_protocol_misuse_is_an_error() -> None:
    s = BatchSplitter([1, 2])
    with pytest.raises(RuntimeError):
        s.report(True)
    s.next_part()
    with pytest.raises(RuntimeError):
        s.next_part()


@settings(max_examples=300, deadline=None)
@given(data=st.data(), n=st.integers(1, 200))
def test_split_isolates_every_bad_input_in_o_k_log_n_calls(data, n: int) -> None:
    bad = set(data.draw(st.lists(st.integers(0, n - 1), unique=True, max_size=n)))
    s = run(list(range(n)), bad, whole_rejected=bool(bad))
    assert sorted(s.bad) == sorted(bad)
    assert s.written == [i for i in range(n) if i not in bad]
    k = len(bad)
    if k == 0:
        assert s.calls == 1  # sent whole, accepted
    else:
        assert s.calls <= split_call_bound(n, k) <= 2 * k * math.ceil(math.log2(n))

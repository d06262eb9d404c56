"""Rate-limit headers, Retry-After, token fingerprints and the error tree's messages."""

from __future__ import annotations

import httpx

from crm import RateLimitInfo, token_fingerprint
from crm.errors import (
    AuthenticationError,
    HubSpotError,
    LockedError,
    MissingScopesError,
    RateLimitedError,
    ServerError,
    TransportError,
)
from crm.ratelimit import parse_retry_after


def test_headers_parse_and_absent_means_none_not_zero():
    info = RateLimitInfo.from_headers(
        httpx.Headers(
            {
                "X-HubSpot-RateLimit-Max": "100",
                "X-HubSpot-RateLimit-Remaining": "0",
                "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
            }
        )
    )
    assert (info.max, info.remaining, info.interval_seconds) == (100, 0, 10.0)
    assert info.daily is None and info.daily_remaining is None and info.known
    assert not RateLimitInfo.from_headers({}).known
    assert RateLimitInfo.from_headers({"x-hubspot-ratelimit-max": "junk"}).max is None


def test_retry_after_seconds_and_http_date():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Thu, 01 Jan 1970 00:00:10 GMT", now=0.0) == 10.0


def test_fingerprint_is_short_stable_and_not_the_token():
    fp = token_fingerprint("pat-na1-secret")
    assert fp == token_fingerprint("pat-na1-secret") and len(fp) == 12 and "secret" not in fp


def test_retryable_classes_and_messages_say_what_to_do():
    assert all(c.retryable for c in (RateLimitedError, LockedError, ServerError, TransportError))
    assert not AuthenticationError.retryable and not MissingScopesError.retryable
    scopes = MissingScopesError("lacks scope", scopes=["crm.schemas.contacts.write"], status=403)
    assert "crm.schemas.contacts.write" in str(scopes) and "Grant" in str(scopes)
    daily = RateLimitedError("limit", policy="DAILY")
    assert "midnight" in str(daily) and daily.is_daily
    burst = RateLimitedError("limit", policy="TEN_SECONDLY_ROLLING", retry_after=10.0)
    assert "Wait 10 s" in str(burst)
    assert isinstance(burst, HubSpotError)

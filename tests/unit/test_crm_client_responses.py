"""How the client reads responses the emulator never sends (through httpx's transport seam)."""

from __future__ import annotations

import httpx
import pytest

from crm import ContactUpsert, HubSpotClient, UnexpectedResponseError, WriteStatus


def client_answering(
    status: int, body: bytes, headers: dict[str, str] | None = None
) -> HubSpotClient:
    transport = httpx.MockTransport(
        lambda request: httpx.Response(status, content=body, headers=headers)
    )
    return HubSpotClient("pat-secret", http=httpx.AsyncClient(transport=transport))


async def test_a_2xx_with_neither_results_nor_errors_is_an_error():
    hubspot = client_answering(200, b'{"status":"COMPLETE","results":[]}')
    with pytest.raises(UnexpectedResponseError, match="neither results nor errors") as caught:
        await hubspot.upsert_contacts([ContactUpsert("a@x.com", {"p": "1"})])
    assert caught.value.retryable and caught.value.rate_limit.max is None


async def test_an_input_hubspot_says_nothing_about_is_failed_not_assumed_written():
    body = (
        b'{"status":"COMPLETE","results":[{"id":"1","properties":{"email":"a@x.com"},"new":false}]}'
    )
    hubspot = client_answering(200, body, {"X-HubSpot-RateLimit-Max": "100"})
    outcome = await hubspot.upsert_contacts(
        [ContactUpsert("A@x.com", {}), ContactUpsert("b@x.com", {})]
    )
    assert outcome.by_key["a@x.com"].status is WriteStatus.WRITTEN
    assert outcome.by_key["b@x.com"].category == "MISSING_RESULT"
    assert outcome.rate_limit.max == 100 and outcome.rate_limit.daily is None


async def test_a_non_json_error_body_still_gives_a_typed_error():
    hubspot = client_answering(502, b"<html>Bad gateway</html>")
    with pytest.raises(Exception) as caught:
        await hubspot.read_property("email")
    assert type(caught.value).__name__ == "ServerError" and "pat-secret" not in str(caught.value)

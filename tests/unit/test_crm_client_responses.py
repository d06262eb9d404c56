"""How the client reads responses the emulator never sends (through httpx's transport seam)."""

from __future__ import annotations

import httpx
import msgspec
import pytest

from crm import ContactUpsert, HubSpotClient, UnexpectedResponseError, ValidationError, WriteStatus


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


async def test_hubspot_being_loose_with_its_own_schema_is_tolerated():
    """null or "" values, null `errors`/`links`/`context`, `subCategory` as an object (one of
    HubSpot's schemas says object, another string): still read, nothing assumed."""
    body = (
        b'{"status":"COMPLETE","links":null,"numErrors":1,'
        b'"results":[{"id":"1","properties":{"email":"a@x.com","p":null,"q":""},"new":false,'
        b'"objectWriteTraceId":null}],'
        b'"errors":[{"status":"error","category":"OBJECT_NOT_FOUND","message":"gone",'
        b'"context":{"ids":["b@x.com"]},"subCategory":{"kind":"x"},"errors":null,"links":null},'
        b'{"status":"error","category":"VALIDATION_ERROR","message":"bad","context":null}]}'
    )
    hubspot = client_answering(207, body)
    outcome = await hubspot.upsert_contacts(
        [ContactUpsert("a@x.com", {"p": ""}), ContactUpsert("b@x.com", {"p": "1"})]
    )
    assert outcome.by_key["a@x.com"].status is WriteStatus.WRITTEN
    assert outcome.by_key["b@x.com"].category == "OBJECT_NOT_FOUND"


async def test_the_properties_a_400_names_are_read_from_every_place_hubspot_puts_them():
    message = (
        'Property values were not valid: [{"isValid":false,"message":"Property \\"gone\\" does '
        'not exist","error":"PROPERTY_DOESNT_EXIST","name":"gone"}]'
    )
    body = msgspec.json.encode(
        {
            "status": "error",
            "category": "VALIDATION_ERROR",
            "message": message,
            "correlationId": "c",
            "context": {"propertyName": ["tier"]},
            "errors": [{"message": "x", "code": "INVALID_OPTION", "in": "tier"}],
        }
    )
    hubspot = client_answering(400, body)
    with pytest.raises(ValidationError) as caught:
        await hubspot.upsert_contacts([ContactUpsert("a@x.com", {"gone": "1", "tier": "z"})])
    named = {e.name: e.code for e in caught.value.property_errors}
    assert named == {"tier": "INVALID_OPTION", "gone": "PROPERTY_DOESNT_EXIST"}

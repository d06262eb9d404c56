"""The emulator seen by an independent HTTP client sending HubSpot-documented requests."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from crm.emulator import ALL_SCOPES, EmulatorServer

pytestmark = pytest.mark.integration

TOKEN = "pat-na1-independent"


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(tokens={TOKEN: ALL_SCOPES}) as server:
        yield server


@pytest.fixture
def http(emulator: EmulatorServer) -> Iterator[httpx.Client]:
    emulator.admin.reset()
    with httpx.Client(
        base_url=emulator.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5.0
    ) as client:
        yield client


def test_the_101st_call_inside_ten_seconds_on_starter_is_a_429(http, emulator):
    remaining = []
    for _ in range(100):
        response = http.get("/crm/v3/properties/contacts/groups")
        assert response.status_code == 200
        assert response.headers["X-HubSpot-RateLimit-Max"] == "100"
        assert response.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
        remaining.append(int(response.headers["X-HubSpot-RateLimit-Remaining"]))
    assert remaining == list(range(99, -1, -1))
    response = http.get("/crm/v3/properties/contacts/groups")
    assert response.status_code == 429
    body = response.json()
    assert body["policyName"] == "TEN_SECONDLY_ROLLING" and body["errorType"] == "RATE_LIMIT"
    assert body["message"] == "You have reached your ten_secondly_rolling limit."
    assert body["status"] == "error" and body["correlationId"]
    assert emulator.admin.stats()["max_calls_in_any_window"] == 100


def test_both_api_versions_serve_the_same_account(http):
    http.post("/crm/v3/properties/contacts/groups", json={"name": "g1", "label": "G"})
    http.post(
        "/crm/properties/2026-03/contacts",
        json={
            "name": "cdp_vip",
            "label": "VIP",
            "type": "bool",
            "fieldType": "booleancheckbox",
            "groupName": "g1",
        },
    ).raise_for_status()
    response = http.post(
        "/crm/objects/2026-03/contacts/batch/upsert",
        json={
            "inputs": [
                {"id": "ada@example.com", "idProperty": "email", "properties": {"cdp_vip": "true"}}
            ]
        },
    )
    assert response.status_code == 200 and response.json()["results"][0]["new"] is True
    got = http.get(
        "/crm/v3/objects/contacts/ada@example.com",
        params={"idProperty": "email", "properties": "cdp_vip"},
    )
    assert got.json()["properties"]["cdp_vip"] == "true"
    assert "X-HubSpot-Correlation-Id" in got.headers


def test_more_than_100_inputs_is_a_400(http):
    inputs = [{"id": f"u{i}@x.com", "idProperty": "email", "properties": {}} for i in range(101)]
    response = http.post("/crm/v3/objects/contacts/batch/upsert", json={"inputs": inputs})
    assert response.status_code == 400 and response.json()["category"] == "VALIDATION_ERROR"


def test_search_by_email_has_no_rate_limit_headers(http):
    http.post(
        "/crm/v3/objects/contacts/batch/upsert",
        json={
            "inputs": [
                {"id": f"u{i}@x.com", "idProperty": "email", "properties": {}} for i in range(3)
            ]
        },
    )
    response = http.post(
        "/crm/v3/objects/contacts/search",
        json={
            "filterGroups": [
                {
                    "filters": [
                        {
                            "propertyName": "email",
                            "operator": "IN",
                            "values": ["U1@x.com", "u2@x.com"],
                        }
                    ]
                }
            ],
            "limit": 200,
        },
    )
    assert response.status_code == 200 and response.json()["total"] == 2
    assert not [h for h in response.headers if h.lower().startswith("x-hubspot-ratelimit")]
    assert http.post("/crm/v3/objects/contacts/search", json={"limit": 201}).status_code == 400


def test_admin_endpoints_need_no_token_and_show_timestamps(http, emulator):
    http.post(
        "/crm/v3/objects/contacts/batch/upsert",
        json={
            "inputs": [{"id": "a@x.com", "idProperty": "email", "properties": {"firstname": "Ada"}}]
        },
    )
    contacts = httpx.get(f"{emulator.url}/_emulator/contacts?with_timestamps=1").json()["results"]
    assert (
        contacts[0]["properties"]["firstname"] == "Ada"
        and contacts[0]["written_at"]["firstname"] > 0
    )
    stats = httpx.get(f"{emulator.url}/_emulator/stats").json()
    assert stats["inputs_written"] == 1 and TOKEN not in str(stats)
    assert set(stats) >= {
        "requests",
        "by_status",
        "rate_limited",
        "max_calls_in_any_window",
        "tokens",
    }

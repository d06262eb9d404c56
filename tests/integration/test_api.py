"""The HTTP API over real HTTP: uvicorn on a free loopback port, a real Redis, the emulator.

Every endpoint: its happy path, no key or a wrong one, bad bodies, unknown ids; the token never
in a response, a log record or a Redis value. Ray runs only in the one test that needs the
service itself (status, verify, HubSpot's values).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from crm.emulator import EmulatorServer
from events.activations import Activations
from events.connection import connect
from events.model import (
    AttributeChanged,
    AttributeDefined,
    AudienceDefined,
    AudienceEntered,
    CdpEvent,
)
from events.projections import Projections
from events.streams import (
    DeadLetter,
    DeadLetters,
    Keys,
    Publisher,
    ensure_partitions,
    partition_of,
)
from hubsync.api import ROUTES, ApiServer
from hubsync.config import Config, ConfigError
from tests.integration.conftest import SECRET_KEY
from tests.integration.harness import Hubsync

pytestmark = pytest.mark.integration

API_KEY = f"test-api-key-{secrets.token_hex(12)}"
PARTITIONS = 2


def new_token() -> str:
    """A token unique to the test, so a scan for it finds only what this test wrote."""
    return f"pat-na1-{uuid.uuid4()}"


@dataclass
class Api:
    server: ApiServer
    http: httpx.AsyncClient
    redis: aioredis.Redis
    keys: Keys
    config: Config
    seen: list[bytes]

    @property
    def url(self) -> str:
        return self.server.url + "/api/v1"

    async def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = await self.http.request(method, path, **kwargs)
        self.seen.append(response.content)
        self.seen.append(str(response.headers).encode())
        return response

    async def publish(self, events: list[CdpEvent]) -> None:
        await Publisher(self.redis, self.keys, PARTITIONS).publish(events)

    async def project(self, events: list[CdpEvent]) -> None:
        """Apply per-contact events to the projections, as the routers do, without Ray."""
        projections = Projections(self.redis, self.keys)
        by_partition: dict[int, list[tuple[int, CdpEvent]]] = {}
        for n, event in enumerate(events, start=1):
            p = partition_of(event.email, PARTITIONS)  # type: ignore[attr-defined]
            by_partition.setdefault(p, []).append((int(time.time() * 1000) * 1000 + n, event))
        for p, changes in by_partition.items():
            await projections.apply(p, changes)

    async def control_entries(self) -> int:
        return int(await self.redis.xlen(self.keys.activations))

    async def redis_values(self) -> list[bytes]:
        """Every key and value of the namespace, streams included."""
        out: list[bytes] = []
        async for key in self.redis.scan_iter(match=f"{self.keys.namespace}:*", count=500):
            out.append(key)
            kind = (await self.redis.type(key)).decode()
            if kind == "string":
                out.append(await self.redis.get(key) or b"")
            elif kind == "hash":
                out += [b for kv in (await self.redis.hgetall(key)).items() for b in kv]
            elif kind == "stream":
                for entry_id, fields in await self.redis.xrange(key):
                    out += [entry_id, *(b for kv in fields.items() for b in kv)]
            elif kind == "list":  # a snapshot written in pieces
                out += await self.redis.lrange(key, 0, -1)
            else:
                pytest.fail(f"{key!r} is a {kind}, which this scan does not read")
        return out


async def serve(
    config: Config, redis_url: str
) -> tuple[ApiServer, httpx.AsyncClient, aioredis.Redis]:
    server = ApiServer(
        config, api_key=API_KEY, host="127.0.0.1", port=0, redis_url=redis_url, poll_interval=0.1
    )
    await asyncio.to_thread(server.start)
    http = httpx.AsyncClient(
        base_url=server.url + "/api/v1",
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=30.0,
    )
    return server, http, connect(redis_url)


@pytest.fixture
async def api(redis_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    keys = Keys(f"t{uuid.uuid4().hex[:10]}")
    config = Config(
        redis_url=redis_url,
        home=tmp_path,
        namespace=keys.namespace,
        partitions=PARTITIONS,
        secret_key=SECRET_KEY,
    )
    server, http, redis = await serve(config, redis_url)
    await ensure_partitions(redis, keys, PARTITIONS)  # as `hubsync up`, which serves the API, does
    yield Api(server, http, redis, keys, config, [])
    await http.aclose()
    await redis.aclose()
    await asyncio.to_thread(server.stop)


async def define_catalog(api: Api) -> None:
    await api.publish(
        [
            AudienceDefined(audience_id="a17", name="Abandon Basket"),
            AudienceDefined(audience_id="a18", name="VIP"),
            AttributeDefined(attribute_id="ltv", name="Lifetime value", value_type="number"),
            AttributeDefined(
                attribute_id="tier",
                name="Tier",
                value_type="enumeration",
                options=["gold", "silver"],
            ),
        ]
    )
    await api.project(
        [
            AudienceEntered(audience_id="a17", email="ada@example.com"),
            AudienceEntered(audience_id="a17", email="bob@example.com"),
            AttributeChanged(attribute_id="ltv", email="ada@example.com", value=1234.5),
        ]
    )


def create_body(token: str, emulator_url: str = "", **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": f"EU marketing {uuid.uuid4().hex[:6]}",
        "token": token,
        "plan": "professional",
        "audiences": ["a17"],
        "attributes": ["ltv"],
        "update_only": False,
    }
    if emulator_url:
        body["base_url"] = emulator_url
    body.update(changes)
    return body


def _sample_path(path: str) -> str:
    return re.sub(r"{[^}]+}", "x1", path).replace("{email}", "ada@example.com")


# --- serving -------------------------------------------------------------------------------------------


async def test_the_server_binds_loopback_by_default_and_keeps_its_key_in_hubsync_home(
    redis_url: str, tmp_path: Path
) -> None:
    config = Config(redis_url=redis_url, home=tmp_path, secret_key=SECRET_KEY)
    server = ApiServer.from_config(config, environ={"HUBSYNC_API_ADDRESS": "127.0.0.1:0"})
    try:
        await asyncio.to_thread(server.start)
        assert server.host == "127.0.0.1" and server.url.startswith("http://127.0.0.1:")
        key = (tmp_path / "api.key").read_text().strip()
        assert (tmp_path / "api.key").stat().st_mode & 0o777 == 0o600
        async with httpx.AsyncClient(base_url=server.url + "/api/v1", timeout=10) as http:
            assert (await http.get("/health")).status_code == 200
            ok = await http.get("/catalog", headers={"Authorization": f"Bearer {key}"})
            assert ok.status_code == 200
        with pytest.raises(ConfigError, match="cannot listen"):
            ApiServer.from_config(config, environ={}, host="127.0.0.1", port=server.port)
    finally:
        await asyncio.to_thread(server.stop)
    from hubsync.api.server import DEFAULT_HOST, DEFAULT_PORT

    assert (DEFAULT_HOST, DEFAULT_PORT) == ("127.0.0.1", 8077)


# --- auth ------------------------------------------------------------------------------------------


async def test_health_is_public_and_every_other_endpoint_answers_401_without_the_key(
    api: Api,
) -> None:
    anonymous = httpx.AsyncClient(base_url=api.url, timeout=10.0)
    wrong = httpx.AsyncClient(
        base_url=api.url, headers={"Authorization": "Bearer not-the-key"}, timeout=10.0
    )
    try:
        health = await anonymous.get("/health")
        assert health.status_code == 200 and health.json()["ok"] is True
        for op in ROUTES:
            if op.public:
                continue
            for client, why in ((anonymous, "no key"), (wrong, "wrong key")):
                response = await client.request(op.method, _sample_path(op.path), json={})
                assert response.status_code == 401, (op.method, op.path, why, response.text)
                body = response.json()
                assert body["error"] == "unauthorized" and body["message"], body
                assert response.headers["www-authenticate"].startswith("Bearer")
        basic = await anonymous.get("/catalog", headers={"Authorization": f"Basic {API_KEY}"})
        assert basic.status_code == 401
    finally:
        await anonymous.aclose()
        await wrong.aclose()
    assert await api.control_entries() == 0


async def test_unknown_paths_and_methods_answer_json_errors(api: Api) -> None:
    missing = await api.call("GET", "/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    wrong_method = await api.call("PUT", "/catalog")
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]


async def test_the_page_signs_in_once_and_its_state_changing_requests_need_the_csrf_token(
    api: Api,
) -> None:
    async with httpx.AsyncClient(base_url=api.url, timeout=10.0) as page:
        refused = await page.post("/session", json={"api_key": "guess"})
        assert refused.status_code == 401 and refused.json()["field"] == "api_key"
        assert "set-cookie" not in refused.headers
        bad = await page.post("/session", json={"key": API_KEY})
        assert bad.status_code == 400 and bad.json()["field"] == "key"

        signed = await page.post("/session", json={"api_key": API_KEY})
        assert signed.status_code == 200
        csrf = signed.json()["csrf_token"]
        cookies = signed.headers.get_list("set-cookie")
        session_cookie = next(c for c in cookies if c.startswith("hubsync_session="))
        assert "httponly" in session_cookie.lower()
        assert "samesite=strict" in session_cookie.lower()
        assert API_KEY not in " ".join(cookies) and API_KEY not in signed.text

        assert (await page.get("/activations")).status_code == 200  # the cookie alone reads
        forged = await page.post("/activations?dry_run=true", json={"plan": "starter"})
        assert forged.status_code == 403 and forged.json()["error"] == "csrf"
        wrong = await page.post(
            "/activations?dry_run=true", json={}, headers={"X-CSRF-Token": "0" * 32}
        )
        assert wrong.status_code == 403
        allowed = await page.post(
            "/activations?dry_run=true", json={}, headers={"X-CSRF-Token": csrf}
        )
        assert allowed.status_code == 200, allowed.text

        value = page.cookies["hubsync_session"]
        page.cookies.set("hubsync_session", value[:-1] + ("0" if value[-1] != "0" else "1"))
        tampered = await page.get("/activations")
        assert tampered.status_code == 401 and tampered.json()["error"] == "unauthorized"

        out = await page.delete("/session")
        assert out.status_code == 204
    assert await api.control_entries() == 0


async def test_the_openapi_document_is_valid_and_lists_every_route_with_its_types(
    api: Api,
) -> None:
    from openapi_spec_validator import validate

    response = await api.call("GET", "/openapi.json")
    assert response.status_code == 200
    document = response.json()
    validate(document)
    for op in ROUTES:
        assert op.method.lower() in document["paths"]["/api/v1" + op.path], op.path
    create = document["components"]["schemas"]["CreateActivation"]
    assert set(create["required"]) == {"name", "token"}
    assert {
        "plan",
        "audiences",
        "attributes",
        "update_only",
        "base_url",
        "api_version",
    } <= set(create["properties"])
    activation = document["components"]["schemas"]["Activation"]["properties"]
    assert "token" not in activation and "token_sealed" not in activation
    assert document["paths"]["/api/v1/health"]["get"]["security"] == []


# --- catalog, dry run, activations -----------------------------------------------------------------


async def test_the_catalog_lists_audiences_and_attributes_from_the_projections(api: Api) -> None:
    await define_catalog(api)
    response = await api.call("GET", "/catalog")
    assert response.status_code == 200
    body = response.json()
    assert {a["id"]: a["members"] for a in body["audiences"]} == {"a17": 2, "a18": 0}
    assert body["audiences"][0] == {"id": "a17", "name": "Abandon Basket", "members": 2}
    tier = next(t for t in body["attributes"] if t["id"] == "tier")
    assert tier["value_type"] == "enumeration" and tier["options"] == ["gold", "silver"]
    ltv = next(t for t in body["attributes"] if t["id"] == "ltv")
    assert ltv["options"] is None and ltv["contacts"] == 1


async def test_a_dry_run_answers_the_properties_and_the_plan_and_saves_nothing(api: Api) -> None:
    await define_catalog(api)
    response = await api.call(
        "POST",
        "/activations?dry_run=true",
        json={"plan": "starter", "audiences": ["a17", "nope"], "attributes": ["ltv"]},
    )
    assert response.status_code == 200, response.text
    plan = response.json()
    assert plan["dry_run"] is True
    names = {p["key"]: p for p in plan["properties"]}
    assert names["a:a17"]["name"] == "raptor_abandon_basket" and names["a:a17"]["contacts"] == 2
    assert names["t:ltv"]["type"] == "number"
    assert plan["calls"] >= 1 and plan["share_of_daily_budget"] > 0
    assert plan["unknown"] == ["audience nope"]
    bad = await api.call("POST", "/activations?dry_run=maybe", json={})
    assert bad.status_code == 400 and bad.json()["field"] == "dry_run"
    assert await api.control_entries() == 0


async def test_create_read_list_and_delete_an_activation_without_ever_showing_the_token(
    api: Api, emulator: EmulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await define_catalog(api)
    token = new_token()
    created = await api.call("POST", "/activations", json=create_body(token, emulator.url))
    assert created.status_code == 201, created.text
    activation = created.json()
    activation_id = activation["id"]
    assert created.headers["location"] == f"/api/v1/activations/{activation_id}"
    assert activation["plan"] == "professional" and activation["audiences"] == ["a17"]
    assert activation["attributes"] == ["ltv"] and activation["update_only"] is False
    assert activation["base_url"] == emulator.url and activation["api_version"] == "2026-03"
    assert activation["status"]["state"] == "starting"  # no actor runs in this test

    one = await api.call("GET", f"/activations/{activation_id}")
    assert one.status_code == 200 and one.json()["name"] == activation["name"]
    listed = await api.call("GET", "/activations")
    assert [a["id"] for a in listed.json()["activations"]] == [activation_id]

    defaults = await api.call(
        "POST", "/activations", json={"name": "defaults", "token": new_token()}
    )
    assert defaults.status_code == 201, defaults.text
    assert defaults.json()["base_url"] == "https://api.hubapi.com"
    assert defaults.json()["plan"] == "starter" and defaults.json()["api_version"] == "2026-03"

    deleted = await api.call("DELETE", f"/activations/{activation_id}")
    assert deleted.status_code == 200 and deleted.json()["changed"] is True
    assert "stays" in deleted.json()["message"]
    assert (await api.call("GET", f"/activations/{activation_id}")).status_code == 404

    secret = token.encode()
    assert not [c for c in api.seen if secret in c], "the token was in a response"
    assert not [v for v in await api.redis_values() if secret in v], "the token is in Redis"
    assert token not in caplog.text, "the token was logged"


async def test_bad_create_bodies_get_the_field_at_fault_and_never_reach_redis(api: Api) -> None:
    await define_catalog(api)
    token = new_token()
    cases: list[tuple[Any, int, str, str | None]] = [
        (None, 400, "invalid_body", None),
        (b"{not json", 400, "invalid_json", None),
        ([], 400, "invalid_body", None),
        ({"token": token}, 400, "invalid_body", "name"),
        ({"name": "x"}, 400, "invalid_body", "token"),
        ({"name": "", "token": token}, 400, "invalid_body", "name"),
        ({"name": "x", "token": "has a space"}, 400, "invalid_body", "token"),
        ({"name": "x", "token": token, "plan": "gold"}, 400, "invalid_body", "plan"),
        ({"name": "x", "token": token, "audiences": "a17"}, 400, "invalid_body", "audiences"),
        (
            {"name": "x", "token": token, "audiences": ["bad id!"]},
            400,
            "invalid_body",
            "audiences[0]",
        ),
        ({"name": "x", "token": token, "audience": ["a17"]}, 400, "invalid_body", "audience"),
        ({"name": "x", "token": token, "base_url": "ftp://h"}, 400, "invalid_body", "base_url"),
        ({"name": "x", "token": token, "api_version": "v9"}, 400, "invalid_body", "api_version"),
        ({"name": "x", "token": token, "update_only": "yes"}, 400, "invalid_body", "update_only"),
        (
            {"name": "x", "token": token, "audiences": ["a17", "a99"]},
            422,
            "unknown_audience",
            "audiences[1]",
        ),
        (
            {"name": "x", "token": token, "attributes": ["nope"]},
            422,
            "unknown_attribute",
            "attributes[0]",
        ),
    ]
    for body, status, error, field in cases:
        if body is None:
            response = await api.call("POST", "/activations")
        elif isinstance(body, bytes):
            response = await api.call("POST", "/activations", content=body)
        else:
            response = await api.call("POST", "/activations", json=body)
        assert response.status_code == status, (body, response.text)
        answer = response.json()
        assert answer["error"] == error and answer["message"], (body, answer)
        assert answer.get("field") == field, (body, answer)
    too_big = await api.call("POST", "/activations", content=b"{" + b" " * 70_000 + b"}")
    assert too_big.status_code == 413
    assert await api.control_entries() == 0, "a bad body reached the control stream"
    assert not [c for c in api.seen if token.encode() in c]

    first = await api.call("POST", "/activations", json={"name": "taken", "token": token})
    assert first.status_code == 201
    again = await api.call("POST", "/activations", json={"name": "taken", "token": token})
    assert again.status_code == 409 and again.json()["field"] == "name"
    assert await api.control_entries() == 1


async def test_pause_resume_resync_and_subscriptions_change_the_activation(api: Api) -> None:
    await define_catalog(api)
    created = await api.call("POST", "/activations", json=create_body(new_token()))
    activation_id = created.json()["id"]
    base = f"/activations/{activation_id}"

    paused = await api.call("POST", f"{base}/pause", json={"reason": "maintenance"})
    assert paused.status_code == 200 and paused.json()["changed"] is True
    assert paused.json()["activation"]["status"]["state"] == "paused"
    assert paused.json()["activation"]["pause_reason"] == "maintenance"
    again = await api.call("POST", f"{base}/pause")  # no body: the default reason
    assert again.status_code == 200 and again.json()["changed"] is False
    bad_reason = await api.call("POST", f"{base}/pause", json={"reason": 5})
    assert bad_reason.status_code == 400 and bad_reason.json()["field"] == "reason"
    resumed = await api.call("POST", f"{base}/resume")
    assert resumed.json()["changed"] is True and resumed.json()["activation"]["paused"] is False
    resync = await api.call("POST", f"{base}/resync")
    assert resync.status_code == 200 and resync.json()["changed"] is True

    added = await api.call("POST", f"{base}/audiences", json={"id": "a18"})
    assert added.status_code == 200 and added.json()["activation"]["audiences"] == ["a17", "a18"]
    unknown = await api.call("POST", f"{base}/audiences", json={"id": "a99"})
    assert unknown.status_code == 422 and unknown.json() == {
        "error": "unknown_audience",
        "message": unknown.json()["message"],
        "field": "id",
    }
    assert "a99" in unknown.json()["message"]
    bad = await api.call("POST", f"{base}/audiences", json={"id": ""})
    assert bad.status_code == 400 and bad.json()["field"] == "id"
    removed = await api.call("DELETE", f"{base}/audiences/a17")
    assert removed.status_code == 200 and removed.json()["activation"]["audiences"] == ["a18"]
    not_synced = await api.call("DELETE", f"{base}/audiences/a17")
    assert not_synced.status_code == 404

    added = await api.call("POST", f"{base}/attributes", json={"id": "tier"})
    assert added.json()["activation"]["attributes"] == ["ltv", "tier"]
    assert (await api.call("POST", f"{base}/attributes", json={"id": "zz"})).status_code == 422
    removed = await api.call("DELETE", f"{base}/attributes/ltv")
    assert removed.json()["activation"]["attributes"] == ["tier"]

    state = Activations()
    await state.refresh(api.redis, api.keys)
    spec = state.by_id[activation_id]
    assert set(spec.audiences) == {"a18"} and set(spec.attributes) == {"tier"}


async def test_unknown_activation_and_job_ids_answer_404(api: Api) -> None:
    before = await api.control_entries()
    for method, path, body in [
        ("GET", "/activations/act_nope", None),
        ("DELETE", "/activations/act_nope", None),
        ("POST", "/activations/act_nope/pause", None),
        ("POST", "/activations/act_nope/resume", None),
        ("POST", "/activations/act_nope/resync", None),
        ("POST", "/activations/act_nope/verify", None),
        ("POST", "/activations/act_nope/audiences", {"id": "a17"}),
        ("DELETE", "/activations/act_nope/audiences/a17", None),
        ("POST", "/activations/act_nope/attributes", {"id": "ltv"}),
        ("DELETE", "/activations/act_nope/attributes/ltv", None),
        ("GET", "/activations/..%2F..%2Fetc", None),
        ("GET", "/jobs/job_nope", None),
    ]:
        response = await api.call(method, path, json=body)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"] == "not_found" and response.json()["message"]
    assert await api.control_entries() == before


async def test_verify_of_an_activation_that_has_not_synced_is_refused(api: Api) -> None:
    await define_catalog(api)
    activation_id = (await api.call("POST", "/activations", json=create_body(new_token()))).json()[
        "id"
    ]
    response = await api.call("POST", f"/activations/{activation_id}/verify", json={"rate": 5})
    assert response.status_code == 409 and response.json()["error"] == "not_synced"
    bad = await api.call("POST", f"/activations/{activation_id}/verify", json={"rate": 0})
    assert bad.status_code == 400 and bad.json()["field"] == "rate"


# --- connections/test against the emulator -------------------------------------------------------------


async def test_connection_test_reports_scopes_account_and_limits(
    api: Api, emulator: EmulatorServer
) -> None:
    emulator.admin.reset()
    emulator.admin.configure(plan="professional")
    full, partial = new_token(), new_token()
    emulator.admin.register_token(full)
    emulator.admin.register_token(
        partial, ["crm.objects.contacts.read", "crm.objects.contacts.write"]
    )
    try:
        ok = await api.call(
            "POST", "/connections/test", json={"token": full, "base_url": emulator.url}
        )
        assert ok.status_code == 200, ok.text
        body = ok.json()
        assert body["ok"] is True and body["missing_scopes"] == []
        assert body["checked_with"] == "token_info" and body["hub_id"] == 46_000_001
        assert body["limits"]["per_window"] == 190 and body["limits"]["daily"] == 625_000
        assert body["limits"]["plan"] == "professional"

        lacking = await api.call(
            "POST", "/connections/test", json={"token": partial, "base_url": emulator.url}
        )
        body = lacking.json()
        assert body["ok"] is False and body["error"] == "missing_scopes"
        assert body["missing_scopes"] == ["crm.schemas.contacts.read", "crm.schemas.contacts.write"]
        assert "crm.schemas.contacts.write" in body["message"]

        # A token access-token-info does not cover (a service key): probes, and what no
        # harmless call can check is listed as unverified, never as granted.
        emulator.admin.configure(token_info=False)
        probed_partial = await api.call(
            "POST", "/connections/test", json={"token": partial, "base_url": emulator.url}
        )
        body = probed_partial.json()
        assert body["ok"] is False and body["missing_scopes"] == ["crm.schemas.contacts.write"]
        assert "crm.objects.contacts.write" in body["unverified_scopes"]
        assert "crm.objects.contacts.write" not in body["granted_scopes"]
        assert emulator.admin.properties()["groups"][-1]["name"] != "raptor_smart_advisor_cdp"

        probed = await api.call(
            "POST", "/connections/test", json={"token": full, "base_url": emulator.url}
        )
        body = probed.json()
        assert body["checked_with"] == "probes" and body["ok"] is True
        assert body["hub_id"] is None and body["missing_scopes"] == []
        # A property read passes with schemas read OR objects read, so it proves neither alone.
        assert body["unverified_scopes"] == [
            "crm.objects.contacts.write",
            "crm.schemas.contacts.read",
        ]
        assert body["granted_scopes"] == [
            "crm.objects.contacts.read",
            "crm.schemas.contacts.write",  # it created the property group hubsync needs anyway
        ]
        assert body["limits"]["per_window"] == 190
        emulator.admin.configure(token_info=True, open_auth=False)  # unknown tokens: 401
        refused = await api.call(
            "POST", "/connections/test", json={"token": new_token(), "base_url": emulator.url}
        )
        assert refused.status_code == 200
        body = refused.json()
        assert body["ok"] is False and body["error"] == "token_refused"
        assert "401" in body["message"] and body["granted_scopes"] == []
    finally:
        emulator.admin.reset()

    unreachable = await api.call(
        "POST", "/connections/test", json={"token": full, "base_url": "http://127.0.0.1:9"}
    )
    assert unreachable.status_code == 502 and unreachable.json()["field"] == "base_url"
    bad = await api.call("POST", "/connections/test", json={"base_url": emulator.url})
    assert bad.status_code == 400 and bad.json()["field"] == "token"
    for token in (full, partial):
        assert not [c for c in api.seen if token.encode() in c]
    assert await api.control_entries() == 0


# --- dead letters and contacts ------------------------------------------------------------------------


async def park(api: Api, n: int, **fields: str) -> None:
    letters = DeadLetters(api.redis, api.keys)
    for i in range(n):
        await letters.park([DeadLetter(api.keys.changes(0), f"1-{i}", f"reason {i}", b"{}")])
    if fields:
        await api.redis.xadd(
            api.keys.dead,
            {b"stream": b"s", b"id": b"9-9", b"reason": b"tagged", b"raw": b"{}", **fields},
        )


async def test_dead_letters_are_paged_newest_first_and_filtered(api: Api) -> None:
    await park(api, 5)
    await park(api, 0, audience_id="a17", email="ada@example.com")
    await park(api, 0, attribute_id="ltv")
    first = await api.call("GET", "/dead-letters", params={"limit": 3})
    assert first.status_code == 200
    page = first.json()
    assert page["total"] == 7 and len(page["dead_letters"]) == 3
    assert [d["reason"] for d in page["dead_letters"]] == ["tagged", "tagged", "reason 4"]
    assert page["dead_letters"][0]["attribute_id"] == "ltv"
    rest = await api.call(
        "GET", "/dead-letters", params={"limit": 10, "before": page["next_before"]}
    )
    assert [d["reason"] for d in rest.json()["dead_letters"]] == [
        f"reason {i}" for i in (3, 2, 1, 0)
    ]
    assert rest.json()["next_before"] is None
    audience = (await api.call("GET", "/dead-letters", params={"audience_id": "a17"})).json()
    assert [d["email"] for d in audience["dead_letters"]] == ["ada@example.com"]
    attribute = (await api.call("GET", "/dead-letters", params={"attribute_id": "ltv"})).json()
    assert (
        len(attribute["dead_letters"]) == 1 and attribute["dead_letters"][0]["audience_id"] is None
    )
    for params, field in [
        ({"limit": 0}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"before": "yesterday"}, "before"),
        ({"audience_id": "bad id"}, "audience_id"),
    ]:
        bad = await api.call("GET", "/dead-letters", params=params)
        assert bad.status_code == 400 and bad.json()["field"] == field, params


async def test_a_contact_lookup_shows_cdp_state_and_the_dead_letters_naming_the_email(
    api: Api,
) -> None:
    await define_catalog(api)
    activation_id = (await api.call("POST", "/activations", json=create_body(new_token()))).json()[
        "id"
    ]
    await park(api, 2)
    await api.redis.xadd(
        api.keys.dead,
        {
            b"stream": b"s",
            b"id": b"1-1",
            b"reason": b"wrong value type",
            b"raw": b'{"type":"attribute_changed","email":"ADA@example.com"}',
        },
    )
    response = await api.call("GET", "/contacts/ADA@Example.com")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["email"] == "ada@example.com"
    assert {a["id"]: a["member"] for a in body["audiences"]} == {"a17": True, "a18": False}
    assert {t["id"]: t["value"] for t in body["attributes"]} == {"ltv": 1234.5, "tier": None}
    [activation] = body["activations"]
    assert activation["id"] == activation_id and activation["state"] == "starting"
    assert {p["key"]: p["cdp"] for p in activation["properties"]} == {
        "a:a17": "true",
        "t:ltv": "1234.5",
    }
    assert activation["contact_pending"] is None  # no status yet: not known
    assert [d["reason"] for d in body["dead_letters"]] == ["wrong value type"]
    hubspot = await api.call("GET", "/contacts/ada@example.com", params={"hubspot": "true"})
    assert "not created" in hubspot.json()["activations"][0]["hubspot_error"]
    bad = await api.call("GET", "/contacts/not-an-email")
    assert bad.status_code == 400 and bad.json()["field"] == "email"


# --- Server-Sent Events ------------------------------------------------------------------------------------


async def next_event(lines: AsyncIterator[str], kind: str) -> dict[str, Any]:
    event = None
    async for line in lines:
        if line.startswith("event: "):
            event = line[len("event: ") :]
        elif line.startswith("data: ") and event == kind:
            return json.loads(line[len("data: ") :])
    raise AssertionError("the event stream ended")


async def test_events_stream_status_changes_without_polling_each_activation(api: Api) -> None:
    await define_catalog(api)
    activation_id = (await api.call("POST", "/activations", json=create_body(new_token()))).json()[
        "id"
    ]
    async with api.http.stream("GET", "/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.aiter_lines()
        first = await asyncio.wait_for(next_event(lines, "activation"), 10)
        assert first["id"] == activation_id and first["status"]["state"] == "starting"
        await api.call("POST", f"/activations/{activation_id}/pause")
        changed = await asyncio.wait_for(next_event(lines, "activation"), 10)
        assert changed["status"]["state"] == "paused"
        await api.call("DELETE", f"/activations/{activation_id}")
        gone = await asyncio.wait_for(next_event(lines, "deleted"), 10)
        assert gone == {"id": activation_id}


# --- with the service running (Ray) ------------------------------------------------------------------


async def test_end_to_end_create_watch_verify_and_look_up_a_contact(
    hubsync: Hubsync, redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    config = Config(
        redis_url=redis_url,
        home=tmp_path,
        namespace=hubsync.namespace,
        partitions=hubsync.settings.partitions,
        secret_key=SECRET_KEY,
    )
    server, http, redis = await serve(config, redis_url)
    api = Api(server, http, redis, hubsync.keys, config, [])
    try:
        emails = [f"c{i}@example.com" for i in range(30)]
        await hubsync.publish(
            [
                AudienceDefined(audience_id="vip", name="VIP"),
                *(AudienceEntered(audience_id="vip", email=e) for e in emails),
            ]
        )
        await hubsync.members_projected("vip", len(emails))
        token = new_token()
        created = await api.call(
            "POST",
            "/activations",
            json={
                "name": "e2e",
                "token": token,
                "audiences": ["vip"],
                "base_url": hubsync.emulator.url,
            },
        )
        assert created.status_code == 201, created.text
        activation_id = created.json()["id"]

        async def in_step() -> dict[str, Any] | None:
            view = (await api.call("GET", f"/activations/{activation_id}")).json()
            status = view["status"]
            backfills = status.get("backfills") or {}
            done = backfills and all(b["done"] >= b["total"] for b in backfills.values())
            return (
                view
                if status["state"] == "running" and status.get("pending") == 0 and done
                else None
            )

        deadline = time.monotonic() + 90
        while (view := await in_step()) is None:
            assert time.monotonic() < deadline, "the backfill did not finish"
            await asyncio.sleep(0.3)
        assert view["status"]["stale"] is False and view["budget"]["fingerprint"]

        started = await api.call("POST", f"/activations/{activation_id}/verify", json={"rate": 50})
        assert started.status_code == 202, started.text
        job = started.json()
        assert started.headers["location"] == f"/api/v1/jobs/{job['id']}"
        deadline = time.monotonic() + 60
        while job["state"] == "running":
            assert time.monotonic() < deadline, "the verify job did not finish"
            await asyncio.sleep(0.2)
            job = (await api.call("GET", f"/jobs/{job['id']}")).json()
        assert job["state"] == "done", job
        assert job["result"]["checked"] == len(emails) and job["result"]["differing"] == 0
        assert job["done"] == job["total"] == len(emails) and job["progress"] == 1.0

        lookup = await api.call("GET", "/contacts/c3@example.com", params={"hubspot": "true"})
        assert lookup.status_code == 200, lookup.text
        [activation] = lookup.json()["activations"]
        assert activation["hubspot_read"] is True and activation["hubspot_found"] is True
        [prop] = activation["properties"]
        assert prop == {
            "key": "a:vip",
            "property": "raptor_vip",
            "cdp": "true",
            "hubspot": "true",
            "in_step": True,
        }
        assert activation["differences"] == [] and activation["contact_pending"] is False
        missing = await api.call("GET", "/contacts/nobody@example.com", params={"hubspot": "1"})
        assert missing.json()["activations"][0]["differences"] == ["the contact is not in HubSpot"]

        secret = token.encode()
        assert not [c for c in api.seen if secret in c], "the token was in a response"
        assert not [v for v in await api.redis_values() if secret in v], "the token is in Redis"
        assert token not in caplog.text, "the token was logged"
    finally:
        await http.aclose()
        await redis.aclose()
        await asyncio.to_thread(server.stop)

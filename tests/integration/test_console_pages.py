"""The console's pages over real HTTP (uvicorn on loopback, a real Redis; no Ray, no browser):
signed out they lead to the sign-in form, signed in they render what the API knows, names are
escaped, nothing is loaded from elsewhere, and no page holds a HubSpot token."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.integration.test_api import API_KEY, Api, create_body, define_catalog, new_token
from tests.integration.test_api import api as api  # the fixture: a server over a fresh namespace

PAGES = ("/", "/activations/new", "/contacts?email=ada@example.com")


async def _signed_in(server: Api) -> httpx.AsyncClient:
    client = httpx.AsyncClient(base_url=server.server.url, timeout=30.0)
    answer = await client.post("/api/v1/session", json={"api_key": API_KEY})
    assert answer.status_code == 200
    return client


async def test_signed_out_pages_lead_to_sign_in_and_fragments_refuse(api: Api) -> None:
    async with httpx.AsyncClient(base_url=api.server.url, timeout=30.0) as anonymous:
        for path in PAGES:
            answer = await anonymous.get(path)
            assert answer.status_code == 303, path
            assert answer.headers["location"].startswith("/signin?next=/")
        # a forged session cookie is no session
        anonymous.cookies.set("hubsync_session", "9999999999.abc.def")
        assert (await anonymous.get("/")).status_code == 303
        assert (await anonymous.get("/fragments/rows/x1")).status_code == 401
        sign_in = await anonymous.get("/signin?next=//evil.example/")
        assert sign_in.status_code == 200
        assert 'data-next="/"' in sign_in.text  # only places on this server
        assert '<label for="api-key">API key</label>' in sign_in.text
        static = await anonymous.get("/static/console.js")
        assert static.status_code == 200 and "EventSource" in static.text


async def test_pages_render_escaped_with_no_token_and_nothing_from_elsewhere(api: Api) -> None:
    await define_catalog(api)
    token = new_token()
    body = create_body(token, name='<script>alert("x")</script> EU')
    created = await api.call("POST", "/activations", json=body)
    assert created.status_code == 201, created.text
    activation_id = created.json()["id"]
    client = await _signed_in(api)
    try:
        pages: dict[str, Any] = {}
        for path in (*PAGES, f"/activations/{activation_id}", f"/fragments/rows/{activation_id}"):
            answer = await client.get(path)
            assert answer.status_code == 200, (path, answer.text[:500])
            pages[path] = answer
            assert token not in answer.text
            assert "<script>alert" not in answer.text
            if not path.startswith("/fragments"):
                csp = answer.headers["content-security-policy"]
                assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
                # every script, stylesheet and image comes from this server
                for ref in re.findall(r'(?:src|href)="([^"]+)"', answer.text):
                    assert ref.startswith(("/", "#")), (path, ref)
                # every field has a label
                for field in re.findall(r'<(?:input|select)[^>]*\bid="([^"]+)"', answer.text):
                    assert f'for="{field}"' in answer.text, (path, field)
        listing = pages["/"].text
        assert "&lt;script&gt;alert" in listing and f'id="row-{activation_id}"' in listing
        new = pages["/activations/new"].text
        assert (
            "Abandon Basket" in new and "2 members" in new and "crm.schemas.contacts.write" in new
        )
        page = pages[f"/activations/{activation_id}"].text
        assert "Raptor Smart Advisor CDP" in page and "raptor_abandon_basket" in page
        assert "properties and the values they hold stay in place" in page  # delete's confirmation
        contact = pages["/contacts?email=ada@example.com"].text
        assert "Abandon Basket" in contact and "member" in contact
        bad = await client.get("/contacts", params={"email": "not an email"})
        assert bad.status_code == 200 and "is not an email address" in bad.text
        missing = await client.get("/activations/nope")
        assert missing.status_code == 404 and "No such activation" in missing.text
        history = await api.call("GET", f"/activations/{activation_id}/history")
        assert history.status_code == 200 and history.json()["id"] == activation_id
        assert (await api.call("GET", "/activations/nope/history")).status_code == 404
    finally:
        await client.aclose()

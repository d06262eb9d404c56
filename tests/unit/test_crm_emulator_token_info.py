"""The emulator's `access-token-info`: a registered token's account, app and scopes; a clear
refusal for an unknown token or a bad body; and the switch that emulates a token it does not
cover (service keys, UNVERIFIED)."""

from __future__ import annotations

import msgspec

from crm.emulator import ALL_SCOPES, HubSpotState
from crm.tokens import token_fingerprint

READ_ONLY = ["crm.objects.contacts.read", "crm.schemas.contacts.read"]


def _state() -> HubSpotState:
    return HubSpotState(tokens={"pat-full": ALL_SCOPES, "pat-read": READ_ONLY}, clock=lambda: 1.0)


def test_a_registered_token_gets_its_account_app_and_scopes() -> None:
    state = _state()
    answer = state.token_info(msgspec.json.encode({"tokenKey": "pat-read"}))
    assert answer.status == 200
    assert answer.body["hubId"] == state.config.hub_id
    assert answer.body["scopes"] == READ_ONLY
    assert answer.body["appId"] == int(token_fingerprint("pat-read")[:6], 16)
    assert state.token_info(msgspec.json.encode({"tokenKey": "pat-full"})).body["scopes"] == sorted(
        ALL_SCOPES
    )
    assert state.requests_seen()[-1]["token"] == token_fingerprint("pat-full")


def test_an_unknown_token_is_refused_and_a_bad_body_is_named() -> None:
    state = _state()
    refused = state.token_info(msgspec.json.encode({"tokenKey": "pat-nope"}))
    assert refused.status == 401 and refused.body["category"] == "INVALID_AUTHENTICATION"
    for body in (b"", b"{", b"[]", b'{"tokenKey": 5}', b'{"token": "pat-full"}'):
        bad = state.token_info(body)
        assert bad.status == 400 and bad.body["category"] == "VALIDATION_ERROR", body
    assert "pat-nope" not in str(state.requests_seen())


def test_a_token_it_does_not_cover_gets_404() -> None:
    state = _state()
    state.configure({"token_info": False})
    assert state.token_info(msgspec.json.encode({"tokenKey": "pat-full"})).status == 404

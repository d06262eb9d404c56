"""The API's pure parts: keys and sessions on a fake clock, the address, the computed state,
reading msgspec's errors into the field at fault. No Redis, no HTTP, no sleeping."""

from __future__ import annotations

import stat
from pathlib import Path

import msgspec
import pytest

from actors.status import ActivationState, ActivationStatus
from events.activations import ActivationSpec
from hubsync.api.auth import Authenticator, load_or_create_api_key
from hubsync.api.protocol import field_of
from hubsync.api.schemas import CreateActivation
from hubsync.api.server import api_address
from hubsync.config import ConfigError
from hubsync.token_check import plan_for_limits
from hubsync.views import STALE_AFTER_S, live_status

KEY = "k" * 32


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_api_key_compares_whole_and_the_bearer_scheme_is_required() -> None:
    auth = Authenticator(KEY)
    assert auth.key_matches(KEY)
    assert not auth.key_matches(KEY[:-1]) and not auth.key_matches(KEY + "x")
    assert auth.bearer_matches(f"Bearer {KEY}") and auth.bearer_matches(f"bearer  {KEY} ")
    assert not auth.bearer_matches(f"Basic {KEY}") and not auth.bearer_matches(KEY)
    assert KEY not in repr(auth)


def test_a_session_lasts_its_time_and_a_changed_byte_or_a_new_key_ends_it() -> None:
    clock = FakeClock()
    auth = Authenticator(KEY, clock=clock, session_seconds=60)
    cookie, csrf, expires = auth.new_session()
    assert KEY not in cookie and expires == clock.now + 60
    assert auth.session_valid(cookie)
    assert auth.csrf_valid(cookie, csrf) and not auth.csrf_valid(cookie, csrf[:-1] + "x")
    other, other_csrf, _ = auth.new_session()
    assert not auth.csrf_valid(cookie, other_csrf), "a CSRF token belongs to its session"
    for forged in (cookie[:-1] + ("0" if cookie[-1] != "0" else "1"), "", "a.b.c", "9" * 40):
        assert not auth.session_valid(forged), forged
    assert not Authenticator("another key " * 3, clock=clock).session_valid(cookie)
    clock.now += 61
    assert not auth.session_valid(cookie) and not auth.session_valid(other)


def test_the_api_key_comes_from_the_environment_or_is_created_once_with_mode_0600(
    tmp_path: Path,
) -> None:
    assert load_or_create_api_key(tmp_path, {"HUBSYNC_API_KEY": KEY}) == KEY
    assert not (tmp_path / "api.key").exists()
    with pytest.raises(ValueError, match="too short"):
        load_or_create_api_key(tmp_path, {"HUBSYNC_API_KEY": "short"})
    created = load_or_create_api_key(tmp_path / "home", {})
    path = tmp_path / "home" / "api.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(created) >= 32
    assert load_or_create_api_key(tmp_path / "home", {}) == created


def test_the_api_address_flags_win_over_the_environment_over_the_default() -> None:
    assert api_address({}) == ("127.0.0.1", 8077)
    env = {"HUBSYNC_API_ADDRESS": "127.0.0.2:9000"}
    assert api_address(env) == ("127.0.0.2", 9000)
    assert api_address(env, host="127.0.0.3") == ("127.0.0.3", 9000)
    assert api_address(env, port=0) == ("127.0.0.2", 0)
    assert api_address({"HUBSYNC_API_ADDRESS": "[::1]:8080"}) == ("::1", 8080)
    for bad in ("8077", "host:", ":80", "h:eighty"):
        with pytest.raises(ConfigError, match="HOST:PORT"):
            api_address({"HUBSYNC_API_ADDRESS": bad})
    with pytest.raises(ConfigError, match="out of range"):
        api_address({}, port=70000)


def _spec(paused: bool = False) -> ActivationSpec:
    return ActivationSpec(
        activation_id="act_1",
        name="n",
        token_sealed="sealed",
        token_fingerprint="f" * 12,
        base_url="http://127.0.0.1:1",
        api_version="2026-03",
        plan="starter",
        mode="upsert",
        paused=paused,
    )


def test_the_state_a_reader_sees_is_computed_from_the_control_stream_and_the_status_age() -> None:
    now = 1_000.0
    fresh = ActivationStatus(state=ActivationState.RUNNING, pending=3, updated_at=now - 1)
    old = msgspec.structs.replace(fresh, updated_at=now - STALE_AFTER_S - 1)
    assert live_status(_spec(), None, now) == {
        "state": "starting",
        "stale": False,
        "reported_state": None,
    }
    assert live_status(_spec(), fresh, now)["state"] == "running"
    stale = live_status(_spec(), old, now)
    assert stale["state"] == "stale" and stale["stale"] and stale["reported_state"] == "running"
    assert stale["pending"] == 3, "the published fields are kept"
    assert live_status(_spec(paused=True), fresh, now)["state"] == "paused"
    assert live_status(_spec(paused=True), old, now)["state"] == "paused"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{}", "name"),
        (b'{"name": "x", "token": "t0000000", "plan": "gold"}', "plan"),
        (b'{"name": "x", "token": "t0000000", "audiences": ["ok", "bad id"]}', "audiences[1]"),
        (b'{"name": "x", "token": "t0000000", "nope": 1}', "nope"),
    ],
)
def test_a_validation_error_names_the_field_at_fault(body: bytes, field: str) -> None:
    with pytest.raises(msgspec.ValidationError) as caught:
        msgspec.json.decode(body, type=CreateActivation)
    assert field_of(str(caught.value)) == field


def test_a_validation_error_about_the_token_does_not_quote_it() -> None:
    secret = "pat na1 secret with spaces"
    with pytest.raises(msgspec.ValidationError) as caught:
        msgspec.json.decode(
            msgspec.json.encode({"name": "x", "token": secret}), type=CreateActivation
        )
    assert secret not in str(caught.value) and field_of(str(caught.value)) == "token"


def test_the_plan_is_read_from_the_limits_hubspot_sends() -> None:
    assert plan_for_limits(100, 250_000) == "starter"
    assert plan_for_limits(190, 625_000) == "professional"
    assert plan_for_limits(190, 1_000_000) == "enterprise"
    assert plan_for_limits(250, 2_000_000) == "addon"
    assert plan_for_limits(None, None) is None and plan_for_limits(120, 1) is None

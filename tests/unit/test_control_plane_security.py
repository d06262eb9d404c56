"""Tokens cannot be redirected or leaked: checked where they enter, sealed for one activation,
refused over plain http to another host; the control plane's decisions about shared tokens."""

from __future__ import annotations

import re
from typing import Any

import pytest
from cryptography.fernet import Fernet

from actors.governor import GovernorCore
from actors.shells import Settings
from crm.tokens import token_fingerprint
from events.activations import (
    Activations,
    ActivationSpec,
    CommandRejected,
    base_url_problem,
    new_activation,
)
from events.memory import MemoryStorage
from events.model import ActivationCreated, ActivationDeleted, TokenResealed, encode
from events.secrets import SEALED_PREFIX, Sealer, SecretError, TokenError, check_token
from events.streams import Keys
from hubsync.config import Config, ConfigError

KEY = Fernet.generate_key().decode()
TOKEN = "pat-na1-0b8e2c4d-1111-2222-3333-444455556666"
EMULATOR = "http://127.0.0.1:8089"


def created(activation_id: str = "act1", **changes: Any) -> ActivationCreated:
    fields: dict[str, Any] = {
        "activation_id": activation_id,
        "name": activation_id,
        "token_sealed": Sealer(KEY).seal(TOKEN, activation_id=activation_id, base_url=EMULATOR),
        "token_fingerprint": token_fingerprint(TOKEN),
        "base_url": EMULATOR,
        "api_version": "2026-03",
        "plan": "starter",
    }
    return ActivationCreated(**(fields | changes))


def folded(*events: Any) -> Activations:
    state = Activations()
    for pos, event in enumerate(events, start=1):
        state.evolve(event, pos)
    return state


# --- 1. a token is checked where it enters -----------------------------------------------------


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        ("pat-na1-abc def", "whitespace (a space, tab or line break) at position 12"),
        ("pat-na1-abc\ndef", "whitespace"),
        ("pat-na1-abc\tdef", "whitespace"),
        ("pat-na1-abc\x00def", "control character"),
        ("pat-na1-abc\x7fdef", "control character"),
        ("pat-na1-abcé", "non-ASCII"),
        ("pat-na1-abc\u200bdef", "non-ASCII"),
        ("pat", "3 characters long"),
        ("", "0 characters long"),
        ("p" * 1025, "1025 characters long"),
    ],
)
def test_a_token_that_cannot_be_a_hubspot_token_is_refused_without_showing_it(
    token: str, problem: str
) -> None:
    for enter in (
        lambda: check_token(token),
        lambda: Sealer(KEY).seal(token, activation_id="act1", base_url=EMULATOR),
        lambda: new_activation(Sealer(KEY), name="n", token=token, base_url=EMULATOR),
    ):
        with pytest.raises(TokenError, match=re.escape(problem)) as caught:
            enter()
        if len(token) > 3:
            assert token not in str(caught.value) and "abc" not in str(caught.value)


def test_a_plausible_token_passes() -> None:
    assert check_token(TOKEN) == TOKEN
    assert check_token("pat-1") == "pat-1"  # the emulator's short test tokens


# --- 2. a sealed token opens only for its activation, base URL and fingerprint ----------------


def test_a_sealed_token_is_versioned_and_opens_for_its_own_activation() -> None:
    sealer = Sealer(KEY)
    sealed = sealer.seal(TOKEN, activation_id="act1", base_url=EMULATOR)
    assert sealed.startswith(SEALED_PREFIX) and TOKEN not in sealed
    fingerprint = token_fingerprint(TOKEN)
    opened = sealer.unseal(sealed, activation_id="act1", base_url=EMULATOR, fingerprint=fingerprint)
    assert opened == TOKEN


@pytest.mark.parametrize(
    "binding",
    [
        {"activation_id": "act2"},
        {"base_url": "https://evil.example"},
        {"base_url": EMULATOR + "/"},
        {"fingerprint": token_fingerprint("pat-na1-another-token")},
    ],
)
def test_a_sealed_token_does_not_open_for_another_activation_url_or_token(
    binding: dict[str, str],
) -> None:
    sealer = Sealer(KEY)
    sealed = sealer.seal(TOKEN, activation_id="act1", base_url=EMULATOR)
    where = {"activation_id": "act1", "base_url": EMULATOR, "fingerprint": token_fingerprint(TOKEN)}
    with pytest.raises(SecretError, match="does not open for this activation") as caught:
        sealer.unseal(sealed, **(where | binding))
    assert TOKEN not in str(caught.value)


def test_a_sealed_token_does_not_open_with_another_key_or_when_edited() -> None:
    sealed = Sealer(KEY).seal(TOKEN, activation_id="act1", base_url=EMULATOR)
    where = {"activation_id": "act1", "base_url": EMULATOR, "fingerprint": token_fingerprint(TOKEN)}
    with pytest.raises(SecretError):
        Sealer(Fernet.generate_key()).unseal(sealed, **where)
    flipped = sealed[:-3] + ("A" if sealed[-3] != "A" else "B") + sealed[-2:]
    with pytest.raises(SecretError):
        Sealer(KEY).unseal(flipped, **where)
    with pytest.raises(SecretError):
        Sealer(KEY).unseal(SEALED_PREFIX + "not base64!", **where)


def test_a_legacy_sealed_token_still_opens_but_only_under_its_own_fingerprint() -> None:
    sealer = Sealer(KEY)
    legacy = sealer.seal_legacy(TOKEN)
    assert not legacy.startswith(SEALED_PREFIX)
    opened = sealer.unseal(
        legacy, activation_id="any", base_url=EMULATOR, fingerprint=token_fingerprint(TOKEN)
    )
    assert opened == TOKEN
    with pytest.raises(SecretError, match="control stream was edited"):
        sealer.unseal(legacy, activation_id="any", base_url=EMULATOR, fingerprint="0123456789ab")


def test_resealing_replaces_a_legacy_token_with_one_bound_to_the_activation() -> None:
    sealer = Sealer(KEY)
    state = folded(created(token_sealed=sealer.seal_legacy(TOKEN)))
    spec = state.by_id["act1"]
    resealed = TokenResealed(
        activation_id="act1",
        token_sealed=sealer.seal(spec.open_token(sealer), activation_id="act1", base_url=EMULATOR),
    )
    assert state.decide(resealed) == [resealed]
    state.evolve(resealed, 2)
    assert spec.token_sealed == resealed.token_sealed
    assert spec.open_token(sealer) == TOKEN
    assert state.decide(resealed) == []  # already in the current format: nothing to do
    # A reseal back to the unbound format is refused, and skipped if written around `decide`.
    legacy_again = TokenResealed(activation_id="act1", token_sealed=sealer.seal_legacy(TOKEN))
    with pytest.raises(CommandRejected, match="current format"):
        state.decide(legacy_again)
    state.evolve(legacy_again, 3)
    assert spec.token_sealed == resealed.token_sealed


# --- 3. tokens go over https, or plain http to loopback only ---------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://api.hubapi.com",
        "https://hubspot.internal:8443/base",
        "http://127.0.0.1:8089",
        "http://127.9.9.9",
        "http://[::1]:8089",
        "http://localhost:8089",
        "http://LOCALHOST",
    ],
)
def test_base_urls_a_token_may_go_to(url: str) -> None:
    assert base_url_problem(url) is None


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://api.hubapi.com", "only over https://"),
        ("http://10.0.0.5:8089", "only over https://"),
        ("http://0.0.0.0:8089", "only over https://"),
        ("http://localhost.evil.example", "only over https://"),
        ("http://[::ffff:8.8.8.8]", "only over https://"),
        ("ftp://127.0.0.1", "only over https://"),
        ("api.hubapi.com", "names no host"),
        ("https://user:pass@api.hubapi.com", "must not carry credentials"),
        ("https://api.hubapi.com:notaport", "is not a URL"),
    ],
)
def test_base_urls_a_token_must_not_go_to(url: str, problem: str) -> None:
    assert problem in (base_url_problem(url) or "")
    with pytest.raises(CommandRejected, match=re.escape(problem)):
        new_activation(Sealer(KEY), name="n", token=TOKEN, base_url=url)
    with pytest.raises(CommandRejected, match=re.escape(problem)):
        Activations().decide(created(base_url=url))


def test_a_forged_entry_pointing_at_plain_http_elsewhere_is_not_folded() -> None:
    forged = created("act9", base_url="http://evil.example")
    assert "act9" not in folded(forged).by_id
    spec = ActivationSpec(
        activation_id="act9",
        name="x",
        token_sealed=forged.token_sealed,
        token_fingerprint=forged.token_fingerprint,
        base_url="http://evil.example",
        api_version="2026-03",
        plan="starter",
        mode="upsert",
    )
    with pytest.raises(SecretError, match="only over https"):
        spec.open_token(Sealer(KEY))


# --- the RateGovernor opens only a token sealed for the activation it reads it from ------------


async def _governor_after(*events: Any) -> GovernorCore:
    storage = MemoryStorage(Keys("unit"))
    for event in events:
        await storage.activations.append(encode(event))
    governor = GovernorCore(storage, token_fingerprint(TOKEN), secret_key=KEY)
    await governor.refresh()
    return governor


async def test_the_governor_opens_a_token_sealed_for_its_activation() -> None:
    governor = await _governor_after(created())
    assert governor.problem is None and governor._client is not None


async def test_the_governor_refuses_a_sealed_token_copied_into_a_forged_entry() -> None:
    """An entry written around the CLI, with a real activation's sealed token, its fingerprint
    and another host: the governor gets no client, so the token goes nowhere."""
    real = created()
    forged = created("act_forged", token_sealed=real.token_sealed, base_url="https://evil.example")
    governor = await _governor_after(real, ActivationDeleted(activation_id="act1"), forged)
    assert governor._client is None
    assert "does not open for this activation" in (governor.problem or "")


async def test_the_governor_refuses_a_legacy_token_under_another_fingerprint() -> None:
    other = "pat-na1-someone-elses-token"
    forged = created(
        token_sealed=Sealer(KEY).seal_legacy(other), token_fingerprint=token_fingerprint(TOKEN)
    )
    governor = await _governor_after(forged)
    assert governor._client is None and "control stream was edited" in (governor.problem or "")
    legacy = created(token_sealed=Sealer(KEY).seal_legacy(TOKEN))
    governor = await _governor_after(legacy)
    assert governor.problem is None and governor._client is not None  # works until resealed


# --- 6. activations sharing a token share its settings -----------------------------------------


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"base_url": "https://api.hubapi.com"}, "base URL 'https://api.hubapi.com'"),
        ({"api_version": "v3"}, "API version 'v3'"),
        ({"plan": "enterprise"}, "plan 'enterprise' (it has 'starter')"),
    ],
)
def test_a_second_activation_with_the_same_token_and_other_settings_is_refused(
    changes: dict[str, str], named: str
) -> None:
    state = folded(created())
    with pytest.raises(CommandRejected) as caught:
        state.decide(created("act2", **changes))
    message = str(caught.value)
    assert named in message and "'act1' (act1) already uses this token" in message
    assert "use the same settings (--base-url, --api-version, --plan), or another token" in message


def test_a_new_activation_with_an_unbound_legacy_token_is_refused() -> None:
    with pytest.raises(CommandRejected, match="must be sealed for it"):
        Activations().decide(created(token_sealed=Sealer(KEY).seal_legacy(TOKEN)))


def test_a_second_activation_with_the_same_token_and_settings_is_accepted() -> None:
    state = folded(created())
    second = created("act2")
    assert state.decide(second) == [second]


# --- 4. no secret in a repr, a str or an exception ---------------------------------------------

ENVIRON = {
    "HUBSYNC_REDIS_URL": "rediss://:hunter2-redis-password@redis.internal:6380/0",
    "HUBSYNC_SECRET_KEY": KEY,
    "RAY_ADDRESS": "ray://user:ray-password@head:10001",
}


def test_config_never_shows_the_secret_key_or_the_redis_password() -> None:
    config = Config.from_environ(ENVIRON)
    for shown in (repr(config), str(config), f"{config!s}", repr([config]), str(Exception(config))):
        assert "hunter2-redis-password" not in shown and KEY not in shown
        assert "ray-password" not in shown
    assert "redis.internal:6380" in repr(config) and "<hidden>" in repr(config)
    with pytest.raises(ConfigError) as caught:
        Config.from_environ(ENVIRON | {"HUBSYNC_PARTITIONS": "many"})
    assert "hunter2" not in str(caught.value) and KEY not in str(caught.value)


def test_settings_never_show_the_redis_password() -> None:
    settings = Settings("redis+cluster://:hunter2-redis-password@10.0.0.7:7000")
    for shown in (repr(settings), str(settings), repr([settings]), str(Exception(settings))):
        assert "hunter2-redis-password" not in shown
        assert "10.0.0.7:7000" in shown

"""The control plane on a real Redis (and Redis Cluster): atomic creates, tokens checked where
they enter and resealed in place, and nothing fixing the partition count but `hubsync up`."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner, Result
from cryptography.fernet import Fernet

from crm.tokens import token_fingerprint
from events.activations import Activations, CommandRejected, new_activation
from events.connection import connect
from events.model import ActivationCreated, TokenResealed, decode_control_event
from events.secrets import SEALED_PREFIX, Sealer
from events.streams import EVENT_FIELD, Keys, append_control, ensure_partitions
from hubsync.cli import main

pytestmark = pytest.mark.integration

KEY = Fernet.generate_key().decode()
TOKEN = "pat-na1-5e1f0c2a-aaaa-bbbb-cccc-ddddeeeeffff"
LOOPBACK = "http://127.0.0.1:8089"


@pytest.fixture(params=["redis_url", "redis_cluster_url"])
def any_redis_url(request: pytest.FixtureRequest) -> str:
    """One Redis, and a Redis Cluster: the control plane must hold on both."""
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


async def test_concurrent_creates_with_one_name_let_exactly_one_through(
    any_redis_url: str, keys: Keys
) -> None:
    """Check-then-append was two steps: creates racing on one name could all pass the check."""
    sealer = Sealer(KEY)
    clients = [connect(any_redis_url) for _ in range(8)]
    try:

        async def create(client: Any, n: int) -> str:
            event = new_activation(
                sealer, name="EU marketing", token=TOKEN, base_url=LOOPBACK, activation_id=f"a{n}"
            )
            try:
                await Activations().execute(client, keys, event)
            except CommandRejected as exc:
                return str(exc)
            return "created"

        outcomes = await asyncio.gather(*(create(c, n) for n, c in enumerate(clients)))
        assert outcomes.count("created") == 1, outcomes
        assert all("already exists" in o for o in outcomes if o != "created")
        state = Activations()
        await state.refresh(clients[0], keys)
        assert [s.name for s in state.by_id.values()] == ["EU marketing"]
        entries = await clients[0].xrange(keys.activations)
        assert len(entries) == 1  # the refused ones appended nothing
    finally:
        for client in clients:
            await client.aclose()


@pytest.fixture
def cli(redis_url: str) -> Iterator[tuple[Keys, Any]]:
    """`hubsync ...` against the test Redis in a namespace of its own, with a token exported."""
    namespace = f"cp{uuid.uuid4().hex[:8]}"
    env = {
        "HUBSYNC_REDIS_URL": redis_url,
        "HUBSYNC_NAMESPACE": namespace,
        "HUBSYNC_SECRET_KEY": KEY,
        "HUBSPOT_TOKEN": TOKEN,
    }

    def run(*args: str, **more_env: str) -> Result:
        return CliRunner().invoke(main, list(args), env=env | more_env)

    yield Keys(namespace), run


def _control(redis_url: str, keys: Keys) -> list[Any]:
    client = redis.Redis.from_url(redis_url)
    try:
        return [decode_control_event(f[EVENT_FIELD]) for _, f in client.xrange(keys.activations)]
    finally:
        client.close()


CREATE = ["activation", "create", "--name", "EU", "--token-env", "HUBSPOT_TOKEN"]


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        (
            "pat-na1-5e1f 0c2a",
            "HUBSPOT_TOKEN: the token contains whitespace (a space, tab or line break) at position 13",
        ),
        ("pat-na1-5e1f\x1b0c2a", "HUBSPOT_TOKEN: the token contains a control character"),
        ("pat-na1-5e1f\u00e90c2a", "HUBSPOT_TOKEN: the token contains a non-ASCII character"),
        ("pat", "HUBSPOT_TOKEN: the token is 3 characters long"),
    ],
)
def test_create_refuses_a_token_that_cannot_be_one_without_showing_it(
    cli: tuple[Keys, Any], redis_url: str, token: str, problem: str
) -> None:
    keys, run = cli
    result = run(*CREATE, "--base-url", LOOPBACK, HUBSPOT_TOKEN=token)
    assert result.exit_code == 2, result.output
    assert problem in result.output
    assert token not in result.output and "5e1f" not in result.output
    assert _control(redis_url, keys) == []


@pytest.mark.parametrize("url", ["http://api.hubapi.com", "http://192.168.1.20:8089"])
def test_create_refuses_plain_http_to_another_host(
    cli: tuple[Keys, Any], redis_url: str, url: str
) -> None:
    keys, run = cli
    result = run(*CREATE, "--base-url", url)
    assert result.exit_code == 2, result.output
    assert "tokens go only over https://" in result.output
    assert _control(redis_url, keys) == []


def test_create_seals_the_token_for_the_activation_and_refuses_a_second_with_other_settings(
    cli: tuple[Keys, Any], redis_url: str
) -> None:
    keys, run = cli
    first = run(*CREATE, "--base-url", LOOPBACK + "/", "--plan", "professional")
    assert first.exit_code == 0, first.output
    [created] = _control(redis_url, keys)
    assert isinstance(created, ActivationCreated)
    assert created.token_sealed.startswith(SEALED_PREFIX) and TOKEN not in created.token_sealed
    assert created.base_url == LOOPBACK
    second = run(
        "activation", "create", "--name", "US", "--token-env", "HUBSPOT_TOKEN",
        "--base-url", LOOPBACK, "--plan", "starter",
    )  # fmt: skip
    assert second.exit_code == 1, second.output
    assert "plan 'starter' (it has 'professional')" in second.output
    assert (
        "use the same settings (--base-url, --api-version, --plan), or another token"
        in second.output
    )
    same = run(
        "activation", "create", "--name", "US", "--token-env", "HUBSPOT_TOKEN",
        "--base-url", LOOPBACK, "--plan", "professional",
    )  # fmt: skip
    assert same.exit_code == 0, same.output


async def test_reseal_rewrites_legacy_tokens_bound_to_their_activation(
    cli: tuple[Keys, Any], redis_url: str
) -> None:
    keys, run = cli
    sealer = Sealer(KEY)
    client = connect(redis_url)
    try:
        for n in (1, 2):  # appended as a version before v2 did: `decide` refuses new legacy ones
            await append_control(
                client,
                keys,
                ActivationCreated(
                    activation_id=f"old{n}",
                    name=f"old {n}",
                    token_sealed=sealer.seal_legacy(TOKEN),  # as written before v2
                    token_fingerprint=token_fingerprint(TOKEN),
                    base_url=LOOPBACK,
                ),
            )
    finally:
        await client.aclose()

    shown = await asyncio.to_thread(run, "activation", "show", "old1", "--json")
    assert json.loads(shown.output)["token_sealing"].startswith(
        "legacy: run `hubsync activation reseal"
    )
    usage = await asyncio.to_thread(run, "activation", "reseal")
    assert usage.exit_code == 2 and "or use --all" in usage.output
    one = await asyncio.to_thread(run, "activation", "reseal", "old 1")
    assert one.exit_code == 0 and "resealed old1 (old 1)" in one.output, one.output
    every = await asyncio.to_thread(run, "activation", "reseal", "--all")
    assert every.exit_code == 0 and "resealed old2 (old 2)" in every.output, every.output
    assert "old1" not in every.output
    again = await asyncio.to_thread(run, "activation", "reseal", "--all")
    assert again.exit_code == 0 and "nothing to change" in again.output

    shown = await asyncio.to_thread(run, "activation", "show", "old1", "--json")
    assert json.loads(shown.output)["token_sealing"] == "bound to this activation"
    resealed = [e for e in _control(redis_url, keys) if isinstance(e, TokenResealed)]
    assert [e.activation_id for e in resealed] == ["old1", "old2"]
    client = connect(redis_url)
    try:
        state = Activations()
        await state.refresh(client, keys)
    finally:
        await client.aclose()
    for spec in state.by_id.values():
        assert spec.token_sealed.startswith(SEALED_PREFIX)
        assert spec.open_token(sealer) == TOKEN
    # Bound now: the same sealed text does not open for the other activation.
    old1, old2 = state.by_id["old1"], state.by_id["old2"]
    old2.token_sealed = old1.token_sealed
    with pytest.raises(Exception, match="does not open for this activation"):
        old2.open_token(sealer)


def test_publish_before_hubsync_up_fails_clearly_and_fixes_nothing(
    cli: tuple[Keys, Any], redis_url: str, tmp_path: Path
) -> None:
    keys, run = cli
    path = tmp_path / "events.jsonl"
    path.write_text('{"type":"audience_entered","audience_id":"a","email":"ada@example.com"}\n')
    result = run("publish", str(path), HUBSYNC_PARTITIONS="7")
    assert result.exit_code == 1
    assert "run hubsync up first, which fixes the partition count" in result.output
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.exists(keys.config) == 0
        assert not list(client.scan_iter(match=f"{keys.namespace}:changes:*"))
    finally:
        client.close()


async def test_a_command_that_reads_partitions_does_not_fix_them(redis_url: str) -> None:
    """`activation create --dry-run` (and every other reader) before `hubsync up`: no count is
    written, so the one `hubsync up` is given is the one that holds."""
    keys = Keys(f"cp{uuid.uuid4().hex[:8]}")
    env = {
        "HUBSYNC_REDIS_URL": redis_url,
        "HUBSYNC_NAMESPACE": keys.namespace,
        "HUBSYNC_SECRET_KEY": KEY,
        "HUBSYNC_PARTITIONS": "3",
    }
    dry = await asyncio.to_thread(
        CliRunner().invoke,
        main,
        ["activation", "create", "--name", "x", "--token-env", "T", "--dry-run", "--json"],
        env=env,
    )
    assert dry.exit_code == 0, dry.output
    client = connect(redis_url)
    try:
        assert await client.hget(keys.config, "partitions") is None
        assert await ensure_partitions(client, keys, 8) == 8  # what `hubsync up` is told holds
    finally:
        await client.aclose()


async def test_verify_refuses_an_activation_whose_token_is_not_its_own(
    cli: tuple[Keys, Any], redis_url: str
) -> None:
    """An edited entry (another token's sealed text under this fingerprint): verify stops with
    the reason before it calls HubSpot, as the governor does."""
    keys, run = cli
    client = connect(redis_url)
    try:
        await append_control(
            client,
            keys,
            ActivationCreated(
                activation_id="edited",
                name="edited",
                token_sealed=Sealer(KEY).seal_legacy("pat-na1-someone-elses-token"),
                token_fingerprint=token_fingerprint(TOKEN),
                base_url=LOOPBACK,
            ),
        )
    finally:
        await client.aclose()
    result = await asyncio.to_thread(run, "activation", "verify", "edited")
    assert result.exit_code == 1, result.output
    assert "control stream was edited" in result.output
    assert "someone-elses" not in result.output and TOKEN not in result.output

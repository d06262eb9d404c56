"""A token that cannot travel in a header is refused where the client gets it, with a message that
names the problem and never the token; HTTP library errors, which may quote the request's headers,
never reach a message, a status or a log record."""

from __future__ import annotations

import logging

import httpx
import pytest
from cryptography.fernet import Fernet

from actors.governor import GovernorCore
from actors.governor_port import CallFailed
from crm import HubSpotClient, InvalidTokenError, TransportError, check_token
from crm.tokens import token_fingerprint
from events.memory import MemoryStorage
from events.model import ActivationCreated, encode
from events.streams import Keys

BAD_TOKENS = {
    "a line break": "pat-na1-SECRETVALUE\nX-Injected: 1",
    "a space": "pat-na1 SECRETVALUE",
    "a control character": "pat-na1-SECRET\x07VALUE",
    "a non-ASCII character": "pat-na1-SECRETVALUÉ",
}


@pytest.mark.parametrize("problem", list(BAD_TOKENS))
def test_a_token_that_cannot_be_a_header_is_refused_naming_the_problem_not_the_token(
    problem: str,
) -> None:
    token = BAD_TOKENS[problem]
    with pytest.raises(InvalidTokenError) as caught:
        check_token(token)
    text = str(caught.value)
    assert problem.split()[-1].rstrip("s") in text or "whitespace" in text, text
    assert "SECRET" not in text and token not in text and "position" in text
    with pytest.raises(InvalidTokenError) as caught:
        HubSpotClient(token)
    assert "SECRET" not in str(caught.value) and "SECRET" not in repr(caught.value)


def test_a_good_token_passes() -> None:
    check_token("pat-na1-11111111-2222-3333-4444-555555555555")


async def test_http_library_errors_are_described_without_their_text() -> None:
    """h11/httpx put the offending header in their message: ours names the class and path only."""

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.LocalProtocolError(
            f"Illegal header value {request.headers['authorization'].encode()!r}"
        )

    hubspot = HubSpotClient(
        "pat-SECRETVALUE", http=httpx.AsyncClient(transport=httpx.MockTransport(refuse))
    )
    with pytest.raises(TransportError) as caught:
        await hubspot.read_property("email")
    text = f"{caught.value} {caught.value!r} {caught.value.__cause__} {caught.value.__context__}"
    assert "SECRETVALUE" not in text
    assert "LocalProtocolError" in text and "/crm/properties/2026-03/contacts/email" in text
    assert caught.value.__context__ is None and caught.value.__cause__ is None


@pytest.mark.parametrize("problem", list(BAD_TOKENS))
async def test_a_stored_bad_token_never_reaches_a_status_a_log_or_an_error(
    caplog: pytest.LogCaptureFixture, problem: str
) -> None:
    token = BAD_TOKENS[problem]
    key = Fernet.generate_key()
    storage = MemoryStorage(Keys("unit"))
    core = GovernorCore(
        storage,
        token_fingerprint(token),
        secret_key=key.decode(),
        http=httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(500))),
    )
    created = ActivationCreated(
        activation_id="act1",
        name="one",
        token_sealed=Fernet(key).encrypt(token.encode()).decode(),
        token_fingerprint=token_fingerprint(token),
        base_url="http://127.0.0.1:9",
    )
    await storage.activations.append(encode(created))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(CallFailed) as caught:
        await core.upsert("act1", "realtime", [("a@example.com", {"firstname": "Ada"})])
    await core.publish_status()
    published = await storage.status.get(Keys("unit").governor_status(core.fingerprint)) or b""
    status = core.status()
    await core.aclose()
    assert "position" in str(caught.value) and "position" in (status["problem"] or "")
    for text in (
        str(caught.value),
        repr(caught.value),
        str(status),
        published.decode(),
        caplog.text,
    ):
        assert "SECRETVALUE" not in text

"""The benchmarks' counting emulator: every write of every contact, through the emulator's
write hook (no patching), served with the contacts as `writes`."""

from __future__ import annotations

import httpx
import msgspec
import pytest

from bench.counting_emulator import WriteCounter, _instrument
from crm.emulator import ALL_SCOPES, ApiRequest, EmulatorConfig, FaultSettings, HubSpotState
from crm.emulator.app import create_app

TOKEN = "pat-bench"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def upsert(state: HubSpotState, *emails: str, trace: bool = True) -> int:
    inputs = [
        {"id": e, "idProperty": "email", "properties": {"firstname": "x"}}
        | ({"objectWriteTraceId": str(i)} if trace else {})
        for i, e in enumerate(emails)
    ]
    answer = state.handle(
        ApiRequest(
            operation="contacts_batch_upsert",
            method="POST",
            body=msgspec.json.encode({"inputs": inputs}),
            authorization=f"Bearer {TOKEN}",
        )
    )
    return answer.status


def test_counts_each_written_contact_once_per_call_and_nothing_for_refused_calls() -> None:
    clock = FakeClock()
    state = HubSpotState(EmulatorConfig(rate=3), tokens={TOKEN: ALL_SCOPES}, clock=clock)
    counter = WriteCounter(state)
    assert upsert(state, "a@x.com", "b@x.com") == 200
    clock.now += 1
    assert upsert(state, "a@x.com", "not-an-email") == 207  # b unwritten, the bad one refused
    clock.now += 1
    state.set_faults(FaultSettings(next_n={"count": 1, "status": 503}))
    assert upsert(state, "a@x.com") == 503
    assert upsert(state, "b@x.com") == 429  # the fourth call in 10 s: refused, unwritten
    ids = {c["properties"]["email"]: c["id"] for c in state.dump_contacts()}
    assert state.handle(patch_request(ids["b@x.com"])).status == 429  # still inside the window
    clock.now += 10
    assert state.handle(patch_request(ids["b@x.com"])).status == 200
    start = 1_800_000_000.0
    by_email = {
        c["properties"]["email"]: c["writes"] for c in counter.contacts(with_timestamps=True)
    }
    assert by_email == {"a@x.com": [start, start + 1], "b@x.com": [start, start + 12]}
    assert all("writes" not in c for c in counter.contacts())


def test_counts_what_a_batch_wrote_before_it_failed_whole() -> None:
    """A batch create without trace ids writes its inputs in order and answers 400 at the first
    bad one: the answer shows no results, the account holds the first contact, and so does the
    count."""
    state = HubSpotState(tokens={TOKEN: ALL_SCOPES}, clock=FakeClock())
    counter = WriteCounter(state)
    inputs = [{"properties": {"email": "c@x.com"}}, {"properties": {"email": "not-an-email"}}]
    answer = state.handle(
        ApiRequest(
            operation="contacts_batch_create",
            method="POST",
            body=msgspec.json.encode({"inputs": inputs}),
            authorization=f"Bearer {TOKEN}",
        )
    )
    assert answer.status == 400
    (contact,) = counter.contacts(with_timestamps=True)
    assert contact["properties"]["email"] == "c@x.com" and len(contact["writes"]) == 1


def patch_request(contact_id: str) -> ApiRequest:
    return ApiRequest(
        operation="contact_patch",
        method="PATCH",
        params={"contact_id": contact_id},
        body=b'{"properties": {"firstname": "y"}}',
        authorization=f"Bearer {TOKEN}",
    )


@pytest.mark.parametrize("with_timestamps", ["1", ""])
async def test_the_contacts_admin_view_carries_the_writes(with_timestamps: str) -> None:
    state = HubSpotState(tokens={TOKEN: ALL_SCOPES})
    app = create_app(state, admin_routes=_instrument(state))
    upsert(state, "a@x.com")
    upsert(state, "a@x.com")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://emulator") as client:
        answer = await client.get(
            "/_emulator/contacts", params={"with_timestamps": with_timestamps}
        )
        stats = await client.get("/_emulator/stats")  # the built-in admin views still answer
    (contact,) = answer.json()["results"]
    assert contact["properties"]["email"] == "a@x.com"
    if with_timestamps:
        assert len(contact["writes"]) == 2 and "written_at" in contact
    else:
        assert "writes" not in contact and "written_at" not in contact
    assert stats.json()["inputs_written"] == 2

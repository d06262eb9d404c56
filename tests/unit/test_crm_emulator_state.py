"""The emulated HubSpot account, driven without HTTP and with a fake clock (no sleeping)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from crm.emulator.faults import FaultSettings
from crm.emulator.limits import RollingWindow
from crm.emulator.state import ALL_SCOPES, ApiRequest, EmulatorConfig, Handled, HubSpotState
from crm.tokens import token_fingerprint

TOKEN = "pat-test"


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def hubspot(clock: FakeClock) -> HubSpotState:
    state = HubSpotState(EmulatorConfig(), tokens={TOKEN: ALL_SCOPES}, clock=clock)
    call(
        state,
        "group_create",
        {"name": "raptor_smart_advisor_cdp", "label": "Raptor Smart Advisor CDP"},
    )
    for name, type_, field_type, extra in [
        ("raptor_vip", "bool", "booleancheckbox", {}),
        ("raptor_ltv", "number", "number", {}),
        ("raptor_birthday", "date", "date", {}),
        ("raptor_seen", "datetime", "date", {}),
        (
            "raptor_tier",
            "enumeration",
            "select",
            {"options": [{"label": "Gold", "value": "gold", "hidden": False}]},
        ),
    ]:
        status, _ = call(
            state,
            "property_create",
            {
                "name": name,
                "label": name,
                "type": type_,
                "fieldType": field_type,
                "groupName": "raptor_smart_advisor_cdp",
                **extra,
            },
        )
        assert status == 201
    return state


def call(state: HubSpotState, op: str, body: Any = None, token: str | None = TOKEN, **kw: Any):
    answer = state.handle(
        ApiRequest(
            operation=op,
            body=msgspec.json.encode(body) if body is not None else b"",
            authorization=f"Bearer {token}" if token else None,
            **kw,
        )
    )
    return answer.status, answer.body


def upsert(*items: tuple[str, dict[str, str]], traced: bool = True) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "id": email,
                "idProperty": "email",
                "properties": props,
                **({"objectWriteTraceId": f"t{i}"} if traced else {}),
            }
            for i, (email, props) in enumerate(items)
        ]
    }


class TestRollingWindow:
    def test_counts_any_ten_second_interval_exactly(self, clock):
        window = RollingWindow(10.0)
        for _ in range(5):
            window.record(clock.now)
            clock.advance(2.0)
        assert window.count(clock.now) == 5 - 1  # the call at t=0 left at t=10
        assert window.peak == 5

    def test_seconds_until_free(self):
        window = RollingWindow(10.0)
        window.record(0.0)
        window.record(4.0)
        assert window.seconds_until_free(5.0, 2) == 5.0
        assert window.seconds_until_free(5.0, 3) == 0.0


class TestLimits:
    def test_the_101st_call_inside_ten_seconds_is_refused_then_a_slot_frees(self, hubspot, clock):
        hubspot.reset()
        for _i in range(100):
            assert call(hubspot, "groups_list")[0] == 200
            clock.advance(0.05)
        answer = hubspot.handle(
            ApiRequest(operation="groups_list", authorization=f"Bearer {TOKEN}")
        )
        assert answer.status == 429 and answer.body["policyName"] == "TEN_SECONDLY_ROLLING"
        assert answer.headers["X-HubSpot-RateLimit-Remaining"] == "0"
        clock.advance(10.0 - 100 * 0.05 + 0.001)  # the first call leaves the window
        assert call(hubspot, "groups_list")[0] == 200
        assert call(hubspot, "groups_list")[0] == 429
        assert hubspot.stats()["max_calls_in_any_window"] == 100

    @pytest.mark.parametrize(("count_rejected", "after"), [(False, [200, 200]), (True, [200, 429])])
    def test_rejected_calls_count_only_when_configured(self, hubspot, clock, count_rejected, after):
        hubspot.reset()
        hubspot.configure({"rate": 2, "count_rejected_calls": count_rejected})
        assert [call(hubspot, "groups_list")[0] for _ in range(2)] == [200, 200]
        clock.advance(5)
        assert call(hubspot, "groups_list")[0] == 429
        clock.advance(5.01)  # the two accepted calls left the window; the 429 at +5 did not
        assert [call(hubspot, "groups_list")[0] for _ in range(2)] == after

    def test_daily_budget_then_reset_at_utc_midnight(self, hubspot, clock):
        hubspot.reset()
        hubspot.configure({"daily": 3})
        statuses = [call(hubspot, "groups_list") for _ in range(4)]
        assert [s for s, _ in statuses] == [200, 200, 200, 429]
        assert statuses[-1][1]["policyName"] == "DAILY"
        assert statuses[-1][1]["message"] == "You have reached your daily limit."
        clock.advance(86_400)
        assert call(hubspot, "groups_list")[0] == 200

    def test_search_has_its_own_per_second_limit_and_no_headers(self, hubspot, clock):
        answers = [
            hubspot.handle(
                ApiRequest(operation="contacts_search", body=b"{}", authorization=f"Bearer {TOKEN}")
            )
            for _ in range(6)
        ]
        assert [a.status for a in answers] == [200] * 5 + [429]
        assert not any(k.startswith("X-HubSpot-RateLimit") for k in answers[0].headers)
        assert "X-HubSpot-Correlation-Id" in answers[0].headers
        clock.advance(1.01)
        assert call(hubspot, "contacts_search", {})[0] == 200

    def test_plans(self, hubspot):
        for plan, (rate, daily) in {
            "starter": (100, 250_000),
            "professional": (190, 625_000),
            "enterprise": (190, 1_000_000),
            "addon": (250, 2_000_000),
        }.items():
            hubspot.configure({"plan": plan})
            assert (hubspot.config.per_window, hubspot.config.per_day) == (rate, daily)


class TestAuth:
    def test_missing_and_unknown_tokens_are_401(self, hubspot):
        for token in (None, "nope"):
            status, body = call(hubspot, "groups_list", token=token)
            assert status == 401 and body["category"] == "INVALID_AUTHENTICATION"

    def test_missing_scope_is_403_naming_the_scope(self, hubspot):
        hubspot.register_token("reader", {"crm.objects.contacts.read"})
        status, body = call(
            hubspot, "contacts_batch_upsert", upsert(("a@x.com", {})), token="reader"
        )
        assert status == 403 and body["category"] == "MISSING_SCOPES"
        assert body["errors"][0]["context"]["requiredGranularScopes"] == [
            "crm.objects.contacts.write"
        ]

    def test_open_auth_accepts_any_token(self, clock):
        state = HubSpotState(clock=clock)
        assert state.config.open_auth
        assert call(state, "groups_list", token="anything")[0] == 200


class TestContacts:
    def test_upsert_creates_then_updates_with_lower_cased_email(self, hubspot):
        status, body = call(
            hubspot, "contacts_batch_upsert", upsert(("Ada@X.com", {"raptor_vip": "true"}))
        )
        assert status == 200 and body["results"][0]["new"] is True
        assert body["results"][0]["properties"]["email"] == "ada@x.com"
        status, body = call(
            hubspot, "contacts_batch_upsert", upsert(("ada@x.com", {"raptor_vip": "false"}))
        )
        assert body["results"][0]["new"] is False
        assert hubspot.dump_contacts()[0]["properties"]["raptor_vip"] == "false"

    def test_duplicate_ids_reject_the_whole_batch(self, hubspot):
        status, body = call(
            hubspot,
            "contacts_batch_upsert",
            upsert(("a@x.com", {}), ("A@x.com", {}), ("b@x.com", {})),
        )
        assert status == 400 and body["category"] == "VALIDATION_ERROR"
        assert (
            body["message"] == "Duplicate IDs found in batch input: [A@x.com]. IDs must be unique"
        )
        assert hubspot.dump_contacts() == []

    def test_more_than_100_inputs_is_400(self, hubspot):
        items = [(f"u{i}@x.com", {}) for i in range(101)]
        assert call(hubspot, "contacts_batch_upsert", upsert(*items))[0] == 400

    @pytest.mark.parametrize(
        ("prop", "value", "code"),
        [
            ("raptor_nope", "1", "PROPERTY_DOESNT_EXIST"),
            ("raptor_vip", "yes", "INVALID_BOOLEAN"),
            ("raptor_ltv", "1e5", "INVALID_NUMBER"),
            ("raptor_birthday", "2026-02-30", "INVALID_DATE"),
            ("raptor_birthday", "1700000000123", "INVALID_DATE"),
            ("raptor_seen", "yesterday", "INVALID_DATETIME"),
            ("raptor_tier", "bronze", "INVALID_OPTION"),
            ("hs_object_id", "5", "READ_ONLY_VALUE"),
        ],
    )
    def test_bad_values_fail_per_input_with_their_trace_id(self, hubspot, prop, value, code):
        status, body = call(
            hubspot,
            "contacts_batch_upsert",
            upsert(("good@x.com", {"raptor_ltv": "12.5"}), ("bad@x.com", {prop: value})),
        )
        assert status == 207 and len(body["results"]) == 1
        error = body["errors"][0]
        assert error["category"] == "VALIDATION_ERROR" and code in error["message"]
        assert error["context"]["objectWriteTraceId"] == ["t1"]
        assert error["errors"][0]["code"] == code

    def test_without_trace_ids_a_bad_value_fails_the_whole_batch(self, hubspot):
        status, body = call(
            hubspot,
            "contacts_batch_upsert",
            upsert(("good@x.com", {}), ("bad@x.com", {"raptor_nope": "1"}), traced=False),
        )
        assert status == 400 and "PROPERTY_DOESNT_EXIST" in body["message"]
        assert hubspot.dump_contacts() == []

    def test_whole_batch_email_upsert_errors_is_configurable(self, hubspot):
        hubspot.configure({"email_upsert_errors": "whole_batch"})
        status, body = call(
            hubspot,
            "contacts_batch_upsert",
            upsert(("good@x.com", {}), ("bad@x.com", {"raptor_vip": "no"})),
        )
        assert status == 400 and body["context"]["ids"] == ["bad@x.com"]

    def test_invalid_email_and_clearing_with_empty_string(self, hubspot, clock):
        status, body = call(hubspot, "contacts_batch_upsert", upsert(("not-an-email", {})))
        assert status == 207 and "INVALID_EMAIL" in body["errors"][0]["message"]
        call(hubspot, "contacts_batch_upsert", upsert(("a@x.com", {"raptor_ltv": "3"})))
        clock.advance(1)
        call(hubspot, "contacts_batch_upsert", upsert(("a@x.com", {"raptor_ltv": ""})))
        contact = hubspot.dump_contacts(with_timestamps=True)[0]
        assert "raptor_ltv" not in contact["properties"]
        assert contact["written_at"]["raptor_ltv"] == clock.now

    def test_values_are_normalised(self, hubspot):
        call(
            hubspot,
            "contacts_batch_upsert",
            upsert(
                (
                    "a@x.com",
                    {
                        "raptor_birthday": "1795737600000",
                        "raptor_seen": "2026-11-27T09:00:00+01:00",
                    },
                )
            ),
        )
        props = hubspot.dump_contacts()[0]["properties"]
        assert props["raptor_birthday"] == "2026-11-27"
        assert props["raptor_seen"] == "2026-11-27T08:00:00.000Z"

    def test_batch_update_by_email_is_refused_and_unknown_ids_are_207(self, hubspot):
        status, body = call(hubspot, "contacts_batch_update", upsert(("a@x.com", {})))
        assert status == 400
        assert body["message"] == "Unable to perform update/upsert by non-unique 0-1 property"
        call(hubspot, "contacts_batch_upsert", upsert(("a@x.com", {})))
        cid = hubspot.dump_contacts()[0]["id"]
        status, body = call(
            hubspot,
            "contacts_batch_update",
            {
                "inputs": [
                    {"id": cid, "properties": {"raptor_vip": "true"}, "objectWriteTraceId": "x1"},
                    {
                        "id": "999999",
                        "properties": {"raptor_vip": "true"},
                        "objectWriteTraceId": "x2",
                    },
                ]
            },
        )
        assert status == 207 and body["errors"][0]["category"] == "OBJECT_NOT_FOUND"
        assert body["errors"][0]["context"]["objectWriteTraceId"] == ["x2"]

    def test_batch_read_by_email_reports_misses(self, hubspot):
        call(hubspot, "contacts_batch_upsert", upsert(("a@x.com", {"raptor_vip": "true"})))
        status, body = call(
            hubspot,
            "contacts_batch_read",
            {
                "inputs": [{"id": "A@x.com"}, {"id": "ghost@x.com"}],
                "idProperty": "email",
                "properties": ["raptor_vip"],
            },
        )
        assert status == 207 and body["results"][0]["properties"]["raptor_vip"] == "true"
        assert body["errors"][0]["category"] == "OBJECT_NOT_FOUND"
        assert body["errors"][0]["context"]["ids"] == ["ghost@x.com"]

    def test_archived_property_cannot_be_written_and_its_name_conflicts(self, hubspot):
        assert call(hubspot, "property_archive", params={"name": "raptor_vip"})[0] == 204
        status, body = call(
            hubspot, "contacts_batch_upsert", upsert(("a@x.com", {"raptor_vip": "true"}))
        )
        assert status == 207 and "PROPERTY_DOESNT_EXIST" in body["errors"][0]["message"]
        spec = {
            "name": "raptor_vip",
            "label": "VIP",
            "type": "bool",
            "fieldType": "booleancheckbox",
            "groupName": "raptor_smart_advisor_cdp",
        }
        status, body = call(hubspot, "property_create", spec)
        assert status == 409 and "archived" in body["message"]
        status, body = call(hubspot, "properties_list", query={"archived": "true"})
        assert [p["name"] for p in body["results"]] == ["raptor_vip"]
        hubspot.configure({"archived_name_conflict": False})
        assert call(hubspot, "property_create", spec)[0] == 201


class TestProperties:
    @pytest.mark.parametrize(
        ("spec", "fragment"),
        [
            ({"name": "Bad-Name", "type": "string", "fieldType": "text"}, "invalid"),
            ({"name": "ok", "type": "bool", "fieldType": "text"}, "not valid for type bool"),
            ({"name": "ok", "type": "enumeration", "fieldType": "select"}, "needs options"),
            (
                {"name": "ok", "type": "string", "fieldType": "text", "groupName": "nope"},
                "does not exist",
            ),
            ({"name": "x" * 101, "type": "string", "fieldType": "text"}, "longer"),
        ],
    )
    def test_definition_rules(self, hubspot, spec, fragment):
        body = {"label": "L", "groupName": "raptor_smart_advisor_cdp"} | spec
        status, answer = call(hubspot, "property_create", body)
        assert status == 400 and fragment in answer["message"]

    def test_existing_name_is_409(self, hubspot):
        status, body = call(
            hubspot,
            "property_create",
            {
                "name": "raptor_vip",
                "label": "VIP",
                "type": "bool",
                "fieldType": "booleancheckbox",
                "groupName": "raptor_smart_advisor_cdp",
            },
        )
        assert status == 409 and body["category"] == "OBJECT_ALREADY_EXISTS"


class TestFaults:
    def test_seeded_error_rate_is_reproducible(self, hubspot):
        def run() -> list[int]:
            hubspot.reset()
            hubspot.set_faults(FaultSettings(error_rate=0.3, seed=7))
            return [call(hubspot, "groups_list")[0] for _ in range(30)]

        first = run()
        assert first == run() and 503 in first and 200 in first

    def test_next_n_forces_outcomes(self, hubspot):
        hubspot.set_faults(FaultSettings(next_n={"count": 2, "status": 423}))
        assert [call(hubspot, "groups_list")[0] for _ in range(3)] == [423, 423, 200]
        hubspot.set_faults(FaultSettings(next_n={"count": 1, "status": "drop"}))
        answer = hubspot.handle(
            ApiRequest(operation="groups_list", authorization=f"Bearer {TOKEN}")
        )
        assert answer.fault is not None and answer.fault.kind == "drop"
        assert hubspot.stats()["by_status"]["drop"] == 1


class TestObservers:
    def test_each_answered_call_is_handed_to_the_observers_without_the_token(self, hubspot, clock):
        seen: list[Handled] = []
        hubspot.observe(seen.append)
        body = {"inputs": [{"id": "ada@example.com", "idProperty": "email", "properties": {}}]}
        status, answer = call(hubspot, "contacts_batch_upsert", body, method="POST")
        hubspot.set_faults(FaultSettings(next_n={"count": 1, "status": "drop"}))
        call(hubspot, "groups_list")
        call(hubspot, "groups_list", token=None)

        upsert, dropped, anonymous = seen
        assert (upsert.method, upsert.operation, upsert.outcome) == (
            "POST",
            "contacts_batch_upsert",
            "200",
        )
        assert upsert.payload == body and upsert.at == clock.now
        assert upsert.response.status == status and upsert.response.body == answer
        assert upsert.token == token_fingerprint(TOKEN) and TOKEN not in str(seen)
        assert (dropped.outcome, dropped.payload) == ("drop", None)
        assert (anonymous.token, anonymous.outcome) == ("-", "401")

    def test_observers_outlive_a_reset(self, hubspot):
        seen: list[Handled] = []
        hubspot.observe(seen.append)
        hubspot.reset()
        call(hubspot, "groups_list")
        assert [h.operation for h in seen] == ["groups_list"]

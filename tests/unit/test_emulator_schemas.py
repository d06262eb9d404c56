"""Every body the emulator answers, validated against HubSpot's published schemas.

The Structs below are written from HubSpot's OpenAPI documents for the 2026-03 APIs
(HubSpot/HubSpot-public-api-spec-collection, PublicApiSpecs/CRM/Contacts/Rollouts/424/2026-03/
contacts.json and PublicApiSpecs/CRM/Properties/Rollouts/145899/2026-03/properties.json), not
from the emulator's own types: a field the schema requires has no default here, types are exact
(strings are strings, not null), and unknown fields are allowed (HubSpot adds some). The 429 body
follows HubSpot's documented example (developers.hubspot.com usage guidelines), which has no
category. One test per endpoint family drives the pure `HubSpotState` through its answers.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from crm.emulator import ApiRequest, EmulatorConfig, FaultSettings, HubSpotState
from crm.properties import attribute_property, audience_property

# ---- HubSpot's schemas (components/schemas of the OpenAPI documents) --------------------------


class ErrorDetail(msgspec.Struct):
    message: str
    code: str | None = None
    in_: str | None = msgspec.field(default=None, name="in")
    subCategory: str | None = None
    context: dict[str, list[str]] = {}


class Error(msgspec.Struct):
    """The body of an error response (`components/responses/Error`)."""

    category: str
    correlationId: str
    message: str
    subCategory: str | None = None
    context: dict[str, list[str]] = {}
    links: dict[str, str] = {}
    errors: list[ErrorDetail] = []


class RateLimitError(msgspec.Struct):
    """HubSpot's documented 429 body: no category, a policyName."""

    status: str
    message: str
    errorType: str
    policyName: str
    correlationId: str


class StandardError(msgspec.Struct):
    """An element of a batch response's `errors[]`: every member but id/subCategory required."""

    status: str
    category: str
    message: str
    context: dict[str, list[str]]
    errors: list[ErrorDetail]
    links: dict[str, str]
    id: str | None = None
    subCategory: Any = None


class SimplePublicObject(msgspec.Struct):
    id: str
    properties: dict[str, str | None]  # "nullable": true
    createdAt: str
    updatedAt: str
    archived: bool
    archivedAt: str | None = None
    objectWriteTraceId: str | None = None


class SimplePublicUpsertObject(msgspec.Struct):
    id: str
    properties: dict[str, str]  # strings, not nullable
    createdAt: str
    updatedAt: str
    archived: bool
    new: bool
    archivedAt: str | None = None
    objectWriteTraceId: str | None = None


class BatchResponseSimplePublicObject(msgspec.Struct):
    status: str
    results: list[SimplePublicObject]
    startedAt: str
    completedAt: str
    numErrors: int | None = None
    errors: list[StandardError] = []
    links: dict[str, str] = {}


class BatchResponseSimplePublicUpsertObject(msgspec.Struct):
    status: str
    results: list[SimplePublicUpsertObject]
    startedAt: str
    completedAt: str
    numErrors: int | None = None
    errors: list[StandardError] = []
    links: dict[str, str] = {}


class NextPage(msgspec.Struct):
    after: str
    link: str | None = None


class Paging(msgspec.Struct):
    next: NextPage | None = None


class CollectionResponseWithTotalSimplePublicObject(msgspec.Struct):
    total: int
    results: list[SimplePublicObject]
    paging: Paging | None = None


class Option(msgspec.Struct):
    label: str
    value: str
    hidden: bool
    displayOrder: int | None = None
    description: str | None = None


class Property(msgspec.Struct):
    name: str
    label: str
    type: str
    fieldType: str
    description: str
    groupName: str
    options: list[Option]
    archived: bool | None = None
    archivedAt: str | None = None
    createdAt: str | None = None
    updatedAt: str | None = None
    hidden: bool | None = None
    formField: bool | None = None
    displayOrder: int | None = None
    hasUniqueValue: bool | None = None
    calculated: bool | None = None
    externalOptions: bool | None = None
    hubspotDefined: bool | None = None


class BatchResponseProperty(msgspec.Struct):
    status: str
    results: list[Property]
    startedAt: str
    completedAt: str
    numErrors: int | None = None
    errors: list[StandardError] = []
    links: dict[str, str] = {}


class CollectionResponsePropertyNoPaging(msgspec.Struct):
    results: list[Property]


class PropertyGroup(msgspec.Struct):
    name: str
    label: str
    displayOrder: int
    archived: bool


class CollectionResponsePropertyGroupNoPaging(msgspec.Struct):
    results: list[PropertyGroup]


# ---- the emulator, driven without HTTP -------------------------------------------------------

VIP = audience_property("vip", "VIP")
SCORE = attribute_property("score", "Score", "number")
C = "/crm/objects/2026-03/contacts"


def account(**config: Any) -> HubSpotState:
    state = HubSpotState(EmulatorConfig(open_auth=True, **config))
    call(state, "group_create", {"name": "raptor_smart_advisor_cdp", "label": "CDP"})
    call(
        state, "properties_batch_create", {"inputs": [VIP.to_create_body(), SCORE.to_create_body()]}
    )
    return state


def call(state: HubSpotState, operation: str, body: Any = None, **params: str) -> tuple[int, Any]:
    answer = state.handle(
        ApiRequest(
            operation=operation,
            method="POST" if body is not None else "GET",
            params=params,
            body=msgspec.json.encode(body) if body is not None else b"",
            authorization="Bearer pat-schema",
        )
    )
    # What goes over the wire: the JSON the HTTP layer would send.
    return answer.status, (
        msgspec.json.decode(msgspec.json.encode(answer.body)) if answer.body is not None else None
    )


def check(body: Any, schema: type) -> Any:
    return msgspec.convert(body, schema, strict=True)


def upserts(*items: tuple[str, dict[str, str]]) -> dict[str, Any]:
    return {
        "inputs": [
            {"id": e, "idProperty": "email", "properties": p, "objectWriteTraceId": f"t{i}"}
            for i, (e, p) in enumerate(items)
        ]
    }


def test_batch_upsert_answers_as_the_schema_says() -> None:
    state = account()
    status, body = call(
        state, "contacts_batch_upsert", upserts(("a@x.com", {VIP.name: "true", SCORE.name: "1"}))
    )
    assert status == 200
    check(body, BatchResponseSimplePublicUpsertObject)
    # A cleared property comes back as "" in an upsert result (strings only), never null.
    status, body = call(state, "contacts_batch_upsert", upserts(("a@x.com", {SCORE.name: ""})))
    parsed = check(body, BatchResponseSimplePublicUpsertObject)
    assert parsed.results[0].properties[SCORE.name] == ""
    # A 207: per-input errors are StandardErrors (context, errors, links present).
    status, body = call(
        state,
        "contacts_batch_upsert",
        upserts(
            ("b@x.com", {VIP.name: "maybe"}),
            ("c@x.com", {"nosuch": "1"}),
            ("d@x.com", {VIP.name: "true"}),
        ),
    )
    assert status == 207
    parsed = check(body, BatchResponseSimplePublicUpsertObject)
    assert parsed.numErrors == 2 and {e.errors[0].in_ for e in parsed.errors} == {
        VIP.name,
        "nosuch",
    }


def test_whole_batch_400s_are_errors_that_name_the_property() -> None:
    state = account(email_upsert_errors="whole_batch")
    status, body = call(
        state,
        "contacts_batch_upsert",
        upserts(("a@x.com", {"nosuch": "1"}), ("b@x.com", {VIP.name: "true"})),
    )
    assert status == 400
    error = check(body, Error)
    assert error.context["propertyName"] == ["nosuch"] and error.errors[0].in_ == "nosuch"
    assert error.errors[0].code == "PROPERTY_DOESNT_EXIST"
    status, body = call(state, "contacts_batch_upsert", upserts(("a@x.com", {}), ("A@x.com", {})))
    assert status == 400 and check(body, Error).context["ids"]


def test_batch_update_create_read_and_single_records() -> None:
    state = account()
    _, body = call(state, "contacts_batch_upsert", upserts(("a@x.com", {VIP.name: "true"})))
    cid = body["results"][0]["id"]
    status, body = call(
        state,
        "contacts_batch_update",
        {
            "inputs": [
                {"id": cid, "properties": {SCORE.name: ""}},
                {"id": "999999", "properties": {}},
            ]
        },
    )
    assert status == 207
    check(body, BatchResponseSimplePublicObject)
    status, body = call(
        state,
        "contacts_batch_read",
        {
            "inputs": [{"id": "a@x.com"}, {"id": "nobody@x.com"}],
            "idProperty": "email",
            "properties": [SCORE.name],
            "propertiesWithHistory": [],
        },
    )
    assert status == 207
    parsed = check(body, BatchResponseSimplePublicObject)
    assert parsed.results[0].properties[SCORE.name] is None  # nullable in SimplePublicObject
    status, body = call(
        state,
        "contacts_batch_create",
        {
            "inputs": [
                {"properties": {"email": "n@x.com"}, "associations": [], "objectWriteTraceId": "n"},
                {
                    "properties": {"email": "a@x.com"},
                    "associations": [],
                    "objectWriteTraceId": "dup",
                },
            ]
        },
    )
    assert status == 207
    check(body, BatchResponseSimplePublicObject)
    status, body = call(state, "contact_get", contact_id=cid)
    assert status == 200
    check(body, SimplePublicObject)
    status, body = call(state, "contact_get", contact_id="424242")
    assert status == 404
    check(body, Error)


def test_search_answers_as_the_schema_says() -> None:
    state = account()
    call(
        state,
        "contacts_batch_upsert",
        upserts(*((f"s{i}@x.com", {VIP.name: "true"}) for i in range(3))),
    )
    status, body = call(state, "contacts_search", {"limit": 2, "properties": [VIP.name]})
    assert status == 200
    assert check(body, CollectionResponseWithTotalSimplePublicObject).paging is not None


def test_properties_and_groups_answer_as_the_schema_says() -> None:
    state = account()
    status, body = call(
        state,
        "properties_batch_read",
        {
            "inputs": [{"name": VIP.name}, {"name": "missing_one"}],
            "archived": False,
            "dataSensitivity": "non_sensitive",
        },
    )
    assert status == 207
    check(body, BatchResponseProperty)
    status, body = call(
        state, "properties_batch_create", {"inputs": [VIP.to_create_body(), {"name": "x"}]}
    )
    assert status == 207
    check(body, BatchResponseProperty)
    status, body = call(state, "property_get", name=VIP.name)
    assert status == 200
    check(body, Property)
    status, body = call(state, "property_get", name="missing_one")
    assert status == 404
    check(body, Error)
    status, body = call(state, "properties_list")
    check(body, CollectionResponsePropertyNoPaging)
    status, body = call(state, "groups_list")
    check(body, CollectionResponsePropertyGroupNoPaging)
    status, body = call(state, "group_get", name="raptor_smart_advisor_cdp")
    check(body, PropertyGroup)
    status, body = call(state, "group_create", {"name": "raptor_smart_advisor_cdp", "label": "CDP"})
    assert status == 409
    check(body, Error)


@pytest.mark.parametrize("fault", [429, 423, 503])
def test_refusals_and_failures_answer_as_documented(fault: int) -> None:
    state = account()
    state.set_faults(FaultSettings(next_n={"count": 1, "status": fault}))
    status, body = call(state, "contacts_batch_upsert", upserts(("a@x.com", {VIP.name: "true"})))
    assert status == fault
    check(body, RateLimitError if fault == 429 else Error)


def test_auth_failures_answer_as_documented() -> None:
    state = HubSpotState(tokens={"pat-reader": frozenset({"crm.objects.contacts.read"})})
    status, body = call(state, "contacts_batch_upsert", upserts(("a@x.com", {})))
    assert status == 401  # the rig's token is unknown here
    check(body, Error)
    answer = state.handle(
        ApiRequest(
            operation="contacts_batch_upsert",
            method="POST",
            body=b'{"inputs":[]}',
            authorization="Bearer pat-reader",
        )
    )
    assert answer.status == 403
    error = check(msgspec.json.decode(msgspec.json.encode(answer.body)), Error)
    assert error.errors[0].context["requiredGranularScopes"] == ["crm.objects.contacts.write"]

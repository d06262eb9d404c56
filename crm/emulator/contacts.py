"""The account's contacts: batch upsert/update/create/read/archive, one contact by id or email,
and search, with HubSpot's answers (200, 207 per-input errors, 400 for the whole batch, 404).

Values are checked against the schema's live properties (`crm.emulator.values`); the fault
injector may refuse or leave out chosen emails (`FaultSettings.reject_emails`/`omit_emails`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from crm.emulator.config import EmulatorConfig
from crm.emulator.faults import FaultInjector
from crm.emulator.schema import Schema
from crm.emulator.values import EMAIL_RE, check_values, values_error
from crm.emulator.wire import (
    ApiRequest,
    Reply,
    batch_body,
    batch_inputs,
    error,
    iso,
    reject_duplicates,
)

__all__ = ["SEARCH_MAX_LIMIT", "Contact", "Contacts", "WriteObserver"]

SEARCH_MAX_LIMIT = 200

WriteObserver = Callable[[str, float], None]
"""Told of each write of a contact: its id and the time of the call that wrote it."""


@dataclass(slots=True)
class Contact:
    id: str
    properties: dict[str, str]
    created_at: float
    updated_at: float
    written_at: dict[str, float] = field(default_factory=dict)
    archived: bool = False


_DEFAULT_READ_PROPERTIES = (
    "createdate",
    "email",
    "firstname",
    "lastname",
    "hs_object_id",
    "lastmodifieddate",
)


class Contacts:
    """The contact records of one emulated account, by id and by email."""

    def __init__(
        self,
        settings: Callable[[], EmulatorConfig],
        schema: Schema,
        faults: FaultInjector,
        *,
        write_observers: Sequence[WriteObserver] = (),
    ) -> None:
        self._settings = settings
        self._schema = schema
        self._faults = faults
        self._write_observers = write_observers
        self.contacts: dict[str, Contact] = {}
        self.by_email: dict[str, str] = {}
        self._next_id = 1001
        self.inputs_written = 0

    def live(self) -> int:
        """How many contacts are not archived."""
        return sum(1 for c in self.contacts.values() if not c.archived)

    def dump(self, *, with_timestamps: bool = False) -> list[dict[str, Any]]:
        out = []
        for c in self.contacts.values():
            if c.archived:
                continue
            item: dict[str, Any] = {"id": c.id, "properties": dict(c.properties)}
            if with_timestamps:
                item["written_at"] = dict(c.written_at)
            out.append(item)
        return out

    def _inputs(self, payload: Any) -> list[dict[str, Any]]:
        return batch_inputs(payload, self._settings().max_batch_inputs)

    def _new_contact(self, now: float) -> Contact:
        cid = str(self._next_id)
        self._next_id += 1
        contact = Contact(
            id=cid,
            properties={"hs_object_id": cid, "createdate": iso(now)},
            created_at=now,
            updated_at=now,
        )
        self.contacts[cid] = contact
        return contact

    def _write(self, contact: Contact, values: Mapping[str, str | None], now: float) -> None:
        for name, value in values.items():
            if name == "email":
                old = contact.properties.get("email")
                if old and self.by_email.get(old) == contact.id:
                    del self.by_email[old]
                if value:
                    self.by_email[value] = contact.id
            if value is None:
                contact.properties.pop(name, None)
            else:
                contact.properties[name] = value
            contact.written_at[name] = now
        contact.updated_at = now
        contact.properties["lastmodifieddate"] = iso(now)
        self.inputs_written += 1
        for observer in self._write_observers:
            observer(contact.id, now)

    def _record(self, contact: Contact, names: Iterable[str] | None = None) -> dict[str, Any]:
        props = contact.properties
        shown: dict[str, str | None]  # a named property the contact lacks reads as null
        if names is None:
            shown = dict(props)
        else:
            shown = {n: props.get(n) for n in names}
            for n in _DEFAULT_READ_PROPERTIES:
                if n in props:
                    shown.setdefault(n, props[n])
        return {
            "id": contact.id,
            "properties": shown,
            "createdAt": iso(contact.created_at),
            "updatedAt": iso(contact.updated_at),
            "archived": contact.archived,
        }

    def _find(self, key: str, id_property: str | None) -> Contact | None:
        if id_property in (None, "", "hs_object_id"):
            contact = self.contacts.get(key)
        elif id_property == "email":
            cid = self.by_email.get(key.lower())
            contact = self.contacts.get(cid) if cid else None
        else:
            raise Reply(400, error("VALIDATION_ERROR", f"Unknown idProperty {id_property}"))
        return None if contact is None or contact.archived else contact

    def _write_batch(
        self, payload: Any, now: float, mode: Literal["upsert", "update"]
    ) -> tuple[int, dict[str, Any]]:
        inputs = self._inputs(payload)
        id_props = {i.get("idProperty") or None for i in inputs}
        by_email = "email" in id_props
        if any(p not in (None, "hs_object_id", "email") for p in id_props) or (
            by_email and mode == "update"
        ):
            raise Reply(
                400,
                error(
                    "VALIDATION_ERROR",
                    "Unable to perform update/upsert by non-unique 0-1 property",
                ),
            )
        raw_ids = [str(i.get("id", "")) for i in inputs]
        keys = [
            r.lower() if (i.get("idProperty") == "email") else r
            for r, i in zip(raw_ids, inputs, strict=True)
        ]
        reject_duplicates(keys, raw_ids)

        trace_all = all(i.get("objectWriteTraceId") for i in inputs)
        multi_status = trace_all and not (
            by_email and self._settings().email_upsert_errors == "whole_batch"
        )
        planned: list[tuple[dict[str, Any], Contact | None, dict[str, str | None], str]] = []
        errors: list[dict[str, Any]] = []
        whole: list[tuple[str, dict[str, Any]]] = []
        for item, key, raw in zip(inputs, keys, raw_ids, strict=True):
            if self._faults.omits(key):  # left out of the answer, not written: MISSING_RESULT
                continue
            id_property = item.get("idProperty") or None
            trace = item.get("objectWriteTraceId")
            context: dict[str, Any] = {"ids": [raw]}
            if trace:
                context["objectWriteTraceId"] = [str(trace)]
            values, problems = check_values(item.get("properties", {}), self._schema.live_property)
            if id_property == "email" and (
                not EMAIL_RE.fullmatch(key) or self._faults.rejects(key)
            ):
                problems.insert(
                    0,
                    {
                        "isValid": False,
                        "message": f"Email address {raw} is invalid",
                        "error": "INVALID_EMAIL",
                        "name": "email",
                    },
                )
            if problems:
                err = values_error(problems, context=context)
                errors.append(err)
                whole.append((raw, err))
                continue
            contact = self._find(key, id_property)
            if contact is None and (mode == "update" or id_property != "email"):
                err = error(
                    "OBJECT_NOT_FOUND",
                    f"Could not find a CONTACT with id {raw}; it may be deleted or never existed.",
                    context=context,
                )
                errors.append(err)
                continue
            if id_property == "email":
                values["email"] = key
            planned.append((item, contact, values, key))

        if whole and not multi_status:
            first = whole[0][1]
            ids = [raw for raw, _ in whole]
            whole_context: dict[str, list[str]] = {"ids": ids}
            named = [d["in"] for d in first.get("errors", ()) if d.get("in") != "email"]
            if named:
                whole_context["propertyName"] = list(dict.fromkeys(named))
            raise Reply(
                400, {k: v for k, v in first.items() if k != "context"} | {"context": whole_context}
            )

        started = now
        results = []
        for item, contact, values, _key in planned:
            created = contact is None
            target = contact if contact is not None else self._new_contact(now)
            self._write(target, values, now)
            record = self._record(target, [n for n in values if n != "email"] + ["email"])
            if mode == "upsert":
                # SimplePublicUpsertObject's values are strings (not nullable, unlike
                # SimplePublicObject's): a cleared property comes back as "".
                record["properties"] = {
                    k: "" if v is None else v for k, v in record["properties"].items()
                }
                record["new"] = created
            if item.get("objectWriteTraceId"):
                record["objectWriteTraceId"] = str(item["objectWriteTraceId"])
            results.append(record)
        return batch_body(started, now, results, errors)

    def op_batch_upsert(self, req: ApiRequest, payload: Any, now: float) -> tuple[int, Any]:
        return self._write_batch(payload, now, "upsert")

    def op_batch_update(self, req: ApiRequest, payload: Any, now: float) -> tuple[int, Any]:
        return self._write_batch(payload, now, "update")

    def op_batch_create(self, req: ApiRequest, payload: Any, now: float) -> tuple[int, Any]:
        inputs = self._inputs(payload)
        multi_status = all(i.get("objectWriteTraceId") for i in inputs)
        results, errors = [], []
        for item in inputs:
            trace = item.get("objectWriteTraceId")
            context = {"objectWriteTraceId": [str(trace)]} if trace else {}
            values, problems = check_values(item.get("properties", {}), self._schema.live_property)
            err = None
            if problems:
                err = (400, values_error(problems, context=context))
            elif values.get("email") and values["email"] in self.by_email:
                existing = self.by_email[values["email"]]
                err = (
                    409,
                    error(
                        "CONFLICT",
                        f"Contact already exists. Existing ID: {existing}",
                        context=context,
                    ),
                )
            if err is not None:
                if not multi_status:
                    raise Reply(*err)
                errors.append(err[1])
                continue
            contact = self._new_contact(now)
            self._write(contact, values, now)
            record = self._record(contact)
            if trace:
                record["objectWriteTraceId"] = str(trace)
            results.append(record)
        status, body = batch_body(now, now, results, errors)
        return (201 if status == 200 else status), body

    def op_batch_read(self, req: ApiRequest, payload: Any, now: float) -> tuple[int, Any]:
        inputs = self._inputs(payload)
        id_property = payload.get("idProperty") or None
        names = payload.get("properties") or []
        if id_property not in (None, "hs_object_id", "email"):
            raise Reply(400, error("VALIDATION_ERROR", f"Unknown idProperty {id_property}"))
        results, missing = [], []
        seen: set[str] = set()
        for item in inputs:
            raw = str(item.get("id", ""))
            contact = self._find(raw, id_property)
            if contact is None:
                missing.append(raw)
            elif contact.id not in seen:
                seen.add(contact.id)
                results.append(self._record(contact, names))
        errors = []
        if missing:
            errors.append(
                error(
                    "OBJECT_NOT_FOUND",
                    "Could not get some CONTACT objects, they may be deleted or not exist. Check that ids are valid.",
                    context={"ids": missing},
                )
            )
        return batch_body(now, now, results, errors)

    def op_batch_archive(self, req: ApiRequest, payload: Any, now: float) -> tuple[int, Any]:
        for item in self._inputs(payload):
            contact = self.contacts.get(str(item.get("id", "")))
            if contact is not None and not contact.archived:
                contact.archived = True
                email = contact.properties.get("email")
                if email and self.by_email.get(email) == contact.id:
                    del self.by_email[email]
        return 204, None

    def _single_target(self, req: ApiRequest) -> Contact:
        contact = self._find(req.params["contact_id"], req.query.get("idProperty"))
        if contact is None:
            raise Reply(404, error("OBJECT_NOT_FOUND", "resource not found"))
        return contact

    def op_contact_get(self, req: ApiRequest, payload: Any, now: float) -> tuple[int, Any]:
        contact = self._single_target(req)
        names = [n for n in req.query.get("properties", "").split(",") if n]
        return 200, self._record(contact, names)

    def op_contact_patch(self, req: ApiRequest, payload: Any, now: float) -> tuple[int, Any]:
        contact = self._single_target(req)
        values, problems = check_values(
            (payload or {}).get("properties"), self._schema.live_property
        )
        if problems:
            raise Reply(400, values_error(problems))
        self._write(contact, values, now)
        return 200, self._record(contact)

    def op_contact_archive(self, req: ApiRequest, payload: Any, now: float) -> tuple[int, Any]:
        contact = self._find(req.params["contact_id"], None)
        if contact is not None:
            self.op_batch_archive(req, {"inputs": [{"id": contact.id}]}, now)
        return 204, None

    def op_search(self, req: ApiRequest, payload: Any, now: float) -> tuple[int, Any]:
        payload = payload or {}
        limit = int(payload.get("limit") or 10)
        if limit > SEARCH_MAX_LIMIT:
            raise Reply(
                400,
                error(
                    "VALIDATION_ERROR", f"limit {limit} exceeds the maximum of {SEARCH_MAX_LIMIT}"
                ),
            )
        groups = payload.get("filterGroups") or []
        matches = [
            c
            for c in self.contacts.values()
            if not c.archived
            and (
                not groups
                or any(
                    all(self._filter_matches(c, f) for f in g.get("filters") or []) for g in groups
                )
            )
        ]
        after = int(payload.get("after") or 0)
        page = matches[after : after + limit]
        names = payload.get("properties") or []
        body: dict[str, Any] = {
            "total": len(matches),
            "results": [self._record(c, names) for c in page],
        }
        if after + limit < len(matches):
            body["paging"] = {"next": {"after": str(after + limit)}}
        return 200, body

    @staticmethod
    def _filter_matches(contact: Contact, flt: dict[str, Any]) -> bool:
        name = flt.get("propertyName", "")
        value = contact.properties.get(name)
        op = flt.get("operator", "EQ")
        fold = (lambda v: v.lower()) if name == "email" else (lambda v: v)
        if op == "EQ":
            return value is not None and fold(value) == fold(str(flt.get("value", "")))
        if op == "IN":
            return value is not None and fold(value) in {
                fold(str(v)) for v in flt.get("values") or []
            }
        if op == "HAS_PROPERTY":
            return value is not None
        if op == "NOT_HAS_PROPERTY":
            return value is None
        raise Reply(
            400, error("VALIDATION_ERROR", f"The emulator does not support the {op} operator")
        )

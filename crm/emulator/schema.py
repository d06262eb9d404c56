"""The account's schema: contact property groups and property definitions (create, read, update,
archive, one by one and in batches), the HubSpot-defined properties every account starts with,
and the recycle bin (an archived property keeps its name).

`Schema.live_property` is what a contact write checks its values against (`crm.emulator.values`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from crm.emulator.config import EmulatorConfig
from crm.emulator.wire import ApiRequest, Reply, batch_body, batch_inputs, error, iso

__all__ = ["FIELD_TYPES", "PROPERTY_TYPES", "Schema"]

PROPERTY_TYPES: dict[str, frozenset[str]] = {
    "bool": frozenset({"booleancheckbox", "calculation_equation"}),
    "enumeration": frozenset(
        {"booleancheckbox", "checkbox", "radio", "select", "calculation_equation"}
    ),
    "date": frozenset({"date"}),
    "datetime": frozenset({"date"}),
    "string": frozenset(
        {"text", "textarea", "html", "phonenumber", "file", "calculation_equation"}
    ),
    "number": frozenset({"number", "calculation_equation"}),
    "phone_number": frozenset({"phonenumber"}),
}
FIELD_TYPES = frozenset().union(*PROPERTY_TYPES.values())
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")

_BUILTIN_PROPERTIES: tuple[tuple[str, str, str, str, bool], ...] = (
    # name, label, type, fieldType, readOnlyValue
    ("email", "Email", "string", "text", False),
    ("firstname", "First Name", "string", "text", False),
    ("lastname", "Last Name", "string", "text", False),
    ("phone", "Phone Number", "string", "phonenumber", False),
    ("hs_object_id", "Record ID", "number", "number", True),
    ("createdate", "Create Date", "datetime", "date", True),
    ("lastmodifieddate", "Last Modified Date", "datetime", "date", True),
)


class Schema:
    """The property groups and contact properties of one emulated account."""

    def __init__(self, settings: Callable[[], EmulatorConfig], now: float) -> None:
        self._settings = settings
        self.groups: dict[str, dict[str, Any]] = {
            "contactinformation": {
                "name": "contactinformation",
                "label": "Contact information",
                "displayOrder": 0,
                "archived": False,
            }
        }
        self.properties: dict[str, dict[str, Any]] = {}
        for name, label, type_, field_type, read_only in _BUILTIN_PROPERTIES:
            self.properties[name] = self._property_json(
                {
                    "name": name,
                    "label": label,
                    "type": type_,
                    "fieldType": field_type,
                    "groupName": "contactinformation",
                },
                now,
                hubspot_defined=True,
                read_only_value=read_only,
            )

    def live_property(self, name: str) -> dict[str, Any] | None:
        """The property named so, unless there is none or it is archived."""
        prop = self.properties.get(name)
        return None if prop is None or prop["archived"] else prop

    def restore_property(self, name: str, now: float) -> bool:
        """What HubSpot's UI does from the recycle bin."""
        prop = self.properties.get(name)
        if prop is None or not prop["archived"]:
            return False
        prop["archived"] = False
        prop.pop("archivedAt", None)
        prop["updatedAt"] = iso(now)
        return True

    def dump(self) -> dict[str, Any]:
        return {"groups": list(self.groups.values()), "properties": list(self.properties.values())}

    def _inputs(self, payload: Any) -> list[dict[str, Any]]:
        return batch_inputs(payload, self._settings().max_batch_inputs)

    # ---- property groups -------------------------------------------------------------------

    def op_groups_list(self, req: ApiRequest, payload: Any, now: float) -> tuple[int, Any]:
        return 200, {"results": list(self.groups.values())}

    def _group(self, name: str) -> dict[str, Any]:
        group = self.groups.get(name)
        if group is None:
            raise Reply(404, error("OBJECT_NOT_FOUND", f"Unable to find property group {name}"))
        return group

    def op_group_get(self, req: ApiRequest, payload: Any, now: float) -> tuple[int, Any]:
        return 200, self._group(req.params["name"])

    def op_group_create(self, req: ApiRequest, payload: Any, now: float) -> tuple[int, Any]:
        payload = payload if isinstance(payload, dict) else {}
        name, label = payload.get("name"), payload.get("label")
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise Reply(
                400,
                error(
                    "VALIDATION_ERROR",
                    f"Invalid group name {name!r}: use lower-case letters, digits and underscores, starting with a letter",
                    errors=[{"message": "invalid name", "in": "name"}],
                ),
            )
        if not isinstance(label, str) or not label:
            raise Reply(
                400,
                error(
                    "VALIDATION_ERROR",
                    "label is required",
                    errors=[{"message": "label is required", "in": "label"}],
                ),
            )
        if name in self.groups:
            raise Reply(
                409,
                error("OBJECT_ALREADY_EXISTS", f"A property group named '{name}' already exists."),
            )
        group = {
            "name": name,
            "label": label,
            "displayOrder": int(payload.get("displayOrder", -1)),
            "archived": False,
        }
        self.groups[name] = group
        return 201, group

    def op_group_update(self, req: ApiRequest, payload: Any, now: float) -> tuple[int, Any]:
        group = self._group(req.params["name"])
        payload = payload if isinstance(payload, dict) else {}
        if "label" in payload:
            group["label"] = str(payload["label"])
        if "displayOrder" in payload:
            group["displayOrder"] = int(payload["displayOrder"])
        return 200, group

    def op_group_archive(self, req: ApiRequest, payload: Any, now: float) -> tuple[int, Any]:
        self._group(req.params["name"])
        del self.groups[req.params["name"]]
        return 204, None

    # ---- properties --------------------------------------------------------------------------

    def _property_json(
        self,
        spec: dict[str, Any],
        now: float,
        *,
        hubspot_defined: bool = False,
        read_only_value: bool = False,
    ) -> dict[str, Any]:
        prop = {
            "name": spec["name"],
            "label": spec["label"],
            "type": spec["type"],
            "fieldType": spec["fieldType"],
            "description": spec.get("description", ""),
            "groupName": spec["groupName"],
            "options": [self._option(o, i) for i, o in enumerate(spec.get("options") or [])],
            "displayOrder": int(spec.get("displayOrder", -1)),
            "calculated": False,
            "externalOptions": False,
            "hasUniqueValue": bool(spec.get("hasUniqueValue", False)),
            "hidden": bool(spec.get("hidden", False)),
            "formField": bool(spec.get("formField", False)),
            "createdAt": iso(now),
            "updatedAt": iso(now),
            "archived": False,
            "modificationMetadata": {
                "archivable": not hubspot_defined,
                "readOnlyDefinition": hubspot_defined,
                "readOnlyValue": read_only_value,
            },
        }
        if hubspot_defined:
            prop["hubspotDefined"] = True
        return prop

    @staticmethod
    def _option(option: dict[str, Any], index: int) -> dict[str, Any]:
        return {
            "label": option["label"],
            "value": option["value"],
            "hidden": bool(option.get("hidden", False)),
            "displayOrder": int(option.get("displayOrder", index)),
            "description": option.get("description", ""),
        }

    def _validate_definition(self, spec: dict[str, Any], *, creating: bool) -> list[dict[str, str]]:
        problems: list[dict[str, str]] = []
        if creating:
            for key in ("name", "label", "type", "fieldType", "groupName"):
                if not isinstance(spec.get(key), str) or not spec.get(key):
                    problems.append({"message": f"{key} is required", "in": key})
            if problems:
                return problems
            name = spec["name"]
            if not _NAME_RE.fullmatch(name):
                problems.append(
                    {
                        "message": f"Property name {name!r} is invalid: use lower-case letters, digits and underscores, starting with a letter",
                        "in": "name",
                    }
                )
            if len(name) > self._settings().max_property_name_length:
                problems.append(
                    {
                        "message": f"Property name is longer than {self._settings().max_property_name_length} characters",
                        "in": "name",
                    }
                )
        type_, field_type = spec.get("type"), spec.get("fieldType")
        if type_ not in PROPERTY_TYPES:
            problems.append(
                {"message": f"type {type_!r} is not one of {sorted(PROPERTY_TYPES)}", "in": "type"}
            )
        elif field_type not in FIELD_TYPES:
            problems.append(
                {
                    "message": f"fieldType {field_type!r} is not one of {sorted(FIELD_TYPES)}",
                    "in": "fieldType",
                }
            )
        elif field_type not in PROPERTY_TYPES[type_]:
            problems.append(
                {
                    "message": f"fieldType {field_type} is not valid for type {type_}; use one of {sorted(PROPERTY_TYPES[type_])}",
                    "in": "fieldType",
                }
            )
        group = spec.get("groupName")
        if group is not None and group not in self.groups:
            problems.append(
                {"message": f"Property group {group} does not exist", "in": "groupName"}
            )
        options = spec.get("options")
        if options is not None:
            if not isinstance(options, list) or not all(
                isinstance(o, dict)
                and isinstance(o.get("label"), str)
                and isinstance(o.get("value"), str)
                for o in options
            ):
                problems.append(
                    {"message": "every option needs a label and a value", "in": "options"}
                )
            elif len({o["value"] for o in options}) != len(options):
                problems.append({"message": "option values must be unique", "in": "options"})
        needs_options = type_ == "enumeration" or (
            type_ == "bool" and self._settings().bool_requires_options
        )
        if creating and needs_options and not options:
            problems.append({"message": f"a {type_} property needs options", "in": "options"})
        return problems

    def _definition_error(self, problems: list[dict[str, str]]) -> Reply:
        return Reply(
            400,
            error(
                "VALIDATION_ERROR",
                "Invalid input: " + "; ".join(p["message"] for p in problems),
                errors=problems,
            ),
        )

    def _create_property(self, spec: Any, now: float) -> dict[str, Any]:
        if not isinstance(spec, dict):
            raise Reply(
                400, error("VALIDATION_ERROR", "Invalid input JSON: the body must be an object")
            )
        problems = self._validate_definition(spec, creating=True)
        if problems:
            raise self._definition_error(problems)
        existing = self.properties.get(spec["name"])
        if existing is not None:
            if not existing["archived"]:
                raise Reply(
                    409,
                    error(
                        "OBJECT_ALREADY_EXISTS",
                        f"A property named '{spec['name']}' already exists.",
                        context={"name": [spec["name"]]},
                    ),
                )
            if self._settings().archived_name_conflict:
                raise Reply(
                    409,
                    error(
                        "OBJECT_ALREADY_EXISTS",
                        f"A property named '{spec['name']}' already exists in the recycle bin (archived). "
                        "Restore it or choose another name.",
                        context={"name": [spec["name"]], "archived": ["true"]},
                    ),
                )
        prop = self._property_json(spec, now)
        self.properties[spec["name"]] = prop
        return prop

    def op_properties_list(self, req: ApiRequest, payload: Any, now: float) -> tuple[int, Any]:
        archived = req.query.get("archived", "false").lower() == "true"
        return 200, {"results": [p for p in self.properties.values() if p["archived"] == archived]}

    def _property(self, name: str, archived: bool = False) -> dict[str, Any]:
        prop = self.properties.get(name)
        if prop is None or prop["archived"] != archived:
            raise Reply(404, error("OBJECT_NOT_FOUND", f"Unable to find property {name}"))
        return prop

    def op_property_get(self, req: ApiRequest, payload: Any, now: float) -> tuple[int, Any]:
        archived = req.query.get("archived", "false").lower() == "true"
        return 200, self._property(req.params["name"], archived)

    def op_property_create(self, req: ApiRequest, payload: Any, now: float) -> tuple[int, Any]:
        return 201, self._create_property(payload, now)

    def op_property_update(self, req: ApiRequest, payload: Any, now: float) -> tuple[int, Any]:
        prop = self._property(req.params["name"])
        if prop["modificationMetadata"]["readOnlyDefinition"]:
            raise Reply(
                400,
                error(
                    "VALIDATION_ERROR",
                    f"Property {prop['name']} is HubSpot-defined; its definition is read-only",
                ),
            )
        payload = payload if isinstance(payload, dict) else {}
        merged = {"type": prop["type"], "fieldType": prop["fieldType"]} | {
            k: v for k, v in payload.items() if k in ("type", "fieldType", "groupName", "options")
        }
        problems = self._validate_definition(merged, creating=False)
        if problems:
            raise self._definition_error(problems)
        for key in (
            "label",
            "description",
            "groupName",
            "type",
            "fieldType",
            "hidden",
            "formField",
            "displayOrder",
        ):
            if key in payload:
                prop[key] = payload[key]
        if "options" in payload:
            prop["options"] = [self._option(o, i) for i, o in enumerate(payload["options"])]
        prop["updatedAt"] = iso(now)
        return 200, prop

    def op_property_archive(self, req: ApiRequest, payload: Any, now: float) -> tuple[int, Any]:
        prop = self._property(req.params["name"])
        if prop["modificationMetadata"]["readOnlyDefinition"]:
            raise Reply(
                400,
                error(
                    "VALIDATION_ERROR",
                    f"Property {prop['name']} is HubSpot-defined and cannot be archived",
                ),
            )
        prop["archived"] = True
        prop["archivedAt"] = iso(now)
        return 204, None

    def op_properties_batch_create(
        self, req: ApiRequest, payload: Any, now: float
    ) -> tuple[int, Any]:
        results, errors = [], []
        for item in self._inputs(payload):
            try:
                results.append(self._create_property(item, now))
            except Reply as reply:
                err = dict(reply.body)
                err.setdefault("context", {})
                if isinstance(item, dict) and isinstance(item.get("name"), str):
                    err["context"] = {**err["context"], "name": [item["name"]]}
                errors.append(err)
        status, body = batch_body(now, now, results, errors)
        return (201 if status == 200 else status), body

    def op_properties_batch_read(
        self, req: ApiRequest, payload: Any, now: float
    ) -> tuple[int, Any]:
        inputs = self._inputs(payload)
        archived = bool(payload.get("archived", False))
        results, missing = [], []
        for item in inputs:
            name = str(item.get("name", ""))
            prop = self.properties.get(name)
            if prop is None or prop["archived"] != archived:
                missing.append(name)
            else:
                results.append(prop)
        errors = []
        if missing:
            errors.append(
                error(
                    "OBJECT_NOT_FOUND",
                    "Could not find some properties.",
                    context={"names": missing},
                )
            )
        return batch_body(now, now, results, errors)

    def op_properties_batch_archive(
        self, req: ApiRequest, payload: Any, now: float
    ) -> tuple[int, Any]:
        for item in self._inputs(payload):
            prop = self.properties.get(str(item.get("name", "")))
            if (
                prop is not None
                and not prop["archived"]
                and not prop["modificationMetadata"]["readOnlyDefinition"]
            ):
                prop["archived"] = True
                prop["archivedAt"] = iso(now)
        return 204, None

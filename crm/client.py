"""The HubSpot CRM client hubsync needs: one property group, its properties, contacts by email.

Async, on an injected `httpx.AsyncClient`. The API version is chosen in ONE place
(`HubSpotClient(api_version=...)`, paths from `api_paths`). Methods that send exactly one HTTP
request say so; `ensure_*` may send several. Nothing is retried here: every failure is raised
as a `crm.errors.HubSpotError` subclass with `.retryable`, and the caller (the RateGovernor)
decides. Every response's rate-limit headers are read into a `RateLimitInfo`, exposed on
results and errors.

Hooks for the RateGovernor, called around EVERY HTTP request (`with_hooks` gives one call its
own hooks on a client that shares the token and the HTTP connections):
    before_request()                         awaited before sending (e.g. wait for a permit)
    after_response(rate_limit, status)       after the response (status 0 = no response:
                                             timeout or dropped connection); may be async

The access token never appears in a message, repr or log; `token_fingerprint` names it.
"""

from __future__ import annotations

import asyncio
import copy
import enum
import inspect
import itertools
import re
import secrets
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Literal

import httpx
import msgspec

from crm.errors import (
    ArchivedPropertyError,
    AuthenticationError,
    ConflictError,
    HubSpotError,
    InvalidTokenError,
    LockedError,
    MissingScopesError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    ServerError,
    TransportError,
    UnexpectedResponseError,
    ValidationError,
)
from crm.plans import BATCH_SIZE, DEFAULT_API_VERSION, REQUEST_TIMEOUT_S, ApiVersion
from crm.properties import GROUP_LABEL, GROUP_NAME, PropertySpec, is_valid_property_name
from crm.ratelimit import UNKNOWN, RateLimitInfo, parse_retry_after
from crm.tokens import token_fingerprint, token_problem

__all__ = [
    "DEFAULT_API_VERSION",
    "DEFAULT_BASE_URL",
    "ApiVersion",
    "BatchWriteResult",
    "ContactRecord",
    "ContactUpdate",
    "ContactUpsert",
    "EnsureOutcome",
    "EnsureResult",
    "HubSpotClient",
    "PropertyError",
    "ReadResult",
    "TokenInfo",
    "WriteResult",
    "WriteStatus",
    "api_paths",
    "check_token",
]

DEFAULT_BASE_URL = "https://api.hubapi.com"
"""v1-v3 end support in September 2027 (hubspot-api.md §0); the date-versioned paths replace them."""
DEFAULT_TIMEOUT = httpx.Timeout(REQUEST_TIMEOUT_S, connect=5.0)
MAX_BATCH = BATCH_SIZE

BeforeRequest = Callable[[], Awaitable[None]]
AfterResponse = Callable[[RateLimitInfo, int], Awaitable[None] | None]

_EMAIL_RE = re.compile(r"^[^@\s/?#\\]+@[^@\s/?#\\]+\.[^@\s/?#\\]+$")


def api_paths(version: ApiVersion) -> tuple[str, str]:
    """(contacts objects path, contacts properties path) for an API version."""
    if version == "v3":
        return "/crm/v3/objects/contacts", "/crm/v3/properties/contacts"
    if version == "2026-03":
        return "/crm/objects/2026-03/contacts", "/crm/properties/2026-03/contacts"
    raise ValueError(f"unknown HubSpot API version {version!r}; use 'v3' or '2026-03'")


# ---- values the client returns ---------------------------------------------------------------


class ContactUpsert(msgspec.Struct, frozen=True):
    """Set these properties on the contact with this email, creating it if needed."""

    email: str
    properties: dict[str, str]


class ContactUpdate(msgspec.Struct, frozen=True):
    """Set these properties on the contact with this HubSpot record id."""

    id: str
    properties: dict[str, str]


class PropertyError(msgspec.Struct, frozen=True, kw_only=True):
    """One property HubSpot named in an error: its internal name, HubSpot's code (e.g.
    PROPERTY_DOESNT_EXIST, INVALID_OPTION, INVALID_NUMBER; None when HubSpot gave none) and
    message."""

    name: str
    code: str | None = None
    message: str = ""


class WriteStatus(enum.StrEnum):
    CREATED = "created"
    WRITTEN = "written"
    FAILED = "failed"


class WriteResult(msgspec.Struct, frozen=True, kw_only=True):
    """The fate of one input: `key` is the lower-cased email (upsert) or the record id (update)."""

    key: str
    status: WriteStatus
    trace_id: str
    contact_id: str | None = None
    category: str | None = None
    message: str | None = None
    property_errors: tuple[PropertyError, ...] = ()
    """The properties HubSpot named as the cause of a failure, with its code for each."""

    @property
    def ok(self) -> bool:
        return self.status is not WriteStatus.FAILED


class BatchWriteResult(msgspec.Struct, frozen=True, kw_only=True):
    results: tuple[WriteResult, ...]
    status_code: int
    rate_limit: RateLimitInfo
    correlation_id: str | None = None

    @property
    def by_key(self) -> dict[str, WriteResult]:
        return {r.key: r for r in self.results}

    @property
    def failed(self) -> tuple[WriteResult, ...]:
        return tuple(r for r in self.results if not r.ok)

    @property
    def succeeded(self) -> tuple[WriteResult, ...]:
        return tuple(r for r in self.results if r.ok)


class ContactRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    email: str | None
    properties: dict[str, str | None]


class ReadResult(msgspec.Struct, frozen=True, kw_only=True):
    found: dict[str, ContactRecord]
    """Lower-cased email -> contact."""
    missing: tuple[str, ...]
    """Lower-cased emails HubSpot has no contact for."""
    rate_limit: RateLimitInfo


class EnsureOutcome(enum.StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    ARCHIVED = "archived"
    """The name is in HubSpot's recycle bin; restore it in HubSpot (only with on_archived="report")."""


class EnsureResult(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    outcome: EnsureOutcome
    changed: tuple[str, ...] = ()
    """The fields a PATCH brought back to the wanted definition."""


class TokenInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What `access-token-info` says of a private-app token: its account, app and scopes."""

    hub_id: int | None
    app_id: int | None
    user_id: int | None
    scopes: tuple[str, ...]


# ---- wire shapes decoded with msgspec (lenient: every field optional) -------------------------
# HubSpot's schemas mark `errors`, `links` and `context` of a StandardError required and property
# values as strings, but HubSpot itself is not always strict: members may be missing or null,
# `subCategory` is an object in one schema and a string in another, a value may be null or "".
# A member that may be missing is None here, and the code reads it with `or` (typed, no surprise).


class _StandardError(msgspec.Struct):
    status: Any = None
    category: str | None = None
    subCategory: Any = None
    message: str | None = None
    context: dict[str, Any] | None = None
    errors: list[Any] | None = None
    policyName: str | None = None


class _Record(msgspec.Struct):
    id: str
    properties: dict[str, str | None] | None = None
    new: bool | None = None
    objectWriteTraceId: str | None = None


class _BatchResponse(msgspec.Struct):
    results: list[_Record] | None = None
    errors: list[_StandardError] | None = None
    status: str | None = None


class _PropertyBatch(msgspec.Struct):
    results: list[dict[str, Any]] | None = None
    errors: list[_StandardError] | None = None


class _TokenInfo(msgspec.Struct):
    hubId: int | None = None
    appId: int | None = None
    userId: int | None = None
    scopes: list[str] = []


_decode_batch = msgspec.json.Decoder(_BatchResponse).decode
_decode_property_batch = msgspec.json.Decoder(_PropertyBatch).decode
_decode_error = msgspec.json.Decoder(_StandardError).decode
_encode = msgspec.json.encode


def _context_list(error: _StandardError, key: str) -> list[str]:
    value = (error.context or {}).get(key)
    if isinstance(value, list):
        return [str(v) for v in value]
    return [str(value)] if value is not None else []


_INVALID_VALUES = re.compile(r"Property values were not valid: (\[.*\])", re.DOTALL)


def _property_errors(error: _StandardError) -> tuple[PropertyError, ...]:
    """The properties an error names, with HubSpot's code for each: from `errors[].in` or
    `errors[].context.propertyName` (the documented places), the error's own
    `context.propertyName`, or the JSON list HubSpot puts in the message of a batch 400
    ("Property values were not valid: [{"name": ..., "error": ...}]")."""
    found: dict[str, PropertyError] = {}

    def add(name: Any, code: Any, message: Any) -> None:
        if isinstance(name, str) and name and name not in found:
            found[name] = PropertyError(
                name=name,
                code=code if isinstance(code, str) else None,
                message=message if isinstance(message, str) else "",
            )

    for detail in error.errors or ():
        if not isinstance(detail, dict):
            continue
        raw_context = detail.get("context")
        context = raw_context if isinstance(raw_context, dict) else {}
        names = context.get("propertyName") or []
        for name in [detail.get("in"), *(names if isinstance(names, list) else [names])]:
            add(name, detail.get("code") or detail.get("subCategory"), detail.get("message"))
    for name in _context_list(error, "propertyName"):
        add(name, error.subCategory, error.message)
    listed = _INVALID_VALUES.search(error.message or "")
    if listed:
        try:
            problems = msgspec.json.decode(listed.group(1))
        except msgspec.DecodeError:
            problems = []
        for problem in problems if isinstance(problems, list) else ():
            if isinstance(problem, dict):
                add(problem.get("name"), problem.get("error"), problem.get("message"))
    return tuple(found.values())


def check_token(token: str) -> None:
    """Refuse a token that cannot travel in an `Authorization` header (crm.tokens.token_problem),
    naming the problem and its position, never the token."""
    if problem := token_problem(token):
        raise InvalidTokenError(
            f"{problem}: copy the token again from HubSpot (a private-app token or service key is "
            "printable ASCII without spaces) and recreate the activation"
        )


def _transport_failure(
    exc: BaseException, method: str, path: str, operation: str
) -> TransportError:
    """A safe description of a request that got no response: the exception's class and the
    path, never its text (h11 and httpx may quote the request's headers, the token among them)."""
    timed_out = isinstance(exc, httpx.TimeoutException)
    what = (
        f"HubSpot did not answer {method} {path} in time ({type(exc).__name__})."
        if timed_out
        else f"The connection to HubSpot failed on {method} {path} ({type(exc).__name__})."
    )
    return TransportError(what, operation=operation)


def _email_for_path(email: str) -> str:
    if not _EMAIL_RE.fullmatch(email) or ".." in email:
        raise ValueError(f"{email!r} is not an email address hubsync will send in a URL")
    return urllib.parse.quote(email.lower(), safe="@")


def _name_for_path(name: str) -> str:
    if not is_valid_property_name(name):
        raise ValueError(
            f"{name!r} is not a valid HubSpot internal name (lower-case letters, digits, "
            "underscores, starting with a letter)"
        )
    return name


def _check_batch(inputs: Sequence[object]) -> None:
    if not inputs:
        raise ValueError("a batch needs at least one input")
    if len(inputs) > MAX_BATCH:
        raise ValueError(f"a HubSpot batch takes at most {MAX_BATCH} inputs, got {len(inputs)}")


class HubSpotClient:
    """HubSpot's contacts and contact-properties APIs, for one access token."""

    def __init__(
        self,
        token: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        api_version: ApiVersion = DEFAULT_API_VERSION,
        http: httpx.AsyncClient | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        before_request: BeforeRequest | None = None,
        after_response: AfterResponse | None = None,
        trace_prefix: str | None = None,
    ) -> None:
        check_token(token)
        self._token = token
        self.fingerprint = token_fingerprint(token)
        self.base_url = base_url.rstrip("/")
        self.api_version = api_version
        self._objects, self._properties = api_paths(api_version)
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(timeout=timeout)
        self._before = before_request
        self._after = after_response
        self._trace_prefix = trace_prefix or secrets.token_hex(6)
        self._trace_counter = itertools.count(1)

    def __repr__(self) -> str:
        return (
            f"HubSpotClient(token={self.fingerprint}…, base_url={self.base_url!r}, "
            f"api_version={self.api_version!r})"
        )

    async def aclose(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> HubSpotClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def with_hooks(
        self,
        *,
        before_request: BeforeRequest | None = None,
        after_response: AfterResponse | None = None,
    ) -> HubSpotClient:
        """This client with other hooks: same token, base URL, version and HTTP connections (it
        never closes them). The governor gives each call its own, so each request knows its call."""
        hooked = copy.copy(self)
        hooked._owns_http = False
        hooked._before = before_request
        hooked._after = after_response
        return hooked

    def _trace_id(self) -> str:
        return f"{self._trace_prefix}-{next(self._trace_counter)}"

    # ---- one HTTP request ----------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        operation: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
    ) -> tuple[httpx.Response, RateLimitInfo]:
        """Send one request; return a 2xx response or raise the matching HubSpotError."""
        if self._before is not None:
            await self._before()
        headers = {"Authorization": f"Bearer {self._token}"}
        content = None
        if json is not None:
            content = _encode(json)
            headers["Content-Type"] = "application/json"
        failure: TransportError | None = None
        try:
            response = await self._http.request(
                method, self.base_url + path, content=content, params=params, headers=headers
            )
        except Exception as exc:  # whatever the HTTP stack raises (httpx, h11, codecs)
            failure = _transport_failure(exc, method, path, operation)
        if failure is not None:  # raised out here: no __context__ holding the library's text
            await self._notify(UNKNOWN, 0)
            raise failure
        info = RateLimitInfo.from_headers(response.headers)
        await self._notify(info, response.status_code)
        if response.status_code >= 400 or response.status_code < 200:
            raise self._error_for(response, info, operation)
        return response, info

    async def _notify(self, info: RateLimitInfo, status: int) -> None:
        if self._after is not None:
            outcome = self._after(info, status)
            if inspect.isawaitable(outcome):
                await outcome

    @staticmethod
    def _error_for(response: httpx.Response, info: RateLimitInfo, operation: str) -> HubSpotError:
        status = response.status_code
        try:
            body = _decode_error(response.content) if response.content else _StandardError()
        except (msgspec.DecodeError, msgspec.ValidationError):
            body = _StandardError(message=response.text[:300] or None)
        common: dict[str, Any] = {
            "status": status,
            "category": body.category,
            "hubspot_message": body.message,
            "correlation_id": response.headers.get("x-hubspot-correlation-id"),
            "rate_limit": info,
            "operation": operation,
        }
        if status == 401:
            return AuthenticationError("HubSpot rejected the access token (401).", **common)
        if status == 403:
            scopes: list[str] = []
            for detail in body.errors or ():
                context = detail.get("context", {}) if isinstance(detail, dict) else {}
                for key in ("requiredGranularScopes", "requiredScopes"):
                    scopes.extend(str(s) for s in context.get(key, ()))
            return MissingScopesError(
                "The access token lacks a scope this call needs (403).", scopes=scopes, **common
            )
        if status == 429:
            policy = body.policyName
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            if retry_after is None and policy == "TEN_SECONDLY_ROLLING":
                retry_after = info.interval_seconds or 10.0
            elif retry_after is None and policy != "DAILY":
                retry_after = 1.0  # search's per-second limit, or an unknown policy
            return RateLimitedError(
                f"HubSpot rate limit hit (429, policy {policy or 'unknown'}).",
                policy=policy,
                retry_after=retry_after,
                **common,
            )
        if status == 400:
            return ValidationError(
                "HubSpot refused the request as invalid (400).",
                ids=_context_list(body, "ids"),
                details=body.errors or [],
                property_errors=_property_errors(body),
                **common,
            )
        if status == 404:
            return NotFoundError("HubSpot found nothing there (404).", **common)
        if status == 409:
            return ConflictError("It already exists in HubSpot (409).", **common)
        if status == 413:
            return PayloadTooLargeError("HubSpot refused the request as too large (413).", **common)
        if status == 423:
            return LockedError("HubSpot answered 423 Locked.", **common)
        if status >= 500:
            return ServerError(f"HubSpot failed with {status}.", **common)
        return UnexpectedResponseError(f"HubSpot answered an unexpected {status}.", **common)

    # ---- contacts --------------------------------------------------------------------------

    async def upsert_contacts(self, inputs: Sequence[ContactUpsert]) -> BatchWriteResult:
        """Create or update contacts by email. ONE request (`batch/upsert`, idProperty=email).

        At most 100 inputs, unique by lower-cased email (HubSpot rejects the whole batch
        otherwise). Results come back per lower-cased email; a per-input failure is a FAILED
        result, a whole-request failure raises.
        """
        _check_batch(inputs)
        traces = [self._trace_id() for _ in inputs]
        body = {
            "inputs": [
                {
                    "id": i.email,
                    "idProperty": "email",
                    "properties": i.properties,
                    "objectWriteTraceId": t,
                }
                for i, t in zip(inputs, traces, strict=True)
            ]
        }
        keys = [i.email.lower() for i in inputs]
        return await self._write(
            "POST",
            f"{self._objects}/batch/upsert",
            "upsert contacts",
            body,
            keys,
            traces,
            by_email=True,
        )

    async def update_contacts(self, inputs: Sequence[ContactUpdate]) -> BatchWriteResult:
        """Update contacts by HubSpot record id. ONE request (`batch/update`); ≤100 unique ids."""
        _check_batch(inputs)
        traces = [self._trace_id() for _ in inputs]
        body = {
            "inputs": [
                {"id": i.id, "properties": i.properties, "objectWriteTraceId": t}
                for i, t in zip(inputs, traces, strict=True)
            ]
        }
        keys = [i.id for i in inputs]
        return await self._write(
            "POST",
            f"{self._objects}/batch/update",
            "update contacts",
            body,
            keys,
            traces,
            by_email=False,
        )

    async def _write(
        self,
        method: str,
        path: str,
        operation: str,
        body: dict[str, Any],
        keys: list[str],
        traces: list[str],
        *,
        by_email: bool,
    ) -> BatchWriteResult:
        response, info = await self._request(method, path, operation, json=body)
        try:
            parsed = _decode_batch(response.content)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise UnexpectedResponseError(
                f"HubSpot's {response.status_code} body is not a batch response ({exc}).",
                status=response.status_code,
                rate_limit=info,
                operation=operation,
            ) from None
        if not parsed.results and not parsed.errors:
            raise UnexpectedResponseError(
                f"HubSpot answered {response.status_code} with neither results nor errors; "
                "nothing is known to be written.",
                status=response.status_code,
                rate_limit=info,
                operation=operation,
                correlation_id=response.headers.get("x-hubspot-correlation-id"),
            )
        by_trace = dict(zip(traces, keys, strict=True))
        trace_of = dict(zip(keys, traces, strict=True))
        known_keys = set(keys)
        outcome: dict[str, WriteResult] = {}
        for record in parsed.results or ():
            key = by_trace.get(record.objectWriteTraceId or "")
            if key is None:
                email = (record.properties or {}).get("email")
                key = (email or "").lower() if by_email else record.id
            if key not in known_keys:
                continue
            status = WriteStatus.CREATED if record.new else WriteStatus.WRITTEN
            outcome[key] = WriteResult(
                key=key, status=status, trace_id=trace_of[key], contact_id=record.id
            )
        unattributed: list[_StandardError] = []
        for error in parsed.errors or ():
            hit = [by_trace[t] for t in _context_list(error, "objectWriteTraceId") if t in by_trace]
            if not hit:
                ids = _context_list(error, "ids")
                hit = [i.lower() if by_email else i for i in ids]
                hit = [k for k in hit if k in known_keys]
            if not hit:
                unattributed.append(error)
            for key in hit:
                outcome.setdefault(
                    key,
                    WriteResult(
                        key=key,
                        status=WriteStatus.FAILED,
                        trace_id=trace_of[key],
                        category=error.category,
                        message=error.message,
                        property_errors=_property_errors(error),
                    ),
                )
        results = []
        for key, trace in zip(keys, traces, strict=True):
            result = outcome.get(key)
            if result is None:
                sole = unattributed[0] if len(unattributed) == 1 else None
                result = WriteResult(
                    key=key,
                    status=WriteStatus.FAILED,
                    trace_id=trace,
                    category=sole.category if sole else "MISSING_RESULT",
                    message=sole.message
                    if sole
                    else "HubSpot returned no result for this input; treat it as not written.",
                    property_errors=_property_errors(sole) if sole else (),
                )
            results.append(result)
        return BatchWriteResult(
            results=tuple(results),
            status_code=response.status_code,
            rate_limit=info,
            correlation_id=response.headers.get("x-hubspot-correlation-id"),
        )

    async def read_contacts_by_email(
        self, emails: Iterable[str], properties: Sequence[str] = ()
    ) -> ReadResult:
        """Read contacts by email. ONE request (`batch/read`, idProperty=email); ≤100 emails.

        Misses (HubSpot's 207 OBJECT_NOT_FOUND) are listed in `missing`, not raised.
        """
        wanted = list(dict.fromkeys(e.lower() for e in emails))
        _check_batch(wanted)
        for name in properties:
            _name_for_path(name)
        body = {
            "inputs": [{"id": e} for e in wanted],
            "idProperty": "email",
            "properties": ["email", *properties],
            "propertiesWithHistory": [],
        }
        response, info = await self._request(
            "POST", f"{self._objects}/batch/read", "read contacts", json=body
        )
        try:
            parsed = _decode_batch(response.content)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise UnexpectedResponseError(
                f"Unreadable batch read response ({exc}).",
                status=response.status_code,
                rate_limit=info,
                operation="read contacts",
            ) from None
        found: dict[str, ContactRecord] = {}
        for record in parsed.results or ():
            values = record.properties or {}
            email = (values.get("email") or "").lower() or None
            if email is not None:
                found[email] = ContactRecord(id=record.id, email=email, properties=values)
        missing = tuple(e for e in wanted if e not in found)
        if not parsed.results and not parsed.errors:
            raise UnexpectedResponseError(
                f"HubSpot answered {response.status_code} with neither results nor errors.",
                status=response.status_code,
                rate_limit=info,
                operation="read contacts",
            )
        return ReadResult(found=found, missing=missing, rate_limit=info)

    async def get_contact_by_email(
        self, email: str, properties: Sequence[str] = ()
    ) -> ContactRecord | None:
        """One contact by email, or None. ONE request (`GET …/{email}?idProperty=email`)."""
        params = {"idProperty": "email"}
        if properties:
            params["properties"] = ",".join(_name_for_path(p) for p in properties)
        try:
            response, _ = await self._request(
                "GET", f"{self._objects}/{_email_for_path(email)}", "get contact", params=params
            )
        except NotFoundError:
            return None
        record = msgspec.json.decode(response.content, type=_Record)
        values = record.properties or {}
        return ContactRecord(id=record.id, email=values.get("email"), properties=values)

    # ---- the token itself ----------------------------------------------------------------------

    async def token_info(self) -> TokenInfo:
        """The token's account (hubId), app and scopes. ONE request (`POST /oauth/v2/private-apps/
        get/access-token-info`, the token in the body as `tokenKey` and in the header, which EU
        tokens need). HubSpot documents it for private-app tokens; for a token it does not cover
        it raises (e.g. NotFoundError), and the caller falls back to probing with harmless calls.
        """
        response, info = await self._request(
            "POST",
            "/oauth/v2/private-apps/get/access-token-info",
            "read token info",
            json={"tokenKey": self._token},
        )
        try:
            parsed = msgspec.json.decode(response.content, type=_TokenInfo)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise UnexpectedResponseError(
                f"Unreadable token info response ({exc}).",
                status=response.status_code,
                rate_limit=info,
                operation="read token info",
            ) from None
        return TokenInfo(
            hub_id=parsed.hubId,
            app_id=parsed.appId,
            user_id=parsed.userId,
            scopes=tuple(parsed.scopes),
        )

    # ---- property group and properties ---------------------------------------------------------

    async def ensure_property_group(
        self, name: str = GROUP_NAME, label: str = GROUP_LABEL, display_order: int = -1
    ) -> EnsureResult:
        """Make the property group exist with this label. 1-3 requests (GET, POST or PATCH)."""
        path = f"{self._properties}/groups/{_name_for_path(name)}"
        try:
            response, _ = await self._request("GET", path, "read property group")
            group = response.json()
        except NotFoundError:
            try:
                await self._request(
                    "POST",
                    f"{self._properties}/groups",
                    "create property group",
                    json={"name": name, "label": label, "displayOrder": display_order},
                )
                return EnsureResult(name=name, outcome=EnsureOutcome.CREATED)
            except ConflictError:  # created meanwhile by someone else
                response, _ = await self._request("GET", path, "read property group")
                group = response.json()
        if group.get("label") != label:
            await self._request("PATCH", path, "update property group", json={"label": label})
            return EnsureResult(name=name, outcome=EnsureOutcome.UPDATED, changed=("label",))
        return EnsureResult(name=name, outcome=EnsureOutcome.UNCHANGED)

    async def read_property(self, name: str, *, archived: bool = False) -> dict[str, Any] | None:
        """HubSpot's JSON for one property, or None. ONE request."""
        try:
            response, _ = await self._request(
                "GET",
                f"{self._properties}/{_name_for_path(name)}",
                "read property",
                params={"archived": "true" if archived else "false"},
            )
        except NotFoundError:
            return None
        return response.json()

    async def _batch_read_properties(
        self, names: list[str], archived: bool
    ) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(names), MAX_BATCH):
            chunk = names[start : start + MAX_BATCH]
            response, _ = await self._request(
                "POST",
                f"{self._properties}/batch/read",
                "read properties",
                json={
                    "inputs": [{"name": n} for n in chunk],
                    "archived": archived,
                    "dataSensitivity": "non_sensitive",
                },
            )
            for prop in _decode_property_batch(response.content).results or ():
                if prop.get("name") in chunk and bool(prop.get("archived")) == archived:
                    found[prop["name"]] = prop
        return found

    async def ensure_properties(
        self,
        specs: Sequence[PropertySpec],
        *,
        on_archived: Literal["raise", "report"] = "raise",
        before_writes: Awaitable[object] | None = None,
    ) -> list[EnsureResult]:
        """Make each property exist and match its spec. Idempotent; several requests:
        batch read (1 per 100), batch read of archived names if some are missing, batch
        create of the missing, one PATCH per drifted property (the PATCHes at once).

        ``before_writes`` (e.g. the task making their property group) is awaited after the
        reads and before the first create or PATCH: the reads overlap it, the writes need it.

        A name found only in HubSpot's recycle bin is not re-created: with on_archived="raise"
        an ArchivedPropertyError names them (after everything else is ensured); with "report"
        they come back as EnsureOutcome.ARCHIVED.
        """
        names = [_name_for_path(s.name) for s in specs]
        if len(set(names)) != len(names):
            raise ValueError("property specs must have unique names")
        by_name = {s.name: s for s in specs}
        existing = await self._batch_read_properties(names, archived=False) if names else {}
        missing = [n for n in names if n not in existing]
        archived = await self._batch_read_properties(missing, archived=True) if missing else {}
        to_create = [n for n in missing if n not in archived]
        if before_writes is not None:
            await before_writes
        created: set[str] = set()
        for start in range(0, len(to_create), MAX_BATCH):
            chunk = to_create[start : start + MAX_BATCH]
            created |= await self._create_properties(
                [by_name[n] for n in chunk], existing, archived
            )
        results: dict[str, EnsureResult] = {}
        for name in names:
            if name in created:
                results[name] = EnsureResult(name=name, outcome=EnsureOutcome.CREATED)
            elif name in archived:
                results[name] = EnsureResult(name=name, outcome=EnsureOutcome.ARCHIVED)
        # Drifted properties do not depend on each other: their PATCHes go out together.
        kept = [n for n in names if n not in results]
        patched = await asyncio.gather(
            *(self._reconcile(by_name[n], existing[n]) for n in kept), return_exceptions=True
        )
        for name, result in zip(kept, patched, strict=True):
            if isinstance(result, BaseException):
                raise result
            results[name] = result
        if on_archived == "raise" and archived:
            listed = ", ".join(sorted(archived))
            raise ArchivedPropertyError(
                f"HubSpot holds these properties in its recycle bin (archived): {listed}.",
                names=sorted(archived),
                operation="ensure properties",
            )
        return [results[n] for n in names]

    async def _create_properties(
        self,
        specs: list[PropertySpec],
        existing: dict[str, dict[str, Any]],
        archived: dict[str, dict[str, Any]],
    ) -> set[str]:
        response, info = await self._request(
            "POST",
            f"{self._properties}/batch/create",
            "create properties",
            json={"inputs": [s.to_create_body() for s in specs]},
        )
        parsed = _decode_property_batch(response.content)
        created = {p.get("name") for p in parsed.results or ()}
        failures = []
        for error in parsed.errors or ():
            names = _context_list(error, "name")
            if error.category in ("OBJECT_ALREADY_EXISTS", "CONFLICT") and names:
                for name in names:  # created meanwhile, or archived: read which
                    live = await self.read_property(name)
                    if live is not None:
                        existing[name] = live
                    else:
                        archived[name] = await self.read_property(name, archived=True) or {}
            else:
                failures.append(error)
        if failures:
            raise ValidationError(
                "HubSpot refused some property definitions.",
                ids=[n for e in failures for n in _context_list(e, "name")],
                details=[e.message for e in failures],
                hubspot_message="; ".join(e.message or "" for e in failures),
                status=response.status_code,
                rate_limit=info,
                operation="create properties",
            )
        return {n for n in created if isinstance(n, str)}

    async def _reconcile(self, spec: PropertySpec, current: dict[str, Any]) -> EnsureResult:
        patch = spec.drift(current)
        if not patch:
            return EnsureResult(name=spec.name, outcome=EnsureOutcome.UNCHANGED)
        await self._request(
            "PATCH", f"{self._properties}/{spec.name}", "update property", json=patch
        )
        return EnsureResult(
            name=spec.name, outcome=EnsureOutcome.UPDATED, changed=tuple(sorted(patch))
        )

    async def ensure_property(self, spec: PropertySpec) -> EnsureResult:
        """`ensure_properties` for one spec."""
        return (await self.ensure_properties([spec]))[0]

    async def archive_property(self, name: str) -> bool:
        """Move a property to HubSpot's recycle bin. ONE request. False if it was not there
        (never existed or already archived): archiving is idempotent."""
        try:
            await self._request(
                "DELETE", f"{self._properties}/{_name_for_path(name)}", "archive property"
            )
        except NotFoundError:
            return False
        return True

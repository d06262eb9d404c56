"""The HubSpot CRM client hubsync needs: one property group, its properties, contacts by email.

Async, on an injected `httpx.AsyncClient`. The API version is chosen in ONE place
(`HubSpotClient(api_version=...)`, paths from `api_paths`). Every method sends exactly ONE HTTP
request; the workflows that need several (ensure the group and the properties) are `crm.schema`.
What the methods take and return is `crm.results`; HubSpot's JSON as decoded, `crm.wire`. Nothing is retried here: every failure is raised
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

import copy
import inspect
import itertools
import re
import secrets
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import httpx
import msgspec

from crm.errors import (
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
from crm.results import (
    BatchWriteResult,
    ContactRecord,
    ContactUpdate,
    ContactUpsert,
    PropertiesCreated,
    ReadResult,
    TokenInfo,
    WriteResult,
    WriteStatus,
)
from crm.tokens import token_fingerprint, token_problem
from crm.wire import (
    Record,
    StandardError,
    TokenInfoBody,
    context_list,
    decode_batch,
    decode_error,
    decode_property_batch,
    encode_json,
    property_errors,
)

__all__ = [
    "DEFAULT_API_VERSION",
    "DEFAULT_BASE_URL",
    "MAX_BATCH",
    "ApiVersion",
    "HubSpotClient",
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
            content = encode_json(json)
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
            body = decode_error(response.content) if response.content else StandardError()
        except (msgspec.DecodeError, msgspec.ValidationError):
            body = StandardError(message=response.text[:300] or None)
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
                ids=context_list(body, "ids"),
                details=body.errors or [],
                property_errors=property_errors(body),
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
            parsed = decode_batch(response.content)
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
        unattributed: list[StandardError] = []
        for error in parsed.errors or ():
            hit = [by_trace[t] for t in context_list(error, "objectWriteTraceId") if t in by_trace]
            if not hit:
                ids = context_list(error, "ids")
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
                        property_errors=property_errors(error),
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
                    property_errors=property_errors(sole) if sole else (),
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
            parsed = decode_batch(response.content)
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
        record = msgspec.json.decode(response.content, type=Record)
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
            parsed = msgspec.json.decode(response.content, type=TokenInfoBody)
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

    # ---- property group and properties (one request each; crm.schema composes them) ----------

    def _group_path(self, name: str) -> str:
        return f"{self._properties}/groups/{_name_for_path(name)}"

    async def read_property_group(self, name: str = GROUP_NAME) -> dict[str, Any] | None:
        """HubSpot's JSON for one property group, or None. ONE request."""
        try:
            response, _ = await self._request("GET", self._group_path(name), "read property group")
        except NotFoundError:
            return None
        group: dict[str, Any] = response.json()
        return group

    async def create_property_group(
        self, name: str = GROUP_NAME, label: str = GROUP_LABEL, display_order: int = -1
    ) -> None:
        """Create a property group. ONE request; ConflictError if it exists already."""
        await self._request(
            "POST",
            f"{self._properties}/groups",
            "create property group",
            json={"name": _name_for_path(name), "label": label, "displayOrder": display_order},
        )

    async def update_property_group(self, name: str, label: str) -> None:
        """Give a property group this label. ONE request."""
        await self._request(
            "PATCH", self._group_path(name), "update property group", json={"label": label}
        )

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
        found: dict[str, Any] = response.json()
        return found

    async def read_properties(
        self, names: Sequence[str], *, archived: bool
    ) -> dict[str, dict[str, Any]]:
        """HubSpot's JSON of the properties it has by these names (live, or only the archived
        ones), by name. ONE request (`batch/read`); <=100 names."""
        _check_batch(names)
        wanted = [_name_for_path(n) for n in names]
        response, _ = await self._request(
            "POST",
            f"{self._properties}/batch/read",
            "read properties",
            json={
                "inputs": [{"name": n} for n in wanted],
                "archived": archived,
                "dataSensitivity": "non_sensitive",
            },
        )
        found: dict[str, dict[str, Any]] = {}
        for prop in decode_property_batch(response.content).results or ():
            if prop.get("name") in wanted and bool(prop.get("archived")) == archived:
                found[prop["name"]] = prop
        return found

    async def create_properties(self, specs: Sequence[PropertySpec]) -> PropertiesCreated:
        """Create properties. ONE request (`batch/create`); <=100 specs. Names HubSpot says exist
        already (live or archived) are listed in `conflicts`; definitions it refuses raise
        ValidationError, with their names as `ids`."""
        _check_batch(specs)
        response, info = await self._request(
            "POST",
            f"{self._properties}/batch/create",
            "create properties",
            json={"inputs": [s.to_create_body() for s in specs]},
        )
        parsed = decode_property_batch(response.content)
        created = [p.get("name") for p in parsed.results or ()]
        conflicts: list[str] = []
        failures = []
        for error in parsed.errors or ():
            names = context_list(error, "name")
            if error.category in ("OBJECT_ALREADY_EXISTS", "CONFLICT") and names:
                conflicts += names
            else:
                failures.append(error)
        if failures:
            raise ValidationError(
                "HubSpot refused some property definitions.",
                ids=[n for e in failures for n in context_list(e, "name")],
                details=[e.message for e in failures],
                hubspot_message="; ".join(e.message or "" for e in failures),
                status=response.status_code,
                rate_limit=info,
                operation="create properties",
            )
        return PropertiesCreated(
            created=tuple(n for n in created if isinstance(n, str)), conflicts=tuple(conflicts)
        )

    async def update_property(self, name: str, patch: dict[str, Any]) -> None:
        """Change these fields of a property's definition. ONE request (PATCH)."""
        await self._request(
            "PATCH", f"{self._properties}/{_name_for_path(name)}", "update property", json=patch
        )

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

"""HubSpot for hubsync: the API client, property naming/typing/values, and the local emulator.

crm.client      HubSpotClient: one method, one HTTP request
crm.results     what the client takes and returns (ContactUpsert, WriteResult, EnsureResult, ...)
crm.wire        HubSpot's JSON as decoded (internal to the client)
crm.schema      the multi-request workflows: ensure the property group and the properties
crm.errors      the HubSpotError tree
crm.ratelimit   RateLimitInfo (the X-HubSpot-RateLimit-* headers)
crm.properties  PropertySpec, internal_name, audience_property, attribute_property, format_value
crm.tokens      token_fingerprint
crm.emulator    HubSpotState, EmulatorServer, EmulatorAdmin (imported on demand: it needs uvicorn)
"""

from crm.client import (
    DEFAULT_API_VERSION,
    DEFAULT_BASE_URL,
    ApiVersion,
    HubSpotClient,
    api_paths,
    check_token,
)
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
from crm.properties import (
    GROUP_LABEL,
    GROUP_NAME,
    PropertyOption,
    PropertySpec,
    ValueFormatError,
    ValueType,
    attribute_property,
    audience_property,
    format_value,
    internal_name,
)
from crm.ratelimit import RateLimitInfo
from crm.results import (
    BatchWriteResult,
    ContactRecord,
    ContactUpdate,
    ContactUpsert,
    EnsureOutcome,
    EnsureResult,
    PropertyError,
    ReadResult,
    WriteResult,
    WriteStatus,
)
from crm.schema import ensure_properties, ensure_property, ensure_property_group
from crm.tokens import token_fingerprint

__all__ = [
    "DEFAULT_API_VERSION",
    "DEFAULT_BASE_URL",
    "GROUP_LABEL",
    "GROUP_NAME",
    "ApiVersion",
    "ArchivedPropertyError",
    "AuthenticationError",
    "BatchWriteResult",
    "ConflictError",
    "ContactRecord",
    "ContactUpdate",
    "ContactUpsert",
    "EnsureOutcome",
    "EnsureResult",
    "HubSpotClient",
    "HubSpotError",
    "InvalidTokenError",
    "LockedError",
    "MissingScopesError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PropertyError",
    "PropertyOption",
    "PropertySpec",
    "RateLimitInfo",
    "RateLimitedError",
    "ReadResult",
    "ServerError",
    "TransportError",
    "UnexpectedResponseError",
    "ValidationError",
    "ValueFormatError",
    "ValueType",
    "WriteResult",
    "WriteStatus",
    "api_paths",
    "attribute_property",
    "audience_property",
    "check_token",
    "ensure_properties",
    "ensure_property",
    "ensure_property_group",
    "format_value",
    "internal_name",
    "token_fingerprint",
]

"""Who may call: the bearer tokens the account knows and the scopes each was granted.

With `EmulatorConfig.open_auth` any bearer token is accepted with every scope, unless it was
registered with fewer (so a test can still make a token that lacks one).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from crm.emulator.config import EmulatorConfig

__all__ = [
    "ALL_SCOPES",
    "OBJECTS_READ",
    "OBJECTS_WRITE",
    "SCHEMA_READ",
    "SCHEMA_WRITE",
    "Tokens",
    "bearer",
]

SCHEMA_READ = "crm.schemas.contacts.read"
SCHEMA_WRITE = "crm.schemas.contacts.write"
OBJECTS_READ = "crm.objects.contacts.read"
OBJECTS_WRITE = "crm.objects.contacts.write"
ALL_SCOPES = frozenset({SCHEMA_READ, SCHEMA_WRITE, OBJECTS_READ, OBJECTS_WRITE})


def bearer(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


class Tokens:
    """The registered tokens and their scopes."""

    def __init__(
        self, tokens: Mapping[str, frozenset[str]], settings: Callable[[], EmulatorConfig]
    ) -> None:
        self.scopes: dict[str, frozenset[str]] = dict(tokens)
        self._settings = settings

    def register(self, token: str, scopes: Iterable[str] = ALL_SCOPES) -> None:
        self.scopes[token] = frozenset(scopes)

    def revoke(self, token: str) -> None:
        self.scopes.pop(token, None)

    def scopes_of(self, token: str | None) -> frozenset[str] | None:
        """The token's scopes, or None when the account does not accept it."""
        if token is None:
            return None
        scopes = self.scopes.get(token)
        if scopes is None and self._settings().open_auth:
            return ALL_SCOPES
        return scopes

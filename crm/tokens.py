"""Access tokens: the one way a token may be named anywhere outside an HTTP header.

A HubSpot private-app token or service key is a secret. hubsync names a token by its
fingerprint (actor names, logs, metrics, emulator stats), never by the token itself.
"""

from __future__ import annotations

import hashlib

__all__ = ["token_fingerprint"]


def token_fingerprint(token: str) -> str:
    """The first 12 hex digits of the token's SHA-256: stable, short, and not reversible."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()[:12]

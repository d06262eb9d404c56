"""Access tokens: the one way a token may be named anywhere outside an HTTP header.

A HubSpot private-app token or service key is a secret. hubsync names a token by its
fingerprint (actor names, logs, metrics, emulator stats), never by the token itself.
"""

from __future__ import annotations

import hashlib

__all__ = ["token_fingerprint", "token_problem"]


def token_fingerprint(token: str) -> str:
    """The first 12 hex digits of the token's SHA-256: stable, short, and not reversible."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()[:12]


def token_problem(token: object) -> str | None:
    """What makes ``token`` unable to travel in an ``Authorization`` header, naming the problem and
    its position, never the token (None: nothing). The one check behind every place a token enters
    (the CLI, the HTTP API) or leaves (the client): h11 would refuse such a token mid-request with
    the header, token included, in its error text."""
    if not isinstance(token, str) or not token:
        return "an access token is required"
    for position, char in enumerate(token, start=1):
        if char.isspace():
            what = "whitespace (a space, tab or line break)"
        elif not char.isascii():
            what = "a non-ASCII character"
        elif not char.isprintable():
            what = f"a control character (code {ord(char)})"
        else:
            continue
        return f"the token contains {what} at position {position} of {len(token)}"
    return None

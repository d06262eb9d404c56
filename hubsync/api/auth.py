"""Who may call the API: the API key (Bearer), or a session cookie the web page got by signing in.

- The key comes from ``HUBSYNC_API_KEY``, or is generated once into ``HUBSYNC_HOME/api.key``
  (mode 0600). It is compared in constant time.
- A session is stateless: the cookie holds an expiry, a nonce and an HMAC of both under a key
  derived from the API key, so a restart keeps sessions and a new API key ends them all.
  The cookie is HttpOnly and SameSite=Strict.
- Cross-site forgery: a state-changing request authenticated by the cookie must also carry
  ``X-CSRF-Token``, an HMAC of the session that the sign-in answer gives the page (and a
  readable cookie repeats). Another site can make a browser send the cookie, but cannot read
  the token. Requests with a Bearer key need no CSRF token: a browser never adds that header.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Callable, Mapping
from pathlib import Path

__all__ = [
    "API_KEY_ENV",
    "API_KEY_FILE",
    "CSRF_COOKIE",
    "CSRF_HEADER",
    "SESSION_COOKIE",
    "Authenticator",
    "load_or_create_api_key",
]

API_KEY_ENV = "HUBSYNC_API_KEY"
API_KEY_FILE = "api.key"
SESSION_COOKIE = "hubsync_session"
CSRF_COOKIE = "hubsync_csrf"
CSRF_HEADER = "x-csrf-token"
SESSION_SECONDS = 12 * 3600
MIN_KEY_LENGTH = 16


def load_or_create_api_key(home: Path, environ: Mapping[str, str]) -> str:
    """``HUBSYNC_API_KEY``, else the key in ``home/api.key``, created (mode 0600) if absent."""
    configured = (environ.get(API_KEY_ENV) or "").strip()
    if configured:
        if len(configured) < MIN_KEY_LENGTH:
            raise ValueError(
                f"{API_KEY_ENV} is too short: use at least {MIN_KEY_LENGTH} characters "
                '(python -c "import secrets; print(secrets.token_urlsafe(32))")'
            )
        return configured
    path = home / API_KEY_FILE
    if path.exists():
        return path.read_text().strip()
    home.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it meanwhile: use theirs
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
    return key


class Authenticator:
    """Checks API keys, issues and checks session cookies and their CSRF tokens."""

    def __init__(
        self,
        api_key: str,
        *,
        clock: Callable[[], float] = time.time,
        session_seconds: int = SESSION_SECONDS,
    ) -> None:
        self._key = api_key.encode()
        self._signing = hmac.new(self._key, b"hubsync session v1", hashlib.sha256).digest()
        self._clock = clock
        self.session_seconds = session_seconds

    def __repr__(self) -> str:
        return "Authenticator(<key hidden>)"

    def key_matches(self, candidate: str) -> bool:
        return hmac.compare_digest(candidate.encode(), self._key)

    def bearer_matches(self, authorization: str) -> bool:
        scheme, _, value = authorization.partition(" ")
        return scheme.lower() == "bearer" and self.key_matches(value.strip())

    def _sign(self, text: str) -> str:
        return hmac.new(self._signing, text.encode(), hashlib.sha256).hexdigest()

    def new_session(self) -> tuple[str, str, int]:
        """(cookie value, CSRF token, expiry as Unix seconds) for a page that just signed in."""
        expires = int(self._clock()) + self.session_seconds
        body = f"{expires}.{secrets.token_hex(16)}"
        cookie = f"{body}.{self._sign(body)}"
        return cookie, self.csrf_for(cookie), expires

    def session_valid(self, cookie: str) -> bool:
        body, _, signature = cookie.rpartition(".")
        expires, _, _ = body.partition(".")
        if not body or not expires.isdigit():
            return False
        if not hmac.compare_digest(signature, self._sign(body)):
            return False
        return int(expires) > self._clock()

    def csrf_for(self, cookie: str) -> str:
        return self._sign(f"csrf:{cookie}")[:32]

    def csrf_valid(self, cookie: str, token: str) -> bool:
        return hmac.compare_digest(token.encode(), self.csrf_for(cookie).encode())

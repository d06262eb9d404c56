"""Access tokens at rest: sealed (Fernet: AES-128-CBC + HMAC-SHA256) before they touch Redis.

The key comes from ``HUBSYNC_SECRET_KEY``; the embedded setup creates one in its data directory
with mode 0600. A token is only ever unsealed inside the RateGovernor that uses it.

Errors::

    SecretError        the key is missing or malformed, or a sealed token does not open with it
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

__all__ = ["Sealer", "SecretError", "load_or_create_key"]


class SecretError(ValueError):
    """A key or sealed token that cannot be used; the message says what to do."""


class Sealer:
    def __init__(self, key: str | bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError):
            raise SecretError(
                "HUBSYNC_SECRET_KEY is not a valid key: it must be 32 url-safe base64-encoded bytes; "
                'create one with: python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
            ) from None

    def seal(self, token: str) -> str:
        return self._fernet.encrypt(token.encode()).decode()

    def unseal(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            raise SecretError(
                "a stored access token does not decrypt with this HUBSYNC_SECRET_KEY: use the key the "
                "activation was created with, or recreate the activation with the token"
            ) from None

    def __repr__(self) -> str:
        return "Sealer(<key hidden>)"


def load_or_create_key(home: Path) -> str:
    """The key in ``home/secret.key``, created (mode 0600) if absent."""
    path = home / "secret.key"
    if path.exists():
        return path.read_text().strip()
    home.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key().decode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
    return key

"""Access tokens at rest: checked where they enter, sealed and bound to their activation.

The key comes from ``HUBSYNC_SECRET_KEY`` (32 url-safe base64 bytes, the Fernet key format); the
embedded setup creates one in its data directory with mode 0600. A token is only ever unsealed
inside the RateGovernor that uses it (and by ``hubsync activation verify|reseal``).

Sealed formats, told apart by their prefix::

    v2:<base64url(nonce | ciphertext)>   AES-256-GCM under a key derived from HUBSYNC_SECRET_KEY
                                         with HKDF-SHA256; the associated data is the activation
                                         id, the base URL and the token's fingerprint, so a sealed
                                         token copied into a forged or edited entry does not open
    gAAAA...                             legacy: plain Fernet, bound to nothing; still opened
                                         until ``hubsync activation reseal`` rewrites it as v2

Errors::

    SecretError        the key is missing or malformed, or a sealed token does not open with it
     └── TokenError    a token that cannot be a HubSpot token (says why, never shows the token)
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

import msgspec

from crm.tokens import token_fingerprint, token_problem

__all__ = [
    "SEALED_PREFIX",
    "Sealer",
    "SecretError",
    "TokenError",
    "check_token",
    "is_legacy",
    "load_or_create_key",
]

SEALED_PREFIX = "v2:"
TOKEN_MIN_LENGTH = 5  # HubSpot's own tokens are ~44 characters; the emulator accepts short ones
TOKEN_MAX_LENGTH = 1024
_HKDF_INFO = b"hubsync token sealing v2"
_NONCE_BYTES = 12


class SecretError(ValueError):
    """A key or sealed token that cannot be used; the message says what to do."""


class TokenError(SecretError):
    """A token that cannot be a HubSpot token; the message names the problem, never the token."""


def check_token(token: str) -> str:
    """The token, if it can be a HubSpot token: printable ASCII, no whitespace, a sane length.

    Checked where a token enters (CLI, HTTP API), so a pasted newline or a stray quote fails
    here with a clear message instead of as a 401 from HubSpot hours later.
    """
    if not isinstance(token, str):
        raise TokenError("the token must be text")
    if token and (problem := token_problem(token)):
        raise TokenError(f"{problem}; paste it again from HubSpot, without spaces or line breaks")
    if not TOKEN_MIN_LENGTH <= len(token) <= TOKEN_MAX_LENGTH:
        raise TokenError(
            f"the token is {len(token)} characters long; a HubSpot token has "
            f"{TOKEN_MIN_LENGTH} to {TOKEN_MAX_LENGTH}: check that the whole token was copied"
        )
    return token


def is_legacy(sealed: str) -> bool:
    """True for a token sealed the old way (plain Fernet, bound to no activation)."""
    return not sealed.startswith(SEALED_PREFIX)


def _binding(activation_id: str, base_url: str, fingerprint: str) -> bytes:
    """The associated data: unambiguous (a JSON array), so no two bindings encode alike."""
    return msgspec.json.encode(["hubsync-token", activation_id, base_url, fingerprint])


class Sealer:
    def __init__(self, key: str | bytes) -> None:
        # cryptography's OpenSSL bindings cost ~7 MiB of unique memory in every process that
        # loads them: imported here, they load only where tokens are sealed or opened (the
        # RateGovernor, the CLI, the API), not in every Router and ActivationActor (issue 15, 5).
        from cryptography.fernet import Fernet
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        try:
            self._fernet = Fernet(key)
            raw = base64.urlsafe_b64decode(key)
        except (ValueError, TypeError, binascii.Error):
            raise SecretError(
                "HUBSYNC_SECRET_KEY is not a valid key: it must be 32 url-safe base64-encoded bytes; "
                'create one with: python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
            ) from None
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(raw)
        self._aead = AESGCM(derived)

    def seal(self, token: str, *, activation_id: str, base_url: str) -> str:
        """The token sealed for this activation and base URL only (format v2)."""
        check_token(token)
        nonce = os.urandom(_NONCE_BYTES)
        binding = _binding(activation_id, base_url, token_fingerprint(token))
        sealed = self._aead.encrypt(nonce, token.encode(), binding)
        return SEALED_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def unseal(self, sealed: str, *, activation_id: str, base_url: str, fingerprint: str) -> str:
        """The token, if ``sealed`` was sealed for exactly this activation, base URL and token.

        A legacy (Fernet) token opens without a binding; its fingerprint must still match, so
        an edited entry cannot swap in another activation's token.
        """
        if is_legacy(sealed):
            token = self._open_legacy(sealed)
        else:
            token = self._open_v2(sealed, _binding(activation_id, base_url, fingerprint))
        if token_fingerprint(token) != fingerprint:
            raise SecretError(
                f"the stored access token of activation {activation_id!r} is not the token its "
                f"fingerprint {fingerprint!r} names: the control stream was edited; recreate the "
                "activation with its token"
            )
        return token

    def _open_v2(self, sealed: str, binding: bytes) -> str:
        from cryptography.exceptions import InvalidTag

        try:
            blob = base64.urlsafe_b64decode(sealed[len(SEALED_PREFIX) :])
            nonce, ciphertext = blob[:_NONCE_BYTES], blob[_NONCE_BYTES:]
            return self._aead.decrypt(nonce, ciphertext, binding).decode()
        except (InvalidTag, ValueError, binascii.Error):
            raise SecretError(
                "a stored access token does not open for this activation: it was sealed for another "
                "activation id, base URL or token, or with another HUBSYNC_SECRET_KEY; use the key the "
                "activation was created with, or recreate the activation with its token"
            ) from None

    def _open_legacy(self, sealed: str) -> str:
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except (InvalidToken, ValueError):
            raise SecretError(
                "a stored access token does not decrypt with this HUBSYNC_SECRET_KEY: use the key the "
                "activation was created with, or recreate the activation with the token"
            ) from None

    def seal_legacy(self, token: str) -> str:
        """The old format (plain Fernet), kept only so tests can stand for stores written before v2."""
        return self._fernet.encrypt(token.encode()).decode()

    def __repr__(self) -> str:
        return "Sealer(<key hidden>)"


def load_or_create_key(home: Path) -> str:
    """The key in ``home/secret.key``, created (mode 0600) if absent."""
    path = home / "secret.key"
    if path.exists():
        return path.read_text().strip()
    home.mkdir(parents=True, exist_ok=True)
    from cryptography.fernet import Fernet

    key = Fernet.generate_key().decode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
    return key

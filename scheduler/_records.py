"""Compact per-contact records: the Coalescer's memory layout, private to the scheduler.

A record is the list of (property id, position, value) of one contact, stored as ONE small
immutable object so that a million pending contacts cost one dict slot, one key and one record
each (the goal is <= 120 bytes per pending contact for the whole actor):

- the common case, one property whose value is "", "true" or "false" (an audience flip) at a
  position within ~18 hours of the codec's base, is a single int below 2**60 (32 bytes);
- everything else is a bytes object: per entry `<HQI` (property id, position, value length) and
  the UTF-8 value.

The key a record is stored under is the contact's email with its domain interned (`KeyCodec`).
"""

from __future__ import annotations

import struct

__all__ = ["MAX_DOMAINS", "MAX_POSITION", "Entry", "KeyCodec", "RecordCodec"]

Entry = tuple[int, int, str]  # (property id, position, value)

MAX_POSITION = (1 << 63) - 1
MAX_PROPERTY_ID = 0xFFFF

_HEAD = struct.Struct("<HQI")
_FAST_VALUES = ("", "true", "false")
_FAST_CODES = {v: i for i, v in enumerate(_FAST_VALUES)}
_FAST_PROP_BITS = 10
_FAST_DELTA_BITS = 47  # 12 + 47 = 59 bits: a two-digit CPython int (32 bytes)
_FAST_SHIFT = 2 + _FAST_PROP_BITS
_FAST_MAX_DELTA = 1 << _FAST_DELTA_BITS
_FAST_MAX_PROP = 1 << _FAST_PROP_BITS


class RecordCodec:
    """Encodes entry lists to records relative to `base`, a position near the traffic."""

    __slots__ = ("base",)

    def __init__(self, base: int) -> None:
        self.base = base

    def encode(self, entries: list[Entry]) -> int | bytes:
        if len(entries) == 1:
            prop, pos, value = entries[0]
            code = _FAST_CODES.get(value)
            delta = pos - self.base
            if code is not None and prop < _FAST_MAX_PROP and 0 <= delta < _FAST_MAX_DELTA:
                return (delta << _FAST_SHIFT) | (prop << 2) | code
        parts = []
        for prop, pos, value in entries:
            raw = value.encode()
            parts.append(_HEAD.pack(prop, pos, len(raw)))
            parts.append(raw)
        return b"".join(parts)

    def decode(self, record: int | bytes) -> list[Entry]:
        if isinstance(record, int):
            return [
                (
                    (record >> 2) & (_FAST_MAX_PROP - 1),
                    (record >> _FAST_SHIFT) + self.base,
                    _FAST_VALUES[record & 3],
                )
            ]
        out = []
        offset, end, size = 0, len(record), _HEAD.size
        while offset < end:
            prop, pos, length = _HEAD.unpack_from(record, offset)
            offset += size
            out.append((prop, pos, record[offset : offset + length].decode()))
            offset += length
        return out


MAX_DOMAINS = 1 << 16
_RAW = b"\x00"


class KeyCodec:
    """Contact keys: an email as compact bytes, its domain interned (like property names).

    `local@domain` becomes ``local NUL <domain id>`` (b"m00000000\\x000" instead of
    b"m00000000@example.com": 48 bytes of heap instead of 64); anything else (no "@", an empty
    local part, a NUL anywhere, or more than MAX_DOMAINS domains) is ``NUL <email>``. A compact
    key never starts with NUL, so the two forms never collide, and both are valid UTF-8 (a
    Damper keeps them as text in its snapshots).
    """

    __slots__ = ("_domains", "_ids")

    def __init__(self, domains: list[str] | None = None) -> None:
        self._domains: list[str] = list(domains or ())
        self._ids = {d: i for i, d in enumerate(self._domains)}

    @property
    def domains(self) -> list[str]:
        return list(self._domains)

    def key(self, email: str) -> bytes:
        """The key of `email`, interning its domain if it is new."""
        local, at, domain = email.rpartition("@")
        if at and local and "\x00" not in email:
            i = self._ids.get(domain)
            if i is None and len(self._domains) < MAX_DOMAINS:
                i = self._ids[domain] = len(self._domains)
                self._domains.append(domain)
            if i is not None:
                return f"{local}\x00{i}".encode()
        return _RAW + email.encode()

    def find(self, email: str) -> bytes | None:
        """The key `email` would have, without interning anything; None if it cannot exist."""
        local, at, domain = email.rpartition("@")
        if at and local and "\x00" not in email:
            i = self._ids.get(domain)
            if i is not None:
                return f"{local}\x00{i}".encode()
            if len(self._domains) < MAX_DOMAINS:
                return None  # an unknown domain: nobody with it was ever offered
        return _RAW + email.encode()

    def email(self, key: bytes) -> str:
        if key[:1] == _RAW:
            return key[1:].decode()
        local, _, i = key.rpartition(_RAW)
        return f"{local.decode()}@{self._domains[int(i)]}"

"""A synchronous client for the emulator's `/_emulator/*` admin endpoints (tests, benchmarks)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpx

__all__ = ["EmulatorAdmin"]


class EmulatorAdmin:
    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._timeout = timeout

    def _call(self, method: str, path: str, json: Any = None, **params: Any) -> Any:
        response = httpx.request(
            method,
            f"{self.url}/_emulator/{path}",
            json=json,
            params=params or None,
            timeout=self._timeout,
        )
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "stats")

    def requests(self) -> list[dict[str, Any]]:
        """Every API request the emulator saw (newest 100,000): at, token (fingerprint), operation, status."""
        return self._call("GET", "requests")["results"]

    def contacts(self, *, with_timestamps: bool = False) -> list[dict[str, Any]]:
        params = {"with_timestamps": "1"} if with_timestamps else {}
        return self._call("GET", "contacts", **params)["results"]

    def contact_properties(self) -> dict[str, dict[str, str]]:
        """email -> properties of every contact that has an email."""
        return {
            c["properties"]["email"]: c["properties"]
            for c in self.contacts()
            if c["properties"].get("email")
        }

    def properties(self) -> dict[str, Any]:
        return self._call("GET", "properties")

    def reset(self) -> None:
        self._call("POST", "reset")

    def faults(self, **settings: Any) -> dict[str, Any]:
        return self._call("POST", "faults", json=settings)

    def clear_faults(self) -> dict[str, Any]:
        return self._call("POST", "faults", json={"seed": 0})

    def register_token(self, token: str, scopes: Iterable[str] | None = None) -> str:
        body = {"token": token, "scopes": None if scopes is None else list(scopes)}
        return self._call("POST", "tokens", json=body)["fingerprint"]

    def revoke_token(self, token: str) -> None:
        self._call("POST", "tokens", json={"token": token, "revoke": True})

    def configure(self, **changes: Any) -> dict[str, Any]:
        return self._call("POST", "config", json=changes)

    def restore_property(self, name: str) -> bool:
        response = httpx.post(
            f"{self.url}/_emulator/properties/{name}/restore", timeout=self._timeout
        )
        return response.status_code == 200

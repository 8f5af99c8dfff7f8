"""Test-side handle on a running simulator: its URL and its control API, over real HTTP."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class Sim:
    base_url: str
    api_key: str
    secret_key: str

    def _control(self, method: str, path: str, body: Any = None) -> Any:
        response = httpx.request(method, f"{self.base_url}/_sim{path}", json=body, timeout=10)
        response.raise_for_status()
        return response.json() if response.content else None

    def fault(self, mode: str, **options: Any) -> None:
        self._control("POST", "/fault", {"mode": mode, **options})

    def clear_fault(self) -> None:
        self._control("DELETE", "/fault")

    def step(self, n: int = 1) -> Any:
        return self._control("POST", "/step", {"n": n})

    def load(self, positions: list[Any], account: dict[str, Any] | None = None) -> None:
        self._control("PUT", "/positions", {"positions": positions, "account": account})

    def unload(self) -> None:
        self._control("DELETE", "/positions")

    def requests(self, path: str | None = None) -> list[dict[str, Any]]:
        log: list[dict[str, Any]] = self._control("GET", "/requests")
        return [r for r in log if path is None or r["path"] == path]

    def reset_log(self) -> None:
        self._control("DELETE", "/requests")

    def reset(self) -> None:
        self._control("POST", "/reset")

    def rotate_keys(self, api_key: str, secret_key: str) -> None:
        """Accept only this key pair from now on (until reset): the configured keys go wrong."""
        self._control("PUT", "/keys", {"api_key": api_key, "secret_key": secret_key})

    def broker(self, path: str) -> Any:
        """A `/v2` GET as a client sees it. Read before arming a fault: a fault hits every
        client, this one included."""
        headers = {"APCA-API-KEY-ID": self.api_key, "APCA-API-SECRET-KEY": self.secret_key}
        response = httpx.get(f"{self.base_url}{path}", headers=headers, timeout=10)
        response.raise_for_status()
        return response.json()

    def broker_positions(self) -> list[dict[str, Any]]:
        positions: list[dict[str, Any]] = self.broker("/v2/positions")
        return positions

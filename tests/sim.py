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
    control_token: str  # the /_sim API's bearer token (SimulatorConfig.control_token)

    @classmethod
    def of(cls, server: Any) -> Sim:
        """The handle on a running `SimulatorServer`, with its keys and control token."""
        config = server.config
        return cls(server.base_url, config.api_key, config.secret_key, config.control_token)

    def broker_mode(self) -> dict[str, str]:
        """The settings of the Broker API mode against this simulator's `/v1`."""
        return {
            "RECON_SOURCE": "broker",
            "ALPACA_BROKER_BASE_URL": self.base_url,
            "ALPACA_BROKER_API_KEY": self.api_key,
            "ALPACA_BROKER_SECRET_KEY": self.secret_key,
        }

    def _control(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {self.control_token}"}
        response = httpx.request(
            method, f"{self.base_url}/_sim{path}", json=body, headers=headers, timeout=10
        )
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

    def fill(self, symbol: str, qty: str, side: str, partials: int = 1) -> dict[str, Any]:
        """Execute a fill: the book changes, the stream sends its events."""
        body = {"symbol": symbol, "qty": qty, "side": side, "partials": partials}
        answer: dict[str, Any] = self._control("POST", "/fills", body)
        return answer

    def stream_fault(self, mode: str, **options: Any) -> None:
        self._control("POST", "/stream/fault", {"mode": mode, **options})

    def clear_stream_fault(self) -> None:
        self._control("DELETE", "/stream/fault")

    def stream_drop(self) -> None:
        self._control("POST", "/stream/drop")

    def stream_state(self) -> dict[str, Any]:
        state: dict[str, Any] = self._control("GET", "/stream")
        return state

    # -- the Broker API (`/v1`) -----------------------------------------------------------

    def account_ids(self) -> list[str]:
        ids: list[str] = self._control("GET", "/broker/accounts")
        return ids

    def account_fault(
        self,
        account_id: str,
        mode: str,
        status: int = 500,
        count: int | None = None,
        delay: float = 1.0,
        only: str | None = None,
    ) -> None:
        """`fail`: the account's requests (its next `count`; with `only`, of its `positions`
        or `account` requests) answer `status`; `stall`: they are answered `delay` seconds
        late; `tieout`: its summary is off."""
        fault = {"account_id": account_id, "mode": mode, "status": status, "count": count}
        fault |= {"delay": delay, "only": only}
        self._control("POST", "/broker/fault", fault)

    def broker_rate_limit(self, per_minute: int, burst: int | None = None) -> dict[str, Any]:
        state: dict[str, Any] = self._control(
            "PUT", "/broker/rate-limit", {"per_minute": per_minute, "burst": burst}
        )
        return state

    def broker_state(self) -> dict[str, Any]:
        state: dict[str, Any] = self._control("GET", "/broker")
        return state

    def account_status(self, account_id: str, status: str) -> None:
        self._control("PUT", "/broker/status", {"account_id": account_id, "status": status})

    def v1(self, path: str) -> Any:
        """A `/v1` GET with the Broker API's Basic auth."""
        response = httpx.get(
            f"{self.base_url}{path}", auth=(self.api_key, self.secret_key), timeout=10
        )
        response.raise_for_status()
        return response.json()

    def account_fill(
        self, account_id: str, symbol: str, qty: str, side: str, partials: int = 1
    ) -> dict[str, Any]:
        """A fill on one generated account: its events go to `/v2/events/trades`."""
        body = {
            "account_id": account_id,
            "symbol": symbol,
            "qty": qty,
            "side": side,
            "partials": partials,
        }
        answer: dict[str, Any] = self._control("POST", "/fills", body)
        return answer

    def events_state(self) -> dict[str, Any]:
        """`/v2/events/trades`: connections, connects, events kept, sent, dropped."""
        state: dict[str, Any] = self._control("GET", "/events")
        return state

    def v1_step(self, n: int = 1) -> None:
        """Move every generated account's book `n` steps."""
        self._control("POST", "/broker/step", {"n": n})

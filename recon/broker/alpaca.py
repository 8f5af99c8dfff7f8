"""The official alpaca-py `TradingClient`, made safe for unattended runs."""

from __future__ import annotations

import json
from typing import Any

import requests
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient

from recon.broker.protocol import RawSnapshot
from recon.errors import BrokerError, BrokerRejectedError, BrokerTransientError
from recon.settings import Settings

_TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class _TimeoutSession(requests.Session):
    """A session that puts a timeout on every request; alpaca-py passes none."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", self._timeout)
        return super().request(method, url, *args, **kwargs)


class _BoundedTradingClient(TradingClient):
    """`TradingClient` with a request timeout and without its own retry loop.

    alpaca-py 0.44's constructor exposes neither: it retries 429/504 three times, 3 s
    apart, ignoring X-RateLimit-Reset, and never times out. Retrying is the Prefect
    task's job (backoff, jitter, only transient errors), so the client makes one attempt.
    `tests/test_broker.py` fails if a new alpaca-py renames these attributes.
    """

    def __init__(self, *, timeout: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._session = _TimeoutSession(timeout)
        self._retry = 0


class AlpacaTradingBroker:
    """Reads one trading account through alpaca-py in raw mode."""

    def __init__(self, settings: Settings) -> None:
        key, secret = settings.alpaca_credentials()
        self._timeout = settings.http_timeout_seconds
        self._client = _BoundedTradingClient(
            timeout=settings.http_timeout_seconds,
            api_key=key,
            secret_key=secret,
            paper=settings.alpaca_paper,
            raw_data=True,
            url_override=settings.alpaca_base_url or None,
        )

    def fetch_snapshot(self) -> RawSnapshot:
        positions = self._call("positions", self._client.get_all_positions)
        account = self._call("account", self._client.get_account)
        clock = self._call("clock", self._client.get_clock)
        if not isinstance(positions, list):
            raise BrokerTransientError("broker returned positions that are not a JSON array")
        if not isinstance(account, dict):
            raise BrokerTransientError("broker returned an account that is not a JSON object")
        return RawSnapshot(
            account=account,
            positions=positions,
            clock=clock if isinstance(clock, dict) else None,
        )

    def _call(self, what: str, call: Any) -> Any:
        try:
            return call()
        except APIError as exc:
            raise _from_api_error(what, exc) from None
        except requests.Timeout:
            raise BrokerTransientError(
                f"{what}: no answer from the broker within {self._timeout:g} s"
            ) from None
        except requests.exceptions.JSONDecodeError:
            raise BrokerTransientError(
                f"{what}: broker sent a body that is not valid JSON"
            ) from None
        except requests.ConnectionError as exc:
            raise BrokerTransientError(
                f"{what}: connection failed ({type(exc).__name__})"
            ) from None
        except requests.RequestException as exc:
            raise BrokerError(f"{what}: request failed ({type(exc).__name__})") from None


def _from_api_error(what: str, exc: APIError) -> BrokerError:
    status = exc.status_code
    reason = _describe_body(str(exc))
    message = f"{what}: broker answered HTTP {status}: {reason}"
    if status is None or status in _TRANSIENT_STATUS or status >= 500:
        return BrokerTransientError(message, status_code=status)
    return BrokerRejectedError(message, status_code=status)


def _describe_body(text: str) -> str:
    """Alpaca's `{code, message}` when present; the 403 body has no code, others no JSON."""
    try:
        body = json.loads(text)
    except ValueError:
        return text[:200].strip() or "(empty body)"
    if isinstance(body, dict):
        message = str(body.get("message", "")).strip() or "(no message)"
        return f"{message} (code {body['code']})" if "code" in body else message
    return text[:200]

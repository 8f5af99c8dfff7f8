"""The official alpaca-py `TradingClient`, made safe for unattended runs."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import requests
from alpaca.common.exceptions import APIError
from alpaca.common.rest import RESTClient
from alpaca.trading.client import TradingClient

from recon.broker.pacing import Pacer, reset_delay
from recon.broker.protocol import RawSnapshot
from recon.errors import (
    BrokerError,
    BrokerRateLimitedError,
    BrokerRejectedError,
    BrokerTransientError,
)
from recon.settings import Settings

if TYPE_CHECKING:
    from requests.sessions import _Settings

_Client = TypeVar("_Client", bound=RESTClient)
_TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class TimeoutSession(requests.Session):
    """A session that puts a timeout on every request (alpaca-py passes none), and reads
    the environment's proxy and CA settings once per origin: requests reads them on every
    request, a scan of the whole of `os.environ` each time (a flow run's holds dozens of
    PREFECT_ variables), which a Broker API pass pays twice per account."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout
        self._environment: dict[tuple[Any, ...], _Settings] = {}

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", self._timeout)
        return super().request(method, url, *args, **kwargs)

    def merge_environment_settings(
        self, url: str | bytes | None, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> _Settings:
        text = url.decode() if isinstance(url, bytes) else url or ""
        key = (
            urlsplit(text)[:2],
            tuple(sorted((proxies or {}).items())),
            stream,
            verify,
            cert,
        )
        found = self._environment.get(key)
        if found is None:
            found = super().merge_environment_settings(url, proxies, stream, verify, cert)
            self._environment[key] = found
        return found.copy()


def bounded(client: _Client, timeout: float) -> _Client:
    """An alpaca-py client with a request timeout and without its own retry loop.

    alpaca-py 0.44's constructors expose neither: they retry 429/504 three times, 3 s
    apart, ignoring X-RateLimit-Reset, and never time out. Retrying is the Prefect
    task's job (backoff, jitter, only transient errors), so the client makes one attempt.
    `tests/test_broker.py` fails if a new alpaca-py renames these attributes.
    """
    client._session = TimeoutSession(timeout)
    client._retry = 0
    return client


def snapshot_of(positions: Any, account: Any, clock: Any) -> RawSnapshot:
    """The three answers as a `RawSnapshot`, once they have the JSON types Alpaca sends."""
    if not isinstance(positions, list):
        raise BrokerTransientError("broker returned positions that are not a JSON array")
    if not isinstance(account, dict):
        raise BrokerTransientError("broker returned an account that is not a JSON object")
    return RawSnapshot(account, positions, clock if isinstance(clock, dict) else None)


def position_of(record: Any) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise BrokerTransientError("broker returned a position that is not a JSON object")
    return record


class AlpacaTradingBroker:
    """Reads one trading account through alpaca-py in raw mode."""

    def __init__(self, settings: Settings) -> None:
        key, secret = settings.alpaca_credentials()
        self._timeout = settings.http_timeout_seconds
        # No global limit for one account; a 429 is still waited out until its reset.
        self._pacer = Pacer(settings)
        url = settings.alpaca_base_url or None
        client = TradingClient(
            key, secret, paper=settings.alpaca_paper, raw_data=True, url_override=url
        )
        self._client = bounded(client, settings.http_timeout_seconds)

    def fetch_snapshot(self) -> RawSnapshot:
        positions = self._call("positions", self._client.get_all_positions)
        account = self._call("account", self._client.get_account)
        return snapshot_of(positions, account, self._call("clock", self._client.get_clock))

    def fetch_position(self, asset_id: str) -> dict[str, Any] | None:
        """One position (`GET /v2/positions/{asset_id}`); None when the broker answers 404.

        A 404 only says the broker has no open position for the asset *now*; whether that
        means "flat" is the caller's decision (`recon.fills.read`).
        """
        what = f"position {asset_id}"
        try:
            record = self._call(what, lambda: self._client.get_open_position(asset_id))
        except BrokerRejectedError as exc:
            if exc.status_code == 404:
                return None
            raise
        return position_of(record)

    def fetch_account_id(self) -> str:
        account = self._call("account", self._client.get_account)
        account_id = account.get("id") if isinstance(account, dict) else None
        if not isinstance(account_id, str) or not account_id.strip():
            raise BrokerTransientError("broker returned an account without an id")
        return account_id.strip()

    def _call(self, what: str, call: Any) -> Any:
        try:
            return call_alpaca(what, call, self._timeout)
        except BrokerRateLimitedError as exc:
            # One attempt still (the task retries), but not before the broker's reset.
            self._pacer.wait_out(exc.reset_after)
            raise


def call_alpaca(what: str, call: Any, timeout: float) -> Any:
    """One alpaca-py call, its failures mapped to `BrokerError`s with a safe message."""
    try:
        return call()
    except APIError as exc:
        raise _from_api_error(what, exc) from None
    except requests.Timeout:
        raise BrokerTransientError(
            f"{what}: no answer from the broker within {timeout:g} s"
        ) from None
    except requests.exceptions.JSONDecodeError:
        raise BrokerTransientError(f"{what}: broker sent a body that is not valid JSON") from None
    except requests.ConnectionError as exc:
        raise BrokerTransientError(f"{what}: connection failed ({type(exc).__name__})") from None
    except requests.RequestException as exc:
        raise BrokerError(f"{what}: request failed ({type(exc).__name__})") from None


def _from_api_error(what: str, exc: APIError) -> BrokerError:
    status = exc.status_code
    reason = _describe_body(str(exc))
    message = f"{what}: broker answered HTTP {status}: {reason}"
    if status == 429:
        headers = getattr(exc.response, "headers", None)
        delay = reset_delay(headers) if headers is not None else None
        return BrokerRateLimitedError(message, reset_after=delay)
    if status is None or status in _TRANSIENT_STATUS or status >= 500:
        return BrokerTransientError(message, status_code=status)
    return BrokerRejectedError(message, status_code=status)


_MAX_MESSAGE = 200


def _describe_body(text: str) -> str:
    """Alpaca's `message` (and `code`) from its `{code, message}` body, nothing else.

    A proxy between us and Alpaca may answer an error page that echoes the request, key
    headers included: anything but Alpaca's own two fields is dropped, never quoted.
    """
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("message"), str):
        return f"no Alpaca error message (a {len(text)}-character body, not shown)"
    message = " ".join(body["message"].split())[:_MAX_MESSAGE] or "(empty message)"
    code = body.get("code")
    return f"{message} (code {code})" if isinstance(code, int) else message

"""alpaca-py's `BrokerClient` (many accounts under one correspondent key), made safe for
unattended runs like the trading adapter: raw mode, a timeout, no retries of its own, every
request through the global rate limit, 429s waited out until `X-RateLimit-Reset`."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from alpaca.broker.client import BrokerClient
from alpaca.broker.requests import ListAccountsRequest
from alpaca.common.enums import Sort
from alpaca.trading.enums import AccountStatus

from recon.broker.alpaca import bounded, call_alpaca, position_of, snapshot_of
from recon.broker.pacing import RATE_LIMIT_NAME, Pacer
from recon.broker.protocol import RawSnapshot
from recon.errors import BrokerRateLimitedError, BrokerRejectedError, BrokerTransientError
from recon.settings import Settings

_threads = threading.local()


class BrokerApi:
    """The correspondent's view: the account list, and one `Broker` per account."""

    @classmethod
    def for_thread(cls, settings: Settings) -> BrokerApi:
        """This thread's client for `settings`, made once: every account the thread
        reconciles reuses its HTTP session, so its kept-alive connection (a TLS handshake,
        against Alpaca) instead of a new client and connection per account. One per thread
        because a requests `Session` is not documented as safe to share between threads."""
        found: tuple[Settings, BrokerApi] | None = getattr(_threads, "api", None)
        if found is None or found[0] is not settings:
            found = (settings, cls(settings))
            _threads.api = found
        return found[1]

    def __init__(self, settings: Settings, *, limit_name: str | None = RATE_LIMIT_NAME) -> None:
        key, secret = settings.broker_credentials()
        self._timeout = settings.http_timeout_seconds
        self.pacer = Pacer(settings, limit_name=limit_name)
        url = settings.alpaca_broker_base_url or None
        sandbox = settings.alpaca_broker_sandbox
        client = BrokerClient(key, secret, sandbox=sandbox, raw_data=True, url_override=url)
        self._client = bounded(client, settings.http_timeout_seconds)

    def call(self, what: str, call: Callable[[], Any]) -> Any:
        """One request: admitted by the rate limit; a 429 waits until its reset and tries
        again (at most RECON_RATE_LIMIT_MAX_WAITS times); anything else is mapped once."""
        waits = 0
        while True:
            self.pacer.admit()
            try:
                return call_alpaca(what, call, self._timeout)
            except BrokerRateLimitedError as exc:
                if waits >= self.pacer.max_waits or not self.pacer.wait_out(exc.reset_after):
                    raise
                waits += 1

    def account_ids(self) -> list[str]:
        """Every ACTIVE account, oldest first, paged by creation time (1,000 a page)."""
        return [str(a["id"]) for a in self.iter_accounts()]

    def iter_accounts(self) -> Iterator[dict[str, Any]]:
        seen: set[str] = set()
        after: datetime | None = None
        while True:
            # alpaca-py's request models have untyped constructors.
            request = ListAccountsRequest(  # type: ignore[no-untyped-call]
                status=[AccountStatus.ACTIVE], sort=Sort.ASC, created_after=after
            )
            page = self.call("accounts", functools.partial(self._client.list_accounts, request))
            if not isinstance(page, list):
                raise BrokerTransientError("broker returned accounts that are not a JSON array")
            fresh = [a for a in page if isinstance(a, dict) and str(a.get("id")) not in seen]
            if not fresh:
                return
            for account in fresh:
                seen.add(str(account.get("id")))
                yield account
            # One microsecond before the newest: whether Alpaca's bound is inclusive or not,
            # two accounts created in the same instant are not lost (duplicates are skipped).
            after = _created(fresh[-1]) - timedelta(microseconds=1)

    def group_size(self, wanted: int) -> int:
        """Accounts whose snapshots one reservation can cover (two requests each), at most
        `wanted`: never more slots than the limit holds."""
        return max(1, min(wanted, self.pacer.most // 2))

    def fetch_snapshots(
        self, account_ids: Sequence[str], clock: dict[str, Any] | None
    ) -> list[RawSnapshot | Exception]:
        """A few accounts' snapshots, in order: one acquisition takes every slot their
        requests need, then the requests go out back to back. An account's error is
        returned in its place, so it stays that account's own."""
        found: list[RawSnapshot | Exception] = []
        with self.pacer.reserved(2 * len(account_ids)):
            for account_id in account_ids:
                try:
                    found.append(self.broker_for(account_id, clock).fetch_reserved())
                except Exception as exc:
                    found.append(exc)
        return found

    def broker_for(self, account_id: str, clock: dict[str, Any] | None = None) -> AccountBroker:
        """One account's `Broker`; with `clock`, the run's clock (read once, not per account)."""
        return AccountBroker(self, account_id, clock)

    def clock(self) -> dict[str, Any] | None:
        clock = self.call("clock", self._client.get_clock)
        return clock if isinstance(clock, dict) else None

    @property
    def client(self) -> BrokerClient:
        return self._client


class AccountBroker:
    """The `Broker` protocol for one account of the Broker API."""

    def __init__(self, api: BrokerApi, account_id: str, clock: dict[str, Any] | None = None):
        self._api = api
        self.account_id = account_id
        self._clock = clock

    def fetch_snapshot(self) -> RawSnapshot:
        with self._api.pacer.reserved(2):  # the two requests, sent one after the other
            return self.fetch_reserved()

    def fetch_reserved(self) -> RawSnapshot:
        """The snapshot, its two requests spending slots reserved by the caller."""
        client, account_id = self._api.client, self.account_id
        try:
            positions = self._api.call(
                "positions", lambda: client.get_all_positions_for_account(account_id)
            )
            account = self._api.call("account", lambda: client.get_trade_account_by_id(account_id))
        except ValueError:  # alpaca-py checks the id is a UUID before sending anything
            raise BrokerRejectedError(f"account id {account_id!r} is not a UUID") from None
        clock = self._clock if self._clock is not None else self._api.clock()
        return snapshot_of(positions, account, clock)

    def fetch_position(self, asset_id: str) -> dict[str, Any] | None:
        """One position (`GET /v1/trading/accounts/{id}/positions/{asset_id}`), None on a 404:
        what a fill of this account re-reads (`recon.fills.read` decides what a 404 means)."""
        client, account_id = self._api.client, self.account_id
        try:
            record = self._api.call(
                f"position {asset_id}",
                lambda: client.get_open_position_for_account(account_id, asset_id),
            )
        except BrokerRejectedError as exc:
            if exc.status_code == 404:
                return None
            raise
        except ValueError:  # alpaca-py checks the id is a UUID before sending anything
            raise BrokerRejectedError(f"account id {account_id!r} is not a UUID") from None
        return position_of(record)


def _created(account: dict[str, Any]) -> datetime:
    raw = str(account.get("created_at") or "")
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BrokerTransientError("broker listed an account without a created_at") from None

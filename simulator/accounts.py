"""The Broker API's side of the simulator: N generated accounts under one correspondent key."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from simulator.fills import Execution
from simulator.portfolio import Portfolio

JSONDict = dict[str, Any]
# Alpaca's `GET /v1/accounts` answers at most this many accounts; clients page by creation time.
MAX_PAGE = 1000
_FIRST_CREATED = dt.datetime(2026, 1, 5, 14, 30, tzinfo=dt.UTC)


class AccountFault(BaseModel):
    """One account misbehaving: its requests fail (`fail`, answering `status`) or are held
    `delay` seconds before the answer (`stall`), the next `count` of them or all until
    cleared, or only its `positions` or `account` requests; or its summary does not tie
    out (`tieout`)."""

    model_config = ConfigDict(extra="forbid")

    account_id: str = Field(min_length=1)
    mode: Literal["fail", "stall", "tieout"]
    status: int = Field(default=500, ge=400, le=599)
    count: int | None = Field(default=None, ge=1)
    delay: float = Field(default=1.0, gt=0, le=60)
    only: Literal["positions", "account"] | None = None


class BrokerAccounts:
    """The accounts, their books (made on first use, so 10,000 accounts cost little until
    read) and the per-account faults."""

    def __init__(self, count: int, seed: int, page_size: int = MAX_PAGE) -> None:
        self._seed = seed
        self._lock = threading.Lock()
        self.page_size = min(page_size, MAX_PAGE)
        self._ids = [str(uuid.UUID(int=(seed << 64) + i + 1, version=4)) for i in range(count)]
        self._index = {account_id: i for i, account_id in enumerate(self._ids)}
        self._books: dict[str, Portfolio] = {}
        self.faults: dict[str, AccountFault] = {}
        # Accounts listed with another status (tests: only ACTIVE ones are reconciled).
        self.statuses: dict[str, str] = {}

    @property
    def ids(self) -> list[str]:
        return list(self._ids)

    def knows(self, account_id: str) -> bool:
        return account_id in self._index

    def created_at(self, account_id: str) -> dt.datetime:
        return _FIRST_CREATED + dt.timedelta(minutes=self._index[account_id])

    def book(self, account_id: str) -> Portfolio:
        with self._lock:
            book = self._books.get(account_id)
            if book is None:
                book = Portfolio(self._seed + self._index[account_id] + 1, account_id)
                self._books[account_id] = book
            return book

    def advance(self, steps: int) -> None:
        """Move every account's book (the ones not read yet start from step 0 when read)."""
        with self._lock:
            books = list(self._books.values())
        for book in books:
            book.advance(steps)

    def take_executions(self) -> list[tuple[str, list[Execution]]]:
        """Each account's executions since the last call (fills and the drift's trades)."""
        with self._lock:
            books = list(self._books.items())
        taken = [(account_id, book.take_executions()) for account_id, book in books]
        return [(account_id, made) for account_id, made in taken if made]

    def listing(self, account_id: str) -> JSONDict:
        """The Broker API's Account object (the fields a reconciler reads)."""
        created = self.created_at(account_id)
        return {
            "id": account_id,
            "account_number": f"9{self._index[account_id]:08d}",
            "status": self.statuses.get(account_id, "ACTIVE"),
            "crypto_status": "INACTIVE",
            "currency": "USD",
            "last_equity": "0",
            "created_at": created.isoformat().replace("+00:00", "Z"),
            "account_type": "trading",
        }

    def page(
        self,
        *,
        status: str | None,
        created_after: dt.datetime | None,
        created_before: dt.datetime | None,
        descending: bool,
    ) -> list[JSONDict]:
        """At most `page_size` accounts, in creation order, as Alpaca pages them."""
        chosen = []
        ordered = reversed(self._ids) if descending else iter(self._ids)
        wanted = {s.strip().upper() for s in status.split(",")} if status else None
        for account_id in ordered:
            created = self.created_at(account_id)
            if created_after is not None and created <= created_after:
                continue
            if created_before is not None and created >= created_before:
                continue
            listing = self.listing(account_id)
            if wanted is not None and listing["status"] not in wanted:
                continue
            chosen.append(listing)
            if len(chosen) >= self.page_size:
                break
        return chosen

    def trade_account(self, account_id: str) -> JSONDict:
        account = self.book(account_id).account()
        fault = self.faults.get(account_id)
        if fault is not None and fault.mode == "tieout":
            # A summary a million dollars away from the positions: the tie-out refuses it.
            value = Decimal(str(account.get("long_market_value") or "0")) + Decimal(1_000_000)
            account["long_market_value"] = str(value)
        return account

    def failing(self, account_id: str, mode: str = "fail", path: str = "") -> AccountFault | None:
        """The account's `mode` fault (`fail` or `stall`) for this request (`path`), one of
        its `count` used up."""
        with self._lock:
            fault = self.faults.get(account_id)
            if fault is None or fault.mode != mode:
                return None
            if fault.only is not None and not path.endswith(f"/{fault.only}"):
                return None
            if fault.count is not None:
                if fault.count > 1:
                    self.faults[account_id] = fault.model_copy(update={"count": fault.count - 1})
                else:
                    del self.faults[account_id]
            return fault

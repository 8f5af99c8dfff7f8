"""The simulator's settings, and everything one simulated broker holds between requests."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from simulator.accounts import MAX_PAGE, BrokerAccounts
from simulator.events import TradeEvents
from simulator.faults import Fault, FaultSwitch, RequestLog
from simulator.portfolio import Portfolio
from simulator.ratelimit import RateLimit
from simulator.stream import StreamHub

DEFAULT_ACCOUNT_ID = "3f5e8c2a-7b1d-4e9a-8c6f-0d2b4a1e9c57"


class SimulatorConfig(BaseModel):
    """How to run the simulated broker. `port=0` lets the OS pick a free port."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)
    seed: int = 42
    api_key: str = Field(default="sim-key", min_length=1)
    secret_key: str = Field(default="sim-secret", min_length=1)
    account_id: str = DEFAULT_ACCOUNT_ID
    drift_seconds: float = Field(default=0.0, ge=0.0)
    # The Broker API (`/v1`): generated accounts, requests per minute (0: no limit), the
    # burst the limit allows (default: one second's worth), accounts per listing page.
    accounts: int = Field(default=0, ge=0, le=100_000)
    broker_rate_limit: int = Field(default=0, ge=0)
    broker_rate_burst: int | None = Field(default=None, ge=1)
    broker_page_size: int = Field(default=MAX_PAGE, ge=1, le=MAX_PAGE)
    # Bearer token of the /_sim control API: a web page in the operator's browser can reach
    # loopback, so loopback alone is no protection. Random unless given.
    control_token: str = Field(default_factory=lambda: secrets.token_urlsafe(24), min_length=16)


# A demo left running for hours with a short drift interval must not stall one request while it
# replays every missed step; beyond this the missed steps are skipped.
MAX_CATCH_UP_STEPS = 1_000


class Simulator:
    def __init__(self, config: SimulatorConfig, monotonic: Callable[[], float]) -> None:
        self.config = config
        self.portfolio = Portfolio(config.seed, config.account_id)
        self.faults: FaultSwitch[Fault] = FaultSwitch()
        self.log = RequestLog()
        self.accounts = self._new_accounts()
        self.rate_limit = RateLimit(config.broker_rate_limit, config.broker_rate_burst)
        # The Broker API's trade events of every generated account (`/v2/events/trades`).
        self.events = TradeEvents()
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._drift_origin = monotonic()
        # The key pair the broker accepts now; rotating it (as regenerating keys in Alpaca's
        # dashboard does) turns a client's configured keys into wrong ones.
        self.credentials = (config.api_key, config.secret_key)
        self.stream = StreamHub(
            lambda: self.credentials,
            tick=self.catch_up if config.drift_seconds > 0 else None,
            tick_seconds=min(1.0, config.drift_seconds or 1.0),
        )

    def _new_accounts(self) -> BrokerAccounts:
        config = self.config
        return BrokerAccounts(config.accounts, config.seed, config.broker_page_size)

    def publish(self) -> None:
        """Send the executions the book made since the last call to every listener."""
        executions = self.portfolio.take_executions()
        if executions:
            self.stream.publish([e.message() for e in executions])
        for account_id, made in self.accounts.take_executions():
            self.events.publish(account_id, made)

    def catch_up(self) -> int:
        """Apply the drift steps that fell due since the last call; lazy, so no timer thread."""
        interval = self.config.drift_seconds
        if interval <= 0:
            return 0
        with self._lock:
            due = int((self._monotonic() - self._drift_origin) // interval)
            if due <= 0:
                return 0
            self._drift_origin += due * interval
        steps = min(due, MAX_CATCH_UP_STEPS)
        self.portfolio.advance(steps)
        self.publish()
        return steps

    def reset(self) -> None:
        """Back to step 0 of the seeded book, no fault armed: a clean start for each test."""
        self.portfolio = Portfolio(self.config.seed, self.config.account_id)
        self.faults.clear()
        self.log.clear()
        self.accounts = self._new_accounts()
        self.rate_limit.configure(self.config.broker_rate_limit, self.config.broker_rate_burst)
        self.credentials = (self.config.api_key, self.config.secret_key)
        self.stream.reset()
        self.events.reset()
        with self._lock:
            self._drift_origin = self._monotonic()

    def state(self) -> dict[str, Any]:
        return {
            "step": self.portfolio.step_count,
            "positions": len(self.portfolio.positions()),
            "fault": self.faults.describe(),
            "loaded": self.portfolio.loaded,
        }

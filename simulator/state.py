"""The simulator's settings, and everything one simulated broker holds between requests."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from simulator.faults import FaultSwitch, RequestLog
from simulator.portfolio import Portfolio

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


# A demo left running for hours with a short drift interval must not stall one request while it
# replays every missed step; beyond this the missed steps are skipped.
MAX_CATCH_UP_STEPS = 1_000


class Simulator:
    def __init__(self, config: SimulatorConfig, monotonic: Callable[[], float]) -> None:
        self.config = config
        self.portfolio = Portfolio(config.seed, config.account_id)
        self.faults = FaultSwitch()
        self.log = RequestLog()
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._drift_origin = monotonic()
        # The key pair the broker accepts now; rotating it (as regenerating keys in Alpaca's
        # dashboard does) turns a client's configured keys into wrong ones.
        self.credentials = (config.api_key, config.secret_key)

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
        return steps

    def reset(self) -> None:
        """Back to step 0 of the seeded book, no fault armed: a clean start for each test."""
        self.portfolio = Portfolio(self.config.seed, self.config.account_id)
        self.faults.clear()
        self.log.clear()
        self.credentials = (self.config.api_key, self.config.secret_key)
        with self._lock:
            self._drift_origin = self._monotonic()

    def state(self) -> dict[str, Any]:
        return {
            "step": self.portfolio.step_count,
            "positions": len(self.portfolio.positions()),
            "fault": self.faults.describe(),
            "loaded": self.portfolio.loaded,
        }

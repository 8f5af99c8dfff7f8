"""The fault switch and the request log: how tests make the simulated broker misbehave."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

FaultMode = Literal[
    "status",
    "no_code",
    "malformed_json",
    "unknown_enum",
    "missing_qty",
    "stall",
    "empty_positions",
    "drop",
    # A misbehaving proxy's error page that echoes the request, key headers included: as
    # text, or as JSON with a `message` beside the echo.
    "echo",
    "echo_json",
]
# Modes that answer an error of their own, with a 4xx/5xx status of the caller's choice.
_ERROR_MODES: frozenset[str] = frozenset({"no_code", "echo", "echo_json"})

# Bodies exactly as Alpaca sends them; note the 403 has no `code`, which trips clients that
# assume every error body has one.
_SERVER_ERROR = {"code": 50010000, "message": "internal server error occurred, retry later"}
ERROR_BODIES: dict[int, dict[str, Any]] = {
    401: {"code": 40110000, "message": "request is not authorized"},
    403: {"message": "forbidden."},
    404: {"code": 40410000, "message": "position does not exist"},
    422: {"code": 42210000, "message": "invalid symbol"},
    429: {"code": 42910000, "message": "rate limit exceeded"},
    500: _SERVER_ERROR,
    502: _SERVER_ERROR,
    503: _SERVER_ERROR,
    504: _SERVER_ERROR,
}
RATE_LIMIT = 200

# Faults that rewrite a positions payload only make sense where one is served.
_POSITIONS_ONLY: frozenset[str] = frozenset({"unknown_enum", "missing_qty"})
# alpaca-py 0.44 already knows "crypto_perp"; "ipo" is in Alpaca's spec but not in alpaca-py's
# enum, so it is the value that really breaks a typed client today.
DEFAULT_UNKNOWN_ASSET_CLASS = "ipo"


def error_headers(status: int) -> dict[str, str]:
    if status != 429:
        return {}
    return {
        "X-RateLimit-Limit": str(RATE_LIMIT),
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(int(time.time()) + 2),
    }


class Armed(BaseModel):
    """What a fault switch holds: any fault with a `count` of uses (None: until cleared)."""

    count: int | None = None


F = TypeVar("F", bound=Armed)


class Fault(Armed):
    """One armed fault. `path=None` hits every /v2 path; `count=None` lasts until cleared."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: FaultMode
    path: str | None = Field(default=None, pattern=r"^/v2(/.*)?$")
    count: int | None = Field(default=None, ge=1)
    status: int | None = None
    delay: float = Field(default=0.0, ge=0.0, le=600.0)
    value: str | None = Field(
        default=None, description="asset_class served by unknown_enum (default 'ipo')"
    )

    @model_validator(mode="after")
    def _check_mode_fields(self) -> Self:
        if self.mode == "status" and self.status not in ERROR_BODIES:
            allowed = ", ".join(str(s) for s in ERROR_BODIES)
            raise ValueError(f"mode 'status' needs status in {allowed}")
        if self.mode in _ERROR_MODES and self.status is not None and not 400 <= self.status <= 599:
            raise ValueError(f"mode {self.mode!r} needs a 4xx or 5xx status")
        if self.mode != "status" and self.mode not in _ERROR_MODES and self.status is not None:
            raise ValueError(f"mode {self.mode!r} takes no status")
        if self.mode == "stall" and self.delay <= 0:
            raise ValueError("mode 'stall' needs a positive delay")
        if self.value is not None and self.mode != "unknown_enum":
            raise ValueError("value only applies to mode 'unknown_enum'")
        return self

    def applies_to(self, path: str) -> bool:
        if self.path is not None and self.path != path:
            return False
        if self.mode in _POSITIONS_ONLY:
            return path == "/v2/positions" or path.startswith("/v2/positions/")
        if self.mode == "empty_positions":
            return path == "/v2/positions"
        return True


class FaultSwitch(Generic[F]):
    """Holds at most one fault; `take` consumes one use of it when it applies."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fault: F | None = None
        self._remaining: int | None = None

    @property
    def current(self) -> F | None:
        return self._fault

    def arm(self, fault: F) -> None:
        with self._lock:
            self._fault, self._remaining = fault, fault.count

    def clear(self) -> None:
        with self._lock:
            self._fault = self._remaining = None

    def describe(self) -> dict[str, Any] | None:
        with self._lock:
            if self._fault is None:
                return None
            return {**self._fault.model_dump(), "count": self._remaining}

    def take(self, applies: Callable[[F], bool]) -> F | None:
        with self._lock:
            fault = self._fault
            if fault is None or not applies(fault):
                return None
            if self._remaining is not None:
                self._remaining -= 1
                if self._remaining <= 0:
                    self._fault = self._remaining = None
            return fault


class RequestLog:
    """Every /v2 request, recorded on arrival so a stalled or dropped request is still counted."""

    def __init__(self, limit: int = 10_000) -> None:
        self._lock = threading.Lock()
        # Bounded so a long-running demo with drift cannot grow without limit.
        self._entries: deque[dict[str, Any]] = deque(maxlen=limit)
        self._seq = 0

    def start(self, method: str, path: str) -> dict[str, Any]:
        with self._lock:
            self._seq += 1
            entry: dict[str, Any] = {
                "seq": self._seq,
                "method": method,
                "path": path,
                "status": None,
                "fault": None,
                "time": dt.datetime.now(dt.UTC).isoformat(),
            }
            self._entries.append(entry)
            return entry

    def mark_fault(self, entry: dict[str, Any], mode: str) -> None:
        with self._lock:
            entry["fault"] = mode

    def finish(self, entry: dict[str, Any], status: int | None) -> None:
        with self._lock:
            entry["status"] = status

    def entries(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(e) for e in self._entries]

    def clear(self) -> int:
        with self._lock:
            count = len(self._entries)
            self._entries.clear()
            return count

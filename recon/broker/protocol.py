"""What the reconciler needs from a broker, independent of which Alpaca API serves it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class RawSnapshot:
    """The broker's answer, untouched: JSON exactly as sent, numbers still strings.

    Parsing happens later (`recon.snapshot`) so that one odd record fails alone instead
    of taking the whole list with it, as alpaca-py's strict models would.
    """

    account: dict[str, Any]
    positions: list[Any]
    clock: dict[str, Any] | None = None


class Broker(Protocol):
    """One account's positions and summary.

    The trading API (one account per key pair) implements it with `AlpacaTradingBroker`;
    a Broker API adapter (many accounts, `BrokerClient.get_all_positions_for_account`)
    implements the same method for one account id.
    """

    def fetch_snapshot(self) -> RawSnapshot:
        """Read account, positions and clock; raise `recon.errors.BrokerError` on failure."""
        ...

"""The simulated broker's universe: what the seeded book starts with and what it may trade into."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class Listing:
    symbol: str
    exchange: str
    asset_class: str
    marginable: bool
    base_price: Decimal
    # Quantities are drawn as integers in units of 10**-qty_places, so no float ever enters.
    qty_places: int
    qty_range: tuple[int, int]


def _equity(symbol: str, exchange: str, price: str, low: int, high: int) -> Listing:
    return Listing(symbol, exchange, "us_equity", True, Decimal(price), 0, (low, high))


def _crypto(symbol: str, price: str, low: int, high: int) -> Listing:
    return Listing(symbol, "CRYPTO", "crypto", False, Decimal(price), 9, (low, high))


LISTINGS: dict[str, Listing] = {
    listing.symbol: listing
    for listing in (
        _equity("AAPL", "NASDAQ", "189.50", 20, 80),
        _equity("MSFT", "NASDAQ", "415.20", 5, 30),
        _equity("SPY", "ARCA", "545.10", 5, 25),
        Listing("NVDA", "NASDAQ", "us_equity", True, Decimal("120.75"), 9, (10**8, 10**9 - 1)),
        _equity("KO", "NYSE", "62.40", 60, 150),
        _equity("TSLA", "NASDAQ", "178.30", 5, 20),
        _equity("GME", "NYSE", "24.60", 20, 60),
        _crypto("BTCUSD", "64250.00", 10**8, 9 * 10**8),
        _crypto("ETHUSD", "3150.00", 15 * 10**8, 5 * 10**9),
        Listing("AAPL250620C00100000", "", "us_option", False, Decimal("92.40"), 0, (1, 5)),
        _equity("FB", "NASDAQ", "480.00", 5, 20),
        _equity("SQ", "NYSE", "68.00", 10, 40),
        # The pool new positions open from.
        _equity("AMD", "NASDAQ", "160.00", 5, 40),
        _equity("JPM", "NYSE", "198.00", 5, 30),
        _equity("XOM", "NYSE", "112.00", 10, 50),
        _equity("IWM", "ARCA", "205.00", 5, 20),
        _equity("DIS", "NYSE", "101.00", 10, 40),
        _equity("INTC", "NASDAQ", "31.00", 50, 200),
        _equity("NFLX", "NASDAQ", "640.00", 2, 10),
        _equity("BAC", "NYSE", "39.00", 50, 150),
        _equity("PLTR", "NASDAQ", "24.00", 50, 200),
        _crypto("SOLUSD", "145.00", 10**9, 3 * 10**10),
    )
}

# The opening book, in the order that fixes each seed's draws; the symbols in SHORT are short.
INITIAL_BOOK: tuple[str, ...] = (
    "AAPL",
    "MSFT",
    "SPY",
    "NVDA",
    "KO",
    "TSLA",
    "GME",
    "BTCUSD",
    "ETHUSD",
    "AAPL250620C00100000",
    "FB",
    "SQ",
)
SHORT = frozenset({"TSLA", "GME"})
# KO always has shares held so that every seed shows a qty_available below qty; others get
# held shares by chance.
ALWAYS_HELD = frozenset({"KO"})

POOL: tuple[str, ...] = ("AMD", "JPM", "XOM", "IWM", "DIS", "INTC", "NFLX", "BAC", "PLTR", "SOLUSD")

# Real ticker changes; the asset keeps its asset_id, which is the point of simulating them.
RENAMES: tuple[tuple[str, str], ...] = (("FB", "META"), ("SQ", "XYZ"))

"""Position records and the account object, rendered the way Alpaca renders them.

Every number leaves this module as a decimal string; arithmetic stays in `Decimal` so that a
reconciler comparing our strings never sees float noise the real broker would not produce.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

JSONDict = dict[str, Any]

# Fixed so asset ids are stable across runs, machines and seeds, like Alpaca's.
ASSET_NAMESPACE = uuid.UUID("6f1c2d8e-4b0a-5e3c-9a7d-2c51a0e8b913")

ZERO = Decimal(0)
CENT = Decimal("0.01")
AVG_PRICE = Decimal("0.000001")
RATIO = Decimal("0.000001")
OPTION_MULTIPLIER = Decimal(100)
ACCOUNT_MULTIPLIER = Decimal(2)
# Reg-T style requirements: marginable names need half (initial) or 30% (maintenance);
# crypto and options are paid in full.
INITIAL_RATE = Decimal("0.5")
MAINTENANCE_RATE = Decimal("0.3")


def render(value: Decimal) -> str:
    """Decimal string without exponent and without trailing zeros, as Alpaca sends them."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def asset_id_for(symbol: str) -> str:
    return str(uuid.uuid5(ASSET_NAMESPACE, symbol))


def parse_decimal(value: object) -> Decimal | None:
    """Alpaca numbers arrive as strings; anything unparseable counts as absent."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    try:
        parsed = Decimal(value)
    except InvalidOperation:
        return None
    return parsed if parsed.is_finite() else None


def _ratio(numerator: Decimal, denominator: Decimal) -> Decimal:
    if denominator == 0:
        return ZERO
    return (numerator / denominator).quantize(RATIO, ROUND_HALF_EVEN)


@dataclass
class Holding:
    """One open position; `qty` is signed (negative for shorts), `held` is unsigned."""

    symbol: str
    asset_id: str
    exchange: str
    asset_class: str
    marginable: bool
    qty: Decimal
    avg_entry_price: Decimal
    current_price: Decimal
    lastday_price: Decimal
    held: Decimal = ZERO
    qty_places: int = 0

    @property
    def multiplier(self) -> Decimal:
        return OPTION_MULTIPLIER if self.asset_class == "us_option" else Decimal(1)

    def money(self, value: Decimal) -> Decimal:
        # Crypto values stay exact (qty*price), which is what Alpaca's crypto payloads show;
        # equities and options settle in cents.
        if self.asset_class == "crypto":
            return value
        return value.quantize(CENT, ROUND_HALF_EVEN)

    def value_at(self, price: Decimal) -> Decimal:
        return self.money(self.qty * price * self.multiplier)

    @property
    def market_value(self) -> Decimal:
        return self.value_at(self.current_price)

    @property
    def cost_basis(self) -> Decimal:
        return self.value_at(self.avg_entry_price)

    def payload(self) -> JSONDict:
        market_value = self.market_value
        cost_basis = self.cost_basis
        lastday_value = self.value_at(self.lastday_price)
        unrealized = market_value - cost_basis
        intraday = market_value - lastday_value
        sign = Decimal(1) if self.qty >= 0 else Decimal(-1)
        return {
            "asset_id": self.asset_id,
            "symbol": self.symbol,
            "exchange": self.exchange,
            "asset_class": self.asset_class,
            "asset_marginable": self.marginable,
            "qty": render(self.qty),
            "avg_entry_price": render(self.avg_entry_price),
            "side": "long" if self.qty >= 0 else "short",
            "market_value": render(market_value),
            "cost_basis": render(cost_basis),
            "unrealized_pl": render(unrealized),
            "unrealized_plpc": render(_ratio(unrealized, abs(cost_basis))),
            "unrealized_intraday_pl": render(intraday),
            "unrealized_intraday_plpc": render(_ratio(intraday, abs(lastday_value))),
            "current_price": render(self.current_price),
            "lastday_price": render(self.lastday_price),
            "change_today": render(
                _ratio(self.current_price - self.lastday_price, self.lastday_price)
            ),
            "qty_available": render(sign * (abs(self.qty) - self.held)),
        }


def split_market_values(market_values: Iterable[Decimal]) -> tuple[Decimal, Decimal]:
    """(long, short) sums; short is negative, exactly as the account object reports it."""
    values = list(market_values)
    return sum((v for v in values if v > 0), ZERO), sum((v for v in values if v < 0), ZERO)


def market_values_of(positions: Iterable[JSONDict]) -> list[Decimal]:
    """Market values as the rendered strings say, skipping records that lack a usable one."""
    values = (parse_decimal(p.get("market_value")) for p in positions if isinstance(p, dict))
    return [v for v in values if v is not None]


@dataclass(frozen=True)
class AccountFigures:
    cash: Decimal
    long_market_value: Decimal
    short_market_value: Decimal
    last_equity: Decimal
    initial_margin: Decimal
    maintenance_margin: Decimal
    last_maintenance_margin: Decimal

    @property
    def equity(self) -> Decimal:
        return self.cash + self.long_market_value + self.short_market_value


def account_payload(account_id: str, balance_asof: str, figures: AccountFigures) -> JSONDict:
    """An account shaped like today's `/v2/account` (pattern-day-trader fields already gone)."""
    equity = figures.equity
    excess = max(equity - figures.initial_margin, ZERO).quantize(CENT, ROUND_HALF_EVEN)
    buying_power = excess * ACCOUNT_MULTIPLIER
    account_number = "PA" + uuid.uuid5(ASSET_NAMESPACE, account_id).hex[:10].upper()
    return {
        "id": account_id,
        "admin_configurations": {},
        "user_configurations": None,
        "account_number": account_number,
        "status": "ACTIVE",
        "crypto_status": "ACTIVE",
        "currency": "USD",
        "buying_power": render(buying_power),
        "regt_buying_power": render(buying_power),
        "options_buying_power": render(excess),
        "effective_buying_power": render(buying_power),
        "non_marginable_buying_power": render(max(figures.cash, ZERO)),
        "cash": render(figures.cash),
        "accrued_fees": "0",
        "pending_transfer_in": "0",
        "portfolio_value": render(equity),
        "trading_blocked": False,
        "transfers_blocked": False,
        "account_blocked": False,
        "created_at": "2024-01-02T14:30:00.123456Z",
        "trade_suspended_by_user": False,
        "multiplier": render(ACCOUNT_MULTIPLIER),
        "shorting_enabled": True,
        "equity": render(equity),
        "last_equity": render(figures.last_equity),
        "long_market_value": render(figures.long_market_value),
        "short_market_value": render(figures.short_market_value),
        "position_market_value": render(figures.long_market_value - figures.short_market_value),
        "initial_margin": render(figures.initial_margin),
        "maintenance_margin": render(figures.maintenance_margin),
        "last_maintenance_margin": render(figures.last_maintenance_margin),
        "sma": render(excess),
        "balance_asof": balance_asof,
        "crypto_tier": 1,
        "options_trading_level": 2,
        "options_approved_level": 2,
        "intraday_adjustments": "0",
        "pending_reg_taf_fees": "0",
    }


def margins(holdings: Iterable[Holding]) -> tuple[Decimal, Decimal]:
    """(initial, maintenance) requirement in cents."""
    initial = maintenance = ZERO
    for holding in holdings:
        exposure = abs(holding.market_value)
        if holding.marginable:
            initial += exposure * INITIAL_RATE
            maintenance += exposure * MAINTENANCE_RATE
        else:
            initial += exposure
            maintenance += exposure
    return initial.quantize(CENT, ROUND_HALF_EVEN), maintenance.quantize(CENT, ROUND_HALF_EVEN)

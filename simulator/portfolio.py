"""A seeded book of positions that drifts one step at a time.

Everything random comes from one `random.Random(seed)` drawing integers, so a seed and a step
count identify the served payloads exactly, and no float ever reaches a price or a quantity.
"""

from __future__ import annotations

import copy
import datetime as dt
import random
import threading
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal

from simulator.book import (
    AVG_PRICE,
    CENT,
    INITIAL_RATE,
    MAINTENANCE_RATE,
    ZERO,
    AccountFigures,
    Holding,
    JSONDict,
    account_payload,
    asset_id_for,
    margins,
    market_values_of,
    split_market_values,
)
from simulator.fills import Execution, Order, execute, report
from simulator.listings import ALWAYS_HELD, INITIAL_BOOK, LISTINGS, POOL, RENAMES, SHORT, Listing

STEPS_PER_DAY = 8
MIN_BOOK = 6
FIRST_BUSINESS_DAY = dt.date(2026, 7, 1)
BP = Decimal(10_000)  # random moves are drawn in basis points


class Portfolio:
    """The generated book, plus an optional verbatim override installed by `load`.

    While payloads are loaded they are served exactly as given and `step()` keeps advancing the
    generated book underneath, so the step counter and the drift stay meaningful; `unload()`
    brings back the generated book at whatever step it has reached.
    """

    def __init__(self, seed: int, account_id: str) -> None:
        # A simulation wants reproducible draws, not secrecy.
        self._rng = random.Random(seed)  # noqa: S311
        self._lock = threading.RLock()
        self.account_id = account_id
        self._step = 0
        self._day = 0
        self._holdings = [
            self._open(LISTINGS[s], "short" if s in SHORT else "long") for s in INITIAL_BOOK
        ]
        for holding, symbol in zip(self._holdings, INITIAL_BOOK, strict=True):
            if symbol in ALWAYS_HELD or self._rng.randrange(4) == 0:
                self._reroll_held(holding)
        self._cash = Decimal(self._rng.randint(20_000, 80_000))
        first = self._rng.randint(2, 8)
        self._renames = {first: RENAMES[0], first + self._rng.randint(4, 12): RENAMES[1]}
        self._last_equity, self._last_maintenance = self._equity_at_lastday()
        self._loaded: tuple[list[JSONDict], JSONDict] | None = None
        # Executions not yet taken by the stream: every trade of the book shows up there.
        self._executions: list[Execution] = []

    # -- reading ----------------------------------------------------------------------------

    @property
    def step_count(self) -> int:
        return self._step

    @property
    def loaded(self) -> bool:
        return self._loaded is not None

    def positions(self) -> list[JSONDict]:
        with self._lock:
            if self._loaded is not None:
                return copy.deepcopy(self._loaded[0])
            return [h.payload() for h in self._holdings]

    def position(self, symbol_or_asset_id: str) -> JSONDict | None:
        """Alpaca resolves a symbol, an asset id, or a crypto pair written with a slash."""
        wanted = symbol_or_asset_id.replace("/", "")
        for record in self.positions():
            if wanted in (record.get("symbol"), record.get("asset_id")):
                return record
            if str(record.get("asset_id", "")).lower() == wanted.lower():
                return record
        return None

    def account(self) -> JSONDict:
        with self._lock:
            if self._loaded is not None:
                return copy.deepcopy(self._loaded[1])
            long_mv, short_mv = split_market_values(h.market_value for h in self._holdings)
            initial, maintenance = margins(self._holdings)
            figures = AccountFigures(
                cash=self._cash,
                long_market_value=long_mv,
                short_market_value=short_mv,
                last_equity=self._last_equity,
                initial_margin=initial,
                maintenance_margin=maintenance,
                last_maintenance_margin=self._last_maintenance,
            )
            return account_payload(self.account_id, self._business_day().isoformat(), figures)

    # -- loading ----------------------------------------------------------------------------

    def load(self, positions: list[JSONDict], account: JSONDict | None = None) -> None:
        """Serve these payloads verbatim; without an account, build one that ties out with them."""
        with self._lock:
            if account is None:
                long_mv, short_mv = split_market_values(market_values_of(positions))
                gross = long_mv - short_mv
                maintenance = (gross * MAINTENANCE_RATE).quantize(CENT)
                figures = AccountFigures(
                    cash=self._cash,
                    long_market_value=long_mv,
                    short_market_value=short_mv,
                    last_equity=self._cash + long_mv + short_mv,
                    initial_margin=(gross * INITIAL_RATE).quantize(CENT),
                    maintenance_margin=maintenance,
                    last_maintenance_margin=maintenance,
                )
                as_of = self._business_day().isoformat()
                account = account_payload(self.account_id, as_of, figures)
            self._loaded = (copy.deepcopy(positions), copy.deepcopy(account))

    def unload(self) -> None:
        with self._lock:
            self._loaded = None

    # -- drifting ---------------------------------------------------------------------------

    def advance(self, steps: int) -> None:
        for _ in range(steps):
            self.step()

    def step(self) -> None:
        with self._lock:
            rng = self._rng
            self._step += 1
            if self._step % STEPS_PER_DAY == 0:
                self._roll_day()
            for holding in self._holdings:
                spread = 500 if holding.asset_class == "crypto" else 300
                move = Decimal(rng.randint(-spread, spread)) / BP
                price = (holding.current_price * (1 + move)).quantize(CENT, ROUND_HALF_EVEN)
                holding.current_price = max(price, CENT)
            if self._step in self._renames:
                old, new = self._renames[self._step]
                for holding in self._holdings:
                    if holding.symbol == old:
                        holding.symbol = new
            if rng.randrange(100) < 40:
                self._trade(rng.choice(self._holdings))
            closable = self._closable()
            if rng.randrange(100) < 12 and closable and len(self._holdings) > MIN_BOOK:
                self._close(rng.choice(closable))
            held = {h.asset_id for h in self._holdings}
            candidates = [s for s in POOL if asset_id_for(s) not in held]
            if candidates and rng.randrange(100) < 15:
                listing = LISTINGS[rng.choice(candidates)]
                short = listing.marginable and rng.randrange(5) == 0
                holding = self._open(listing, "short" if short else "long")
                self._cash -= holding.market_value.quantize(CENT)
                self._holdings.append(holding)
                self._report(holding, holding.qty)
            if rng.randrange(100) < 20:
                self._reroll_held(rng.choice(self._holdings))

    def _open(self, listing: Listing, side: str) -> Holding:
        rng = self._rng
        qty = Decimal(rng.randint(*listing.qty_range)).scaleb(-listing.qty_places)
        lastday = self._jitter(listing.base_price, 400)
        current = self._jitter(lastday, 200)
        entry = current if self._step else self._jitter(listing.base_price, 1500)
        return Holding(
            symbol=listing.symbol,
            asset_id=asset_id_for(listing.symbol),
            exchange=listing.exchange,
            asset_class=listing.asset_class,
            marginable=listing.marginable,
            qty=qty if side == "long" else -qty,
            avg_entry_price=entry,
            current_price=current,
            lastday_price=lastday,
            qty_places=listing.qty_places,
        )

    def _jitter(self, price: Decimal, spread_bp: int) -> Decimal:
        move = Decimal(self._rng.randint(-spread_bp, spread_bp)) / BP
        return max((price * (1 + move)).quantize(CENT, ROUND_HALF_EVEN), CENT)

    @staticmethod
    def _unit(holding: Holding) -> Decimal:
        return Decimal(1).scaleb(-holding.qty_places)

    def _trade(self, holding: Holding) -> None:
        """A partial fill: grow or shrink the position without flattening or flipping it."""
        unit = self._unit(holding)
        size = abs(holding.qty)
        fraction = Decimal(self._rng.randint(5, 40)) / 100
        delta = max((size * fraction).quantize(unit, ROUND_DOWN), unit)
        grow = self._rng.randrange(2) == 0 or delta >= size
        sign = 1 if holding.qty > 0 else -1
        if grow:
            new_size = size + delta
            total = size * holding.avg_entry_price + delta * holding.current_price
            holding.avg_entry_price = (total / new_size).quantize(AVG_PRICE, ROUND_HALF_EVEN)
        else:
            new_size = size - delta
        signed_trade = sign * (new_size - size)
        self._cash -= (signed_trade * holding.current_price * holding.multiplier).quantize(CENT)
        holding.qty = sign * new_size
        holding.held = min(holding.held, new_size)
        self._report(holding, signed_trade)

    def _closable(self) -> list[Holding]:
        # A position due for a rename must survive until it happens, or the rename never shows.
        pending = {old for step, (old, _) in self._renames.items() if step > self._step}
        return [h for h in self._holdings if h.symbol not in pending]

    def _close(self, holding: Holding) -> None:
        self._cash += holding.market_value.quantize(CENT)
        self._holdings.remove(holding)
        self._report(holding, -holding.qty, after=ZERO)

    def _report(self, holding: Holding, signed: Decimal, after: Decimal | None = None) -> None:
        """A trade the drift made, as the execution the stream delivers."""
        side = "buy" if signed > 0 else "sell"
        order = Order(holding, side, abs(signed))
        position = holding.qty if after is None else after
        self._executions.append(report(order, abs(signed), holding.current_price, position))

    # -- fills ------------------------------------------------------------------------------

    def fill(self, symbol: str, qty: Decimal, side: str, partials: int = 1) -> list[Execution]:
        """Execute an order now in `partials` executions: opens, grows, shrinks, closes, flips."""
        with self._lock:
            if self._loaded is not None:
                raise ValueError("fills need the generated book (payloads are loaded)")
            holding = next((h for h in self._holdings if h.symbol == symbol), None)
            if holding is None:
                listing = LISTINGS.get(symbol)
                if listing is None:
                    raise ValueError(f"unknown symbol {symbol!r}")
                price = listing.base_price
                holding = Holding(
                    symbol=symbol,
                    asset_id=asset_id_for(symbol),
                    exchange=listing.exchange,
                    asset_class=listing.asset_class,
                    marginable=listing.marginable,
                    qty=ZERO,
                    avg_entry_price=price,
                    current_price=price,
                    lastday_price=price,
                    qty_places=listing.qty_places,
                )
                self._holdings.append(holding)
            if qty.as_tuple().exponent < -holding.qty_places:  # type: ignore[operator]
                raise ValueError(f"{symbol} trades in units of 1e-{holding.qty_places}")
            executions = execute(holding, side, qty, partials, self._pay)
            if holding.qty == 0:
                self._holdings.remove(holding)
            self._executions.extend(executions)
            return executions

    def random_fill(self) -> list[Execution]:
        """A buy or sell of part of a held position (never flattening it)."""
        with self._lock:
            holding = self._rng.choice(self._holdings)
            unit = self._unit(holding)
            size = abs(holding.qty)
            fraction = Decimal(self._rng.randint(5, 40)) / 100
            qty = max((size * fraction).quantize(unit, ROUND_DOWN), unit)
            grow = self._rng.randrange(2) == 0 or qty >= size
            side = "buy" if (holding.qty > 0) == grow else "sell"
            symbol = holding.symbol
        return self.fill(symbol, qty, side, self._rng.randint(1, 3))

    def take_executions(self) -> list[Execution]:
        with self._lock:
            taken, self._executions = self._executions, []
            return taken

    def _pay(self, cost: Decimal) -> None:
        self._cash -= cost

    def _reroll_held(self, holding: Holding) -> None:
        unit = self._unit(holding)
        units = int(abs(holding.qty) / unit)
        holding.held = Decimal(self._rng.randint(0, units - 1)) * unit if units > 1 else ZERO

    def _roll_day(self) -> None:
        for holding in self._holdings:
            holding.lastday_price = holding.current_price
        self._day += 1
        self._last_equity, self._last_maintenance = self._equity_at_lastday()

    def _equity_at_lastday(self) -> tuple[Decimal, Decimal]:
        long_mv, short_mv = split_market_values(h.value_at(h.lastday_price) for h in self._holdings)
        return self._cash + long_mv + short_mv, margins(self._holdings)[1]

    def _business_day(self) -> dt.date:
        day = FIRST_BUSINESS_DAY
        for _ in range(self._day):
            day += dt.timedelta(days=3 if day.weekday() == 4 else 1)
        return day

"""`/v2/clock` from the real time: weekdays 09:30-16:00 New York time, holidays ignored."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

NEW_YORK = ZoneInfo("America/New_York")
OPEN = dt.time(9, 30)
CLOSE = dt.time(16, 0)


def _next_weekday(day: dt.date) -> dt.date:
    day += dt.timedelta(days=1)
    while day.weekday() >= 5:
        day += dt.timedelta(days=1)
    return day


def _at(day: dt.date, when: dt.time) -> dt.datetime:
    # Built from the date so the offset follows daylight saving on that day, not on today.
    return dt.datetime.combine(day, when, tzinfo=NEW_YORK)


def market_clock(now: dt.datetime) -> dict[str, Any]:
    """The clock payload for an aware `now`; times carry the New York offset like Alpaca's."""
    local = now.astimezone(NEW_YORK)
    today = local.date()
    trading_day = today.weekday() < 5
    is_open = trading_day and OPEN <= local.time() < CLOSE
    if trading_day and local.time() < OPEN:
        next_open = _at(today, OPEN)
    else:
        next_open = _at(_next_weekday(today), OPEN)
    if trading_day and local.time() < CLOSE:
        next_close = _at(today, CLOSE)
    else:
        next_close = _at(_next_weekday(today), CLOSE)
    return {
        "timestamp": local.isoformat(),
        "is_open": is_open,
        "next_open": next_open.isoformat(),
        "next_close": next_close.isoformat(),
    }

"""The books the console tests load into the simulator, by step."""

from __future__ import annotations

from typing import Any

from tests.factories import raw_position

SYMBOLS = ["AAPL", "MSFT", "KO", "TSLA", "AMZN", "JPM", "XOM", "PEP"]
# Shown as text in the book and the feed, never run (the bad-data case).
HTML_SYMBOL = '<img src=x onerror="window.__xss=1">'
HTML_ERROR = "<script>window.__xss=2</script>"


def book(**qty: str) -> list[dict[str, Any]]:
    """The eight positions at 10 shares each, with `qty` overriding (\"0\" leaves one out)."""
    out = []
    for symbol in SYMBOLS + [s for s in qty if s not in SYMBOLS]:
        amount = qty.get(symbol, "10")
        if amount != "0":
            out.append(raw_position(symbol, amount, "100.00"))
    return out

"""Fill-driven reconciliation: the assets a `trade_updates` fill names, re-read and applied.

The stream says *that* a position changed; the REST read after the sync lock says *what* it
is now, so duplicated, re-ordered or missed events cannot make the book wrong: they cost a
read at most, and the full run after every (re)connect covers what the stream never sent.
"""

from recon.fills.batch import AssetFills, Batch, Dedup
from recon.fills.events import FILL_EVENTS, Fill, parse_trade_update

__all__ = ["FILL_EVENTS", "AssetFills", "Batch", "Dedup", "Fill", "parse_trade_update"]

"""The fill listener's shapes: its `system:error` payload and the status endpoint's `stream`."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, ConfigDict, Field

from recon.schemas.base import IsoDatetime, Shape
from recon.schemas.events import SOURCE

STREAM = "trade_updates"


class StreamFailed(Shape):
    """`system:error` from the fill listener: the stream (or the account read) refused it.

    Journaled once per episode: the same error again, before a connect succeeded, is not."""

    message: str = "Fill stream failed"
    error: str
    timestamp: IsoDatetime
    source: str = SOURCE
    flow_run_id: None = None
    status: Literal["stream"] = "stream"
    stream: str = STREAM


class StreamState(Shape):
    """The status endpoint's `stream` object, read from `stream_status` (every replica agrees)."""

    model_config = ConfigDict(from_attributes=True)

    connected: bool = False
    since: IsoDatetime | None = Field(  # when `connected` last changed
        default=None, validation_alias=AliasChoices("since", "connected_since")
    )
    last_event_at: IsoDatetime | None = None  # the last fill batch applied
    fills_applied: int = 0
    reconnects: int = 0
    last_error: str | None = None
    last_error_at: IsoDatetime | None = None
    account_id: str | None = None

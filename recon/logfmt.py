"""The log line format the old job used, kept so existing log searches still match."""

from __future__ import annotations

import json
from typing import Any

PREFIX = "[PositionReconciliation]"


def line(message: str, **metadata: Any) -> str:
    """`[PositionReconciliation] <message> {metadata}` with JSON metadata (decimals as strings)."""
    if not metadata:
        return f"{PREFIX} {message}"
    return f"{PREFIX} {message} {json.dumps(metadata, default=str, sort_keys=True)}"

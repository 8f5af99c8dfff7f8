"""The journal's payloads: what `position_events.payload` holds and what SSE clients receive.

Written with `dump()` and read back with `model_validate`; the SSE `data` of a row is its
payload as compact JSON, with `flowRunId` filled from the row for rows that lack it.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, ClassVar, Literal

from recon.schemas.base import IsoDatetime, Shape
from recon.schemas.result import Details, RunResult, Summary

POSITION_UPDATED = "position:updated"
SYSTEM_ERROR = "system:error"
SOURCE = "position-reconciliation-job"
KINDS = ("created", "updated", "removed")


# Changes per `position:updated` row (one SSE message each): a first sync of a
# 100,000-position book is 200 messages of ≈ 250 KB rather than one of ≈ 50 MB, larger than
# the relay's whole replay window.
PART_DETAILS = 500


class PositionUpdated(Shape):
    """`position:updated`: a reconciliation changed positions.

    A run with more than PART_DETAILS changes writes several, `part` 1..`parts` of the same
    `flowRunId`, each with the symbols and details of its own share of the changes (in the
    order of one list of them): a client that applies each message as it comes sees every
    change once. A run of one part has no `part`/`parts` keys, the shape it always had.
    """

    raw_fields: ClassVar[frozenset[str]] = frozenset({"details"})

    type: Literal["reconciliation"] = "reconciliation"
    created: list[str]
    updated: list[str]
    removed: list[str]
    timestamp: IsoDatetime
    source: str = SOURCE
    details: Details
    account_id: str
    flow_run_id: str | None
    part: int = 1
    parts: int = 1
    # schedule | manual | startup | reconnect | fallback | fill: what started the run
    # (every run sets it; entries written before it existed have none).
    trigger: str | None = None
    # Only on "fill": the executions the entry applied (absent otherwise).
    execution_ids: list[str] | None = None

    def dump(self, *, exclude: set[str] | None = None) -> dict[str, Any]:
        # Absent rather than null/1: older entries, one-part runs and non-fill entries
        # keep their bytes.
        skip = set(exclude or ())
        skip |= {name for name in ("trigger", "execution_ids") if getattr(self, name) is None}
        if self.parts == 1:
            skip |= {"part", "parts"}
        return super().dump(exclude=skip)

    @classmethod
    def of(cls, result: RunResult, at: datetime) -> PositionUpdated:
        return cls(
            created=result.created,
            updated=result.updated,
            removed=result.removed,
            timestamp=at,
            details=result.details,
            account_id=result.account_id,
            flow_run_id=result.flow_run_id,
            trigger=result.trigger,
            execution_ids=result.execution_ids,
        )

    @classmethod
    def parts_of(
        cls, result: RunResult, at: datetime, size: int = PART_DETAILS
    ) -> list[tuple[PositionUpdated, slice]]:
        """The run's messages, each with the slice of `result.details` (and of the diff's
        changes, in the same order) that it carries."""
        if len(result.details) <= size:
            return [(cls.of(result, at), slice(0, len(result.details)))]
        starts = range(0, len(result.details), size)
        out = []
        for number, start in enumerate(starts, 1):
            share = result.details[start : start + size]
            symbols = {kind: [d["symbol"] for d in share if d["change"] == kind] for kind in KINDS}
            message = cls(
                **symbols,
                timestamp=at,
                details=share,
                account_id=result.account_id,
                flow_run_id=result.flow_run_id,
                part=number,
                parts=len(starts),
                trigger=result.trigger,
                execution_ids=result.execution_ids,
            )
            out.append((message, slice(start, start + size)))
        return out


class RunFailed(Shape):
    """`system:error`: a run failed or crashed."""

    message: str = "Position reconciliation failed"
    error: str
    timestamp: IsoDatetime
    source: str = SOURCE
    flow_run_id: str | None
    status: str  # "failed" | "crashed"
    # Broker API mode: the one account that failed (absent for a failure of the whole run).
    account_id: str | None = None

    def dump(self, *, exclude: set[str] | None = None) -> dict[str, Any]:
        skip = set(exclude or ())
        if self.account_id is None:
            skip.add("account_id")  # the bytes a run's failure always had
        return super().dump(exclude=skip)


class PositionsChanged(Shape):
    """The payload of the Prefect event `recon.positions.changed`."""

    created: list[str]
    updated: list[str]
    removed: list[str]
    summary: Summary
    event_id: int | None
    sync_run_id: int | None

    @classmethod
    def of(cls, result: RunResult) -> PositionsChanged:
        # Reads only this model's fields off the result (the details stay behind).
        return cls.model_validate(result, from_attributes=True)


def sse_data(payload: dict[str, Any], flow_run_id: str | None) -> str:
    """A journal row's SSE `data`: its payload as compact JSON (key order kept), with
    `flowRunId` from the row when the payload has none (older or hand-written rows)."""
    data = dict(payload)
    if data.get("flowRunId") is None:
        data["flowRunId"] = flow_run_id
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)

"""What a run reports: the seed's shape (created/updated/removed/errors) plus counts and ids."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from recon.diff import Diff
from recon.snapshot import Snapshot


@dataclass(frozen=True)
class RunResult:
    account_id: str
    created: list[str]
    updated: list[str]
    removed: list[str]
    errors: list[dict[str, str]]
    unchanged: int
    held_back: list[str]
    details: list[dict[str, Any]]
    market_open: bool | None
    started_at: datetime
    flow_run_id: str | None = None
    sync_run_id: int | None = None
    event_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_diff(
        cls, snapshot: Snapshot, diff: Diff, *, started_at: datetime, flow_run_id: str | None
    ) -> RunResult:
        return cls(
            account_id=snapshot.account_id,
            created=diff.symbols("created"),
            updated=diff.symbols("updated"),
            removed=diff.symbols("removed"),
            errors=[e.as_dict() for e in snapshot.errors],
            unchanged=diff.unchanged,
            held_back=diff.held_back,
            details=[c.as_dict() for c in diff.changes],
            market_open=snapshot.market_open,
            started_at=started_at,
            flow_run_id=flow_run_id,
        )

    @property
    def total_changes(self) -> int:
        return len(self.created) + len(self.updated) + len(self.removed)

    def summary(self) -> dict[str, int]:
        return {
            "totalChanges": self.total_changes,
            "createdCount": len(self.created),
            "updatedCount": len(self.updated),
            "removedCount": len(self.removed),
            "errorCount": len(self.errors),
            "unchangedCount": self.unchanged,
        }

    def as_record(self) -> dict[str, Any]:
        """What `sync_runs.result` keeps: all but the per-change details, which the journal
        already holds once (the event's payload, one `position_changes` row each)."""
        record = self.as_dict()
        del record["details"]
        return record

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready; every decimal in `details` is already an exact string."""
        return {
            "created": self.created,
            "updated": self.updated,
            "removed": self.removed,
            "errors": self.errors,
            "summary": self.summary(),
            "heldBack": self.held_back,
            "details": self.details,
            "accountId": self.account_id,
            "marketOpen": self.market_open,
            "flowRunId": self.flow_run_id,
            "syncRunId": self.sync_run_id,
            "eventId": self.event_id,
        }

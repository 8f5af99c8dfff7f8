"""What a run reports: the seed's shape (created/updated/removed/errors) plus counts and ids."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal, Self

from pydantic import Field, SkipValidation
from typing_extensions import TypedDict

from recon.diff import Diff
from recon.schemas.base import Shape
from recon.snapshot import Snapshot

ChangeKind = Literal["created", "updated", "removed"]


# The per-change shapes are TypedDicts in their wire form (hence `assetId`), not models:
# a 10,000-position first sync has 10,000 changes of 9 fields each. Built once by
# `from_diff`, they are passed through as they are: not validated again (`SkipValidation`)
# and not copied by serialization (`Shape.raw_fields`), as the dicts they replaced were not.


class FieldChange(TypedDict):
    before: str | None
    after: str | None


class ChangeDetail(TypedDict):
    """One position's change; every value is already exact text."""

    assetId: str
    symbol: str
    change: ChangeKind
    fields: dict[str, FieldChange]


# Every holder of the details declares them so.
Details = SkipValidation[list[ChangeDetail]]


class SymbolFailure(Shape):
    """A broker record that could not be used (its local row is left as it is)."""

    symbol: str
    error: str


COUNTS = ("created_count", "updated_count", "removed_count", "unchanged_count", "error_count")


def counts_of(source: object) -> dict[str, Any]:
    """The five counts of a run, read from anything that has them (a summary, a run row)."""
    return {name: getattr(source, name) for name in COUNTS}


class Summary(Shape):
    total_changes: int
    created_count: int
    updated_count: int
    removed_count: int
    error_count: int
    unchanged_count: int


class RunChanges(Shape):
    """What `sync_runs.result` is read back as: the trigger's and the status's `result`."""

    created: list[str] = Field(default_factory=list)
    updated: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)
    errors: list[SymbolFailure] = Field(default_factory=list)
    summary: Summary

    @property
    def total_changes(self) -> int:
        # The summary, not the lists: a bounded report's lists are only their first entries.
        return self.summary.total_changes


# What the flow hands Prefect (its return value, the persist task's result, the artifact
# and the `recon.positions.changed` event) stays this size whatever the number of changes:
# Prefect walks a flow's return value element by element as it builds the final state
# (tens of seconds after the body at 50,000 changes: docs/performance.md). Every change is in the
# journal (`position_changes`, the SSE stream), which is where `recon sync` reads it back.
MAX_SYMBOLS = 1_000  # per list: created, updated, removed, held back, errors
MAX_DETAILS = 200


class RunReport(RunChanges):
    """A run's whole result as JSON: what `recon sync` prints; the flow returns it
    `bounded()`."""

    raw_fields: ClassVar[frozenset[str]] = frozenset({"details"})

    held_back: list[str]
    details: Details
    account_id: str
    market_open: bool | None
    flow_run_id: str | None = None
    sync_run_id: int | None = None
    event_id: int | None = None
    # True when the lists are only their first entries (the summary has the counts); in
    # the JSON only then, so an unbounded report keeps the shape it always had.
    truncated: bool = False

    def dump(self, *, exclude: set[str] | None = None) -> dict[str, Any]:
        skip = (exclude or set()) | (set() if self.truncated else {"truncated"})
        return super().dump(exclude=skip)

    def bounded(self) -> Self:
        """This report with at most MAX_SYMBOLS per list and MAX_DETAILS details."""
        lists = ("created", "updated", "removed", "held_back", "errors")
        if len(self.details) <= MAX_DETAILS and all(
            len(getattr(self, name)) <= MAX_SYMBOLS for name in lists
        ):
            return self
        update: dict[str, Any] = {name: getattr(self, name)[:MAX_SYMBOLS] for name in lists}
        return self.model_copy(
            update=update | {"details": self.details[:MAX_DETAILS], "truncated": True}
        )


class RunResult(RunReport):
    """The report plus what only the writer needs (never part of the JSON)."""

    started_at: datetime = Field(exclude=True)
    # What started the run and, for the fill listener's batches, the executions applied:
    # the journal entry carries them (`PositionUpdated`); not part of the run's JSON.
    trigger: str | None = Field(default=None, exclude=True)
    execution_ids: list[str] | None = Field(default=None, exclude=True)

    @classmethod
    def from_diff(
        cls, snapshot: Snapshot, diff: Diff, *, started_at: datetime, flow_run_id: str | None
    ) -> RunResult:
        created, updated, removed = (diff.symbols(k) for k in ("created", "updated", "removed"))
        errors = [SymbolFailure(symbol=e.symbol, error=e.error) for e in snapshot.errors]
        details: list[ChangeDetail] = [
            {
                "assetId": c.asset_id,
                "symbol": c.symbol,
                "change": c.kind,
                "fields": {n: {"before": b, "after": a} for n, (b, a) in c.fields.items()},
            }
            for c in diff.changes
        ]
        summary = Summary(
            total_changes=len(created) + len(updated) + len(removed),
            created_count=len(created),
            updated_count=len(updated),
            removed_count=len(removed),
            error_count=len(errors),
            unchanged_count=diff.unchanged,
        )
        return cls(
            created=created,
            updated=updated,
            removed=removed,
            errors=errors,
            summary=summary,
            held_back=diff.held_back,
            details=details,
            account_id=snapshot.account_id,
            market_open=snapshot.market_open,
            flow_run_id=flow_run_id,
            started_at=started_at,
        )

    @property
    def unchanged(self) -> int:
        return self.summary.unchanged_count

    def record(self) -> dict[str, Any]:
        """What `sync_runs.result` keeps: all but the per-change details, which the journal
        already holds once (the event's payload, one `position_changes` row each)."""
        return self.dump(exclude={"details"})


RefusalCheck = Literal["snapshot", "mass_removal"]
# The Prefect artifact type a dry run stores its `PreviewReport` under (the sidecar reads it).
PREVIEW_ARTIFACT_TYPE = "recon-preview"


class Refusal(Shape):
    """Why a run would write nothing: the snapshot failed a check, or the removal cap."""

    check: RefusalCheck
    reason: str


class PreviewReport(RunReport):
    """A dry run (`dry_run=true`): what a run would create, update and remove, and what it
    would refuse and why. Nothing of it was written: no `syncRunId`, no `eventId`."""

    dry_run: bool = True
    refused: Refusal | None = None
    allow_mass_removal: bool = False

    @classmethod
    def of(
        cls, report: RunReport, *, refused: Refusal | None, allow_mass_removal: bool
    ) -> PreviewReport:
        fields = {name: getattr(report, name) for name in RunReport.model_fields}
        return cls(**fields, refused=refused, allow_mass_removal=allow_mass_removal)

"""The sidecar's answers that are not the domain's own shapes (those live in recon.schemas)."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from recon.schemas.accounts import AccountsSummary
from recon.schemas.base import IsoDatetime, Shape
from recon.schemas.result import PreviewReport, RunChanges, Summary
from recon.schemas.stream import StreamState


class JobState(Shape):
    """The old job's status fields, computed from Prefect and `sync_runs`."""

    enabled: bool
    schedule: str | None
    is_running: bool
    is_pending: bool
    current_flow_run_id: str | None
    last_run_time: str | None
    last_run_duration: int | None
    last_run_state: str | None
    next_run_time: str | None
    total_runs: int
    successful_runs: int
    failed_runs: int
    skipped_runs: int
    last_error: str | None
    last_result: RunChanges | None
    last_flow_run_id: str | None
    last_flow_run_url: str | None


class JobStatus(Shape):
    position_reconciliation: JobState
    # The fill listener, from the database (issue 13): all null/zero before one ran.
    stream: StreamState = Field(default_factory=StreamState)
    # The Broker API mode (issue 14): how the last run's accounts fared; absent otherwise.
    accounts: AccountsSummary | None = None

    @model_serializer(mode="wrap")
    def _absent_accounts(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if self.accounts is None:
            data.pop("accounts", None)
        return data


class SyncAccepted(Shape):
    """202: the run was triggered (or is still running when the bounded wait ended)."""

    success: bool = True
    message: str
    flow_run_id: str
    flow_run_url: str


class SyncCompleted(Shape):
    """200: the run completed; `result` is what it changed."""

    success: bool = True
    message: str
    result: RunChanges
    flow_run_id: str
    flow_run_url: str


class RunTotals(Shape):
    """A Broker API pass's changes summed over its accounts (per-account symbols are in
    the journal and `GET /api/accounts`; symbols repeat across accounts)."""

    summary: Summary


class SyncCompletedAccounts(Shape):
    """200 in the Broker API mode: the pass's totals over every account, and how the
    accounts fared (the single-account answer is `SyncCompleted`, unchanged)."""

    success: bool = True
    message: str
    result: RunTotals
    accounts: AccountsSummary
    flow_run_id: str
    flow_run_url: str


class SyncPreviewed(Shape):
    """200 for `?dryRun=true`: what the run would do; nothing was written."""

    success: bool = True
    message: str
    preview: PreviewReport
    flow_run_id: str
    flow_run_url: str


class AuditEntryOut(Shape):
    """One audit entry: `actor` is the key's name (or `cli`), never a token."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    at: IsoDatetime
    actor: str
    action: str
    subject: str | None
    flow_run_id: str | None
    detail: dict[str, Any]


class AuditPage(Shape):
    """Newest first; `next_cursor` resumes after this page (None on the last)."""

    entries: list[AuditEntryOut]
    count: int
    next_cursor: str | None = None


class RunOut(Shape):
    """One of the deployment's recent runs, as the console's Runs panel shows it."""

    flow_run_id: str
    name: str
    state: str | None
    state_type: str | None
    start_time: str | None
    end_time: str | None
    duration_seconds: float | None
    trigger: str  # schedule, manual, fill, startup, reconnect, fallback
    who: str | None  # the key's name for a sidecar trigger
    dry_run: bool
    allow_mass_removal: bool
    total_changes: int | None  # from its record; None for a preview or a run without one
    flow_run_url: str


class RunList(Shape):
    runs: list[RunOut]


class WhoAmI(Shape):
    """The calling key: its name and capabilities (the console shows buttons by them)."""

    name: str
    capabilities: list[str]


class ErrorBody(Shape):
    """Every error answer: `error`, `message`, and for some the run they concern."""

    error: str
    message: str
    success: bool | None = None
    flow_run_id: str | None = None
    flow_run_url: str | None = None


class Health(Shape):
    status: str


class ReadinessChecks(Shape):
    database: str  # "ok" or why not
    prefect: str


class Readiness(Shape):
    status: str  # "ready" | "not ready"
    checks: ReadinessChecks

"""What a run shows outside the database: a Prefect table artifact and a Prefect event."""

from __future__ import annotations

from typing import Any

from prefect.artifacts import create_table_artifact
from prefect.events import emit_event

from recon.schemas.accounts import BrokerRunResult
from recon.schemas.events import PositionsChanged
from recon.schemas.result import RunReport, RunResult

ARTIFACT_KEY = "reconcile-changes"
ACCOUNTS_ARTIFACT_KEY = "reconcile-accounts"
EVENT_CHANGED = "recon.positions.changed"
# A run that rewrites a huge book would otherwise push megabytes into the Prefect UI.
MAX_ARTIFACT_ROWS = 500


def change_table(key: str, rows: list[dict[str, Any]], description: str) -> None:
    """A run's (or a preview's) changes as a table artifact: the first rows, or one "none"."""
    empty = {"symbol": "", "change": "none", "field": "", "before": "", "after": ""}
    table = rows[:MAX_ARTIFACT_ROWS] or [empty]
    create_table_artifact(key=key, table=table, description=description)


def publish_changes(result: RunResult) -> None:
    rows = artifact_rows(result)
    summary = result.summary
    change_table(
        ARTIFACT_KEY,
        rows,
        (
            f"{summary.created_count} created, {summary.updated_count} updated, "
            f"{summary.removed_count} removed, {summary.error_count} errors, "
            f"{summary.unchanged_count} unchanged"
            + (
                f" (first {MAX_ARTIFACT_ROWS} of {len(rows)} rows)"
                if len(rows) > MAX_ARTIFACT_ROWS and not result.truncated
                else ""
            )
            + (
                f" (the first {min(len(rows), MAX_ARTIFACT_ROWS)} rows; every change is in"
                " the journal: the SSE stream, GET /api/positions/{symbol}/history)"
                if result.truncated
                else ""
            )
        ),
    )
    if result.total_changes:
        emit_event(
            event=EVENT_CHANGED,
            resource={
                "prefect.resource.id": f"recon.account.{result.account_id}",
                "prefect.resource.name": "positions",
            },
            payload=PositionsChanged.of(result).dump(),
        )


def publish_account_changed(result: RunResult) -> None:
    """The Broker API mode's `recon.positions.changed`, one per account that changed: the
    trading mode's payload plus `accountId` (also in the resource, with its label), so an
    automation can match one account; an unchanged account emits nothing."""
    if not result.total_changes:
        return
    emit_event(
        event=EVENT_CHANGED,
        resource={
            "prefect.resource.id": f"recon.account.{result.account_id}",
            "prefect.resource.name": "positions",
            "recon.account-id": result.account_id,
        },
        payload={"accountId": result.account_id} | PositionsChanged.of(result).dump(),
    )


def artifact_rows(result: RunReport) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for change in result.details:
        for name, values in change["fields"].items():
            rows.append(
                {
                    "symbol": change["symbol"],
                    "change": change["change"],
                    "field": name,
                    "before": values["before"] or "",
                    "after": values["after"] or "",
                }
            )
    rows.extend(
        {"symbol": e.symbol, "change": "error", "field": "", "before": "", "after": e.error}
        for e in result.errors
    )
    return rows


def publish_accounts(result: BrokerRunResult) -> None:
    """A Broker API run's artifact: one row per account (failures first), the counts above."""
    counts = result.accounts
    rows = [
        {
            "account": o.account_id,
            "outcome": o.status,
            "created": o.created_count,
            "updated": o.updated_count,
            "removed": o.removed_count,
            "errors": o.error_count,
            "reason": o.error or "",
        }
        for o in result.outcomes[:MAX_ARTIFACT_ROWS]
    ]
    create_table_artifact(
        key=ACCOUNTS_ARTIFACT_KEY,
        table=rows
        or [{"account": "", "outcome": "none", "created": 0, "updated": 0, "removed": 0}],
        description=(
            f"{counts.total} accounts: {counts.applied} applied, {counts.failed} failed; "
            f"{result.created_count} created, {result.updated_count} updated, "
            f"{result.removed_count} removed, {result.error_count} errors"
            + (f" (first {len(rows)} accounts)" if counts.total > len(rows) else "")
        ),
    )

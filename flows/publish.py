"""What a run shows outside the database: a Prefect table artifact and a Prefect event."""

from __future__ import annotations

from typing import Any

from prefect.artifacts import create_table_artifact
from prefect.events import emit_event

from recon.result import RunResult

ARTIFACT_KEY = "reconcile-changes"
EVENT_CHANGED = "recon.positions.changed"
# A run that rewrites a huge book would otherwise push megabytes into the Prefect UI.
MAX_ARTIFACT_ROWS = 500


def publish_changes(result: RunResult) -> None:
    rows = _artifact_rows(result)
    summary = result.summary()
    create_table_artifact(
        key=ARTIFACT_KEY,
        table=rows[:MAX_ARTIFACT_ROWS]
        or [{"symbol": "", "change": "none", "field": "", "before": "", "after": ""}],
        description=(
            f"{summary['createdCount']} created, {summary['updatedCount']} updated, "
            f"{summary['removedCount']} removed, {summary['errorCount']} errors, "
            f"{summary['unchangedCount']} unchanged"
            + (
                f" (first {MAX_ARTIFACT_ROWS} of {len(rows)} rows)"
                if len(rows) > MAX_ARTIFACT_ROWS
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
            payload={
                "created": result.created,
                "updated": result.updated,
                "removed": result.removed,
                "summary": summary,
                "eventId": result.event_id,
                "syncRunId": result.sync_run_id,
            },
        )


def _artifact_rows(result: RunResult) -> list[dict[str, Any]]:
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
        {"symbol": e["symbol"], "change": "error", "field": "", "before": "", "after": e["error"]}
        for e in result.errors
    )
    return rows

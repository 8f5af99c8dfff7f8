"""The dry run (`dry_run=true`): the real fetch, checks and diff, then nothing written.

A preview reads the book and the broker and reports what a run would create, update,
remove and refuse (and why) as a Prefect artifact; it takes no sync lock and writes to
neither the book, `sync_runs` nor the journal (its failure hook records nothing either).
"""

from __future__ import annotations

from datetime import datetime

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactCreate
from prefect.runtime import flow_run as current_flow_run

from flows.publish import artifact_rows, change_table
from recon.diff import diff_book
from recon.errors import SnapshotRefusedError
from recon.logfmt import line
from recon.safety import check_removals, check_snapshot
from recon.schemas.result import PREVIEW_ARTIFACT_TYPE, PreviewReport, Refusal, RunResult
from recon.settings import get_settings
from recon.snapshot import Snapshot
from recon.store.book import load_book
from recon.store.database import session_factory, store_errors

PREVIEW_KEY = "reconcile-preview"


@task(name="preview-changes", cache_policy=NO_CACHE)
def preview_snapshot(
    snapshot: Snapshot, allow_mass_removal: bool, started_at: datetime
) -> PreviewReport:
    settings = get_settings()
    refused: Refusal | None = None
    try:
        check_snapshot(snapshot, settings)
    except SnapshotRefusedError as exc:
        refused = Refusal(check="snapshot", reason=str(exc))
    with (
        store_errors("loading the book"),
        session_factory(settings.resolved_database_url)() as session,
    ):
        book = load_book(session, snapshot.account_id)
    diff = diff_book(book, snapshot)
    if refused is None:
        try:
            check_removals(diff, len(book), settings, allow=allow_mass_removal)
        except SnapshotRefusedError as exc:
            refused = Refusal(check="mass_removal", reason=str(exc))
    run_id = current_flow_run.get_id()
    result = RunResult.from_diff(
        snapshot, diff, started_at=started_at, flow_run_id=str(run_id) if run_id else None
    )
    preview = PreviewReport.of(
        result.bounded(), refused=refused, allow_mass_removal=allow_mass_removal
    )
    get_run_logger().info(
        line(
            "Preview: nothing written",
            refused=refused.check if refused else None,
            **preview.summary.dump(),
        )
    )
    return preview


def publish_preview(preview: PreviewReport) -> None:
    """A table for the Prefect UI, and the preview itself for the sidecar to read back."""
    rows = artifact_rows(preview)
    rows.extend(
        {"symbol": s, "change": "held", "field": "", "before": "", "after": "record failed"}
        for s in preview.held_back
    )
    if preview.refused:
        rows.insert(
            0,
            {
                "symbol": "",
                "change": f"refused ({preview.refused.check})",
                "field": "",
                "before": "",
                "after": preview.refused.reason,
            },
        )
    summary = preview.summary
    change_table(
        PREVIEW_KEY,
        rows,
        (
            f"Preview, nothing written: would create {summary.created_count}, update "
            f"{summary.updated_count}, remove {summary.removed_count}; "
            f"{summary.error_count} errors"
            + (f"; REFUSED: {preview.refused.reason}" if preview.refused else "")
        ),
    )
    run_id = current_flow_run.get_id()
    with get_client(sync_client=True) as client:
        client.create_artifact(
            ArtifactCreate(
                type=PREVIEW_ARTIFACT_TYPE,
                description="The preview as the sidecar answers it (JSON)",
                data=preview.dump(),
                flow_run_id=run_id,
            )
        )

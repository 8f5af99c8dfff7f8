"""Applying one batch: lock, read the assets, diff, check, persist — the full run's own code."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy.orm import Session

from recon.diff import diff_positions
from recon.fills.batch import Batch
from recon.fills.book import count_positions, load_assets
from recon.fills.lock import wait_for_sync_lock
from recon.fills.read import PositionReader, read_assets
from recon.position import RecordError, parse_record, positions_frame
from recon.safety import check_removals
from recon.schemas.result import RunResult
from recon.settings import Settings
from recon.snapshot import AccountSummary, Snapshot, SymbolError
from recon.store.database import engine_for, session_factory, store_errors
from recon.store.writer import apply_reconciliation

TRIGGER = "fill"


@dataclass
class BatchOutcome:
    result: RunResult
    unsettled: list[str]  # assets only a full run can settle (see `recon.fills.read`)
    timings: dict[str, float] = field(default_factory=dict)  # seconds, per step
    started: float = 0.0  # time.monotonic() when the batch began (lock wait included)
    committed: float = 0.0  # time.monotonic() right after the journal entry committed


def apply_batch(
    settings: Settings,
    broker: PositionReader,
    account_id: str,
    batch: Batch,
    *,
    flow_run_id: str | None,
    per_account: bool = False,
    also: Callable[[Session], None] | None = None,
) -> BatchOutcome:
    """`per_account`: under the account's lock (the Broker API mode), not the sync lock;
    `also`: rows written in the batch's transaction (the event stream's cursor)."""
    url = settings.resolved_database_url
    sessions = session_factory(url)
    timings: dict[str, float] = {}
    began = time.monotonic()
    with contextlib.ExitStack() as held:
        with store_errors("taking the sync lock"):
            waited = held.enter_context(
                wait_for_sync_lock(
                    engine_for(url),
                    settings.fill_lock_wait_seconds,
                    account_id=account_id if per_account else None,
                )
            )
        timings["lock"] = waited
        # As in full runs: taken once the lock is held, so run intervals never overlap.
        started_at = datetime.now(UTC)
        clock = time.monotonic()
        reads = read_assets(broker, batch)
        timings["read"] = time.monotonic() - clock
        clock = time.monotonic()
        snapshot = _snapshot(account_id, reads.records)
        settled = [a for a in batch.assets if a not in reads.unsettled]
        with store_errors("loading the book"), sessions() as session:
            book = load_assets(session, account_id, settled)
            book_size = count_positions(session, account_id)
        diff = diff_positions(
            book,
            snapshot.positions,
            protected_ids=[e.asset_id for e in snapshot.errors if e.asset_id],
        )
        check_removals(diff, book_size, settings, allow=False)
        result = RunResult.from_diff(
            snapshot, diff, started_at=started_at, flow_run_id=flow_run_id
        ).model_copy(update={"trigger": TRIGGER, "execution_ids": batch.execution_ids})
        with store_errors("persisting the fills"):
            final = apply_reconciliation(sessions, diff, result, also=also)
        committed = time.monotonic()
        timings["persist"] = committed - clock
    return BatchOutcome(final, reads.unsettled, timings, began, committed)


def _snapshot(account_id: str, records: list[dict[str, object]]) -> Snapshot:
    rows, errors = [], []
    for record in records:
        try:
            rows.append(parse_record(record, account_id))
        except RecordError as exc:
            symbol = record.get("symbol")
            asset_id = record.get("asset_id")
            errors.append(
                SymbolError(
                    symbol=symbol if isinstance(symbol, str) and symbol else "?",
                    error=str(exc),
                    asset_id=asset_id if isinstance(asset_id, str) else None,
                )
            )
    return Snapshot(
        account=AccountSummary(account_id, None, None),
        positions=positions_frame(rows),
        errors=errors,
        listed_count=len(records),
        listed_long_value=Decimal(0),
    )

"""The `reconcile-fills` flow: one coalesced batch of fills, run in the listener's own process.

A deployment run costs a new Python process (2.5-5.5 s before it reads anything); this flow
is called directly by the listener, so Prefect still tracks it (flow run, task run, logs,
artifact) without that start-up. It is async: Prefect joins a sync flow's heartbeat thread
on exit, which costs up to a second per call.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from prefect import flow, get_run_logger, tags
from prefect.artifacts import acreate_table_artifact
from prefect.events import emit_event
from sqlalchemy.orm import Session

from recon.broker import AlpacaTradingBroker
from recon.fills import Batch
from recon.fills.apply import BatchOutcome, apply_batch
from recon.fills.read import PositionReader
from recon.logfmt import line
from recon.settings import Settings, get_settings

FLOW_NAME = "reconcile-fills"
TAG = "fill"
ARTIFACT_KEY = "reconcile-fills"
EVENT_APPLIED = "recon.fills.applied"
MAX_ARTIFACT_ROWS = 200

logger = logging.getLogger("recon.fills")


_BROKERS: dict[int, AlpacaTradingBroker] = {}


def _broker(settings: Settings) -> AlpacaTradingBroker:
    # One client (and HTTP connection pool) for the life of the listener.
    key = id(settings)
    if key not in _BROKERS:
        _BROKERS[key] = AlpacaTradingBroker(settings)
    return _BROKERS[key]


# Batches whose work has started, by id, until their flow run picks up the outcome.
_PENDING: dict[str, concurrent.futures.Future[BatchOutcome]] = {}
# One thread applies batches (one at a time: the listener awaits each before the next).
_APPLY = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="fill-apply")


class _RunLoop:
    """The batches' flow runs, on an event loop of their own in a background thread.

    Each run's bookkeeping (Prefect API calls, logs, event, artifact) would otherwise share
    the loop that reads the websocket, and delay the next fill's receipt behind it.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def submit(self, job: Coroutine[Any, Any, None]) -> concurrent.futures.Future[None]:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(
                    target=self._loop.run_forever, name="fill-runs", daemon=True
                ).start()
        return asyncio.run_coroutine_threadsafe(job, self._loop)


_RUNS = _RunLoop()


def start_batch(
    batch: Batch,
    account_id: str,
    *,
    reader: PositionReader | None = None,
    per_account: bool = False,
    also: Callable[[Session], None] | None = None,
) -> tuple[asyncio.Future[BatchOutcome], concurrent.futures.Future[None]]:
    """Apply `batch` now, and report it as a `reconcile-fills` run in this process.

    Returns the work (done when the journal entry is committed) and the run (done when
    Prefect has it all). The work starts at once, beside the run's start-up, not after it:
    starting a run takes three Prefect API round trips (create, Pending, Running;
    0.1-0.5 s measured), which would otherwise sit on every fill's path to the book, and
    the next batch need not wait for this one's logs, event and artifact. The run awaits
    the work, so its state is the work's outcome. If Prefect cannot be reached the fills
    still land; only the run is missing (logged).

    The Broker API mode passes the account's `reader`, `per_account` (its lock, not the
    sync lock) and `also` (the event stream's cursor, in the batch's transaction).
    """
    settings = get_settings()
    batch_id = uuid.uuid4().hex
    work = _APPLY.submit(
        apply_batch,
        settings,
        reader or _broker(settings),
        account_id,
        batch,
        flow_run_id=None,
        per_account=per_account,
        also=also,
    )
    _PENDING[batch_id] = work
    run = _RUNS.submit(_run(batch_id, account_id, batch))
    return asyncio.wrap_future(work), run


async def _run(batch_id: str, account_id: str, batch: Batch) -> None:
    try:
        with tags(TAG):
            await reconcile_fills(batch_id, account_id, batch.execution_ids, list(batch.assets))
    except Exception as exc:
        started = _PENDING.pop(batch_id, None) is None
        logger.warning(
            line(
                "reconcile-fills run failed" if started else "reconcile-fills run did not start",
                error=f"{type(exc).__name__}: {exc}",
            )
        )


@flow(name=FLOW_NAME, persist_result=False, validate_parameters=False)
async def reconcile_fills(
    batch_id: str, account_id: str, execution_ids: list[str], asset_ids: list[str]
) -> dict[str, Any]:
    """One batch of fills: its assets re-read under the sync lock, journaled as `fill`."""
    logger = get_run_logger()
    outcome = await asyncio.wrap_future(_PENDING.pop(batch_id))
    result = outcome.result
    summary = _summary(outcome, len(execution_ids), len(asset_ids))
    logger.info(line("Fills applied", **summary, **_millis(outcome.timings)))
    if outcome.unsettled:
        logger.warning(
            line("Position missing although the fill left it open", assets=outcome.unsettled)
        )
    emit_event(
        event=EVENT_APPLIED,
        resource={
            "prefect.resource.id": f"recon.account.{account_id}",
            "prefect.resource.name": "positions",
        },
        payload={
            "executionIds": execution_ids,
            "assetIds": asset_ids,
            "created": result.created,
            "updated": result.updated,
            "removed": result.removed,
            "unsettled": outcome.unsettled,
            "eventId": result.event_id,
            "syncRunId": result.sync_run_id,
            "timings": _millis(outcome.timings),
        },
    )
    await acreate_table_artifact(
        key=ARTIFACT_KEY,
        table=_rows(outcome)[:MAX_ARTIFACT_ROWS],
        description=f"{len(execution_ids)} fills on {len(asset_ids)} assets",
    )
    return {"summary": summary, "unsettled": outcome.unsettled}


def _summary(outcome: BatchOutcome, fills: int, assets: int) -> dict[str, Any]:
    return {
        **outcome.result.summary.dump(),
        "fills": fills,
        "assets": assets,
        "unsettled": len(outcome.unsettled),
        "eventId": outcome.result.event_id,
    }


def _millis(timings: dict[str, float]) -> dict[str, float]:
    return {f"{k}Ms": round(v * 1000, 1) for k, v in timings.items()}


def _rows(outcome: BatchOutcome) -> list[dict[str, Any]]:
    rows = []
    for change in outcome.result.details:
        qty = change["fields"].get("qty") or {"before": None, "after": None}
        rows.append(
            {
                "symbol": change["symbol"],
                "change": change["change"],
                "qty before": qty.get("before") or "",
                "qty after": qty.get("after") or "",
            }
        )
    rows += [
        {"symbol": a, "change": "unsettled", "qty before": "", "qty after": ""}
        for a in outcome.unsettled
    ]
    return rows or [{"symbol": "", "change": "none", "qty before": "", "qty after": ""}]

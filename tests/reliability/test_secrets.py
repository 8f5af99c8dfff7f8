"""No secret anywhere: distinctive Alpaca keys and API tokens, then grep everything produced."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.events.filters import EventFilter, EventOccurredFilter
from sqlalchemy import MetaData, select

from recon.store.database import engine_for
from simulator.server import SimulatorConfig, SimulatorServer
from tests.sim import Sim
from tests.support.databases import DATABASES, app_database
from tests.support.prefect import default_api
from tests.support.stack import served_stack
from tests.support.wait import wait_until

KEY_ID = "PKZZTOPSECRETKEYID42"
SECRET = "sk-live-XYZZY-do-not-leak-0b1c2d3e4f"
# The app database's password (PostgreSQL: trust auth ignores it, so any value connects).
DB_PASSWORD = "pg-pw-QUUX-never-print-5a6b7c"


@pytest.fixture(scope="module", params=DATABASES)
def secret_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("secrets")
    config = SimulatorConfig(api_key=KEY_ID, secret_key=SECRET, seed=11)
    with (
        app_database(request.param, root) as bare,
        SimulatorServer(config) as simulator,
        # The scheduler is off (`served_stack`): a cron run falling due while the test
        # triggers would answer it 409.
        served_stack(
            root,
            db=request.param,
            url=(url := bare.replace("://postgres@", f"://postgres:{DB_PASSWORD}@", 1)),
            simulator=simulator,
            settings={"RECON_TRIGGER_WAIT_SECONDS": "60"},
        ) as stack,
        default_api(stack.prefect_url),
    ):
        yield {
            "db": request.param,
            "root": root,
            "url": url,
            "base": stack.base,
            "token": stack.token,
            "sim": Sim.of(simulator),
        }


def test_no_log_parameter_artifact_event_error_or_row_holds_a_secret(
    secret_stack: dict[str, Any],
) -> None:
    token, base, sim = secret_stack["token"], secret_stack["base"], secret_stack["sim"]
    answers: list[str] = []
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=90) as c:
        succeeded = c.post("/api/admin/jobs/sync-positions")
        assert succeeded.status_code == 200, succeeded.text
        answers.append(succeeded.text)
        sim.fault("status", status=401, path="/v2/positions")
        failed = c.post("/api/admin/jobs/sync-positions")
        assert failed.status_code == 500
        answers.append(failed.text)
        sim.clear_fault()
        answers.append(c.get("/api/admin/jobs/status").text)
        answers.append(c.get("/api/positions").text)
    with httpx.Client(base_url=base, timeout=10) as anonymous:
        answers.append(anonymous.get("/api/admin/jobs/status", params={"access_token": token}).text)
        answers.append(
            anonymous.get("/api/positions", headers={"Authorization": "Bearer rk_x"}).text
        )
        with anonymous.stream(
            "GET", "/api/stream/events", params={"access_token": token, "lastEventId": "0"}
        ) as stream:
            answers.append(next(stream.iter_text()))

    # Logs reach the API in batches: the failed run's error must be in before the scan.
    failed_run = failed.json()["flowRunId"]
    wait_until(lambda: _logs_of(failed_run), 30, "the failed run's logs")
    produced = {"answers": "\n".join(answers), **_prefect_records(), **_files(secret_stack["root"])}
    produced["app database"] = _dump(secret_stack["url"])
    assert "position:updated" in produced["app database"]  # the scan sees real content
    assert "not authorized" in produced["answers"]
    for name, text in produced.items():
        for secret in (SECRET, KEY_ID, token, DB_PASSWORD):
            assert secret not in text, f"a secret appears in {name}"
    print(
        f"\n[secrets] db={secret_stack['db']} scanned {len(produced)} sources "
        f"({sum(len(t) for t in produced.values()):,} characters: answers, run parameters and "
        f"states, logs, artifacts, events, process logs, every table) for 4 secrets: found 0"
    )


# Small pages: the scan must page through everything, and the paging is exercised.
PAGE = 3


def _all_pages(read: Callable[[int], list[Any]]) -> tuple[list[Any], int]:
    """Every record `read(offset)` yields, page by page, and how many pages it took."""
    records: list[Any] = []
    pages = 0
    while True:
        page = read(len(records))
        pages += 1
        records += page
        if len(page) < PAGE:
            return records, pages


def _prefect_records() -> dict[str, str]:
    with get_client(sync_client=True) as client:
        runs, _ = _all_pages(lambda at: client.read_flow_runs(limit=PAGE, offset=at))
        assert len(runs) == client.count_flow_runs() >= 2
        # The failed run's process may still be flushing its last logs: paging by offset until
        # a short page may then show a log twice but never skips one, so every log there
        # before paging began is among the distinct ones read.
        present = {log.id for log in client.read_logs(limit=200)}
        logs, log_pages = _all_pages(lambda at: client.read_logs(limit=PAGE, offset=at))
        assert present <= {log.id for log in logs} and log_pages > 1
        artifacts, _ = _all_pages(lambda at: client.read_artifacts(limit=PAGE, offset=at))
        # The successful run made its reconcile-changes table.
        assert any(a.key == "reconcile-changes" for a in artifacts), artifacts
        events, reads, event_pages = _all_events(client)
    print(
        f"\n[secrets] scanned {len(runs)} flow runs, {len(logs)} logs ({log_pages} pages), "
        f"{len(artifacts)} artifacts, {len(events)} events ({event_pages} pages, "
        f"{reads} full reads)"
    )
    return {
        "flow run parameters and states": json.dumps(
            [[r.parameters, r.state.message if r.state else None] for r in runs]
        ),
        "flow run logs": "\n".join(log.message for log in logs),
        "artifacts": json.dumps([[a.data, a.description] for a in artifacts], default=str),
        "events": json.dumps([e.model_dump(mode="json") for e in events]),
    }


def _all_events(client: Any) -> tuple[list[Any], int, int]:
    """Every event up to now, the number of full reads it took and the last read's pages.

    Runs flush their events asynchronously, so one may land while we page. Prefect's page
    token keeps the count of the first page: an event landing among those already read
    shifts the rest by one, and the oldest is then never served. So read again until one
    read holds as many distinct events as a count taken after it.
    """
    window = EventFilter(occurred=EventOccurredFilter(until=datetime.now(UTC)))
    for attempt in range(1, 21):
        page = client.read_events(filter=window, limit=PAGE)
        events, pages = list(page.events), 1
        while page.next_page is not None:
            page = client.read_events_page(str(page.next_page))
            events += page.events
            pages += 1
        distinct = list({e.id: e for e in events}.values())
        if len(distinct) == client.read_events(filter=window, limit=1).total:
            assert pages > 1, pages
            return distinct, attempt, pages
    raise AssertionError("events kept arriving: no read held them all")


def _logs_of(flow_run_id: str) -> list[Any]:
    with get_client(sync_client=True) as client:
        flt = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(flow_run_id)]))
        return client.read_logs(log_filter=flt)


def _files(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): path.read_text(errors="replace")
        for path in root.rglob("*.log")
    }


def _dump(url: str) -> str:
    engine = engine_for(url)
    metadata = MetaData()
    metadata.reflect(engine)
    rows: list[str] = []
    with engine.connect() as connection:
        for table in metadata.sorted_tables:
            rows += [repr(tuple(row)) for row in connection.execute(select(table))]
    return "\n".join(rows)

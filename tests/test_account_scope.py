"""Account-scoped API keys (`recon keys create --account`) and the per-account reads:
`/api/positions?accountId=`, history, `GET /api/accounts`, and the stream's `?accountId=`
filter. Routes in process; the stream over a real uvicorn server and SSE client; real
SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx_sse import EventSource

from api.errors import install_error_handlers
from api.routes import accounts, positions, tickets
from api.schemas import JobState, JobStatus
from recon.diff import PositionChange
from recon.errors import ApiKeyError
from recon.keys import create_key
from recon.schemas.accounts import AccountsSummary
from recon.settings import get_settings
from recon.store.accounts import run_accounts
from recon.store.database import session_factory
from recon.store.journal import POSITION_UPDATED, SYSTEM_ERROR, append_event
from recon.store.models import SyncRun
from tests.factories import book_rows
from tests.support.asgi import auth, make_key, open_stream, serve, stream_app

BOOK = {"acct-a": ["AAPL", "MSFT"], "acct-b": ["AAPL", "TSLA", "NVDA"]}


def seed(url: str) -> None:
    """Both accounts' books, a run row each (b's last one failed), and history rows."""
    now = datetime.now(UTC)
    with session_factory(url).begin() as session:
        session.add_all(book_rows(BOOK, "2.5", now))
        for account in BOOK:
            session.add(
                SyncRun(
                    flow_run_id="flow-1",
                    account_id=account,
                    status="completed",
                    started_at=now - timedelta(minutes=5),
                    finished_at=now - timedelta(minutes=5),
                )
            )
        session.add(
            SyncRun(
                flow_run_id="flow-2",
                account_id="acct-b",
                status="failed",
                started_at=now,
                finished_at=now,
                reason="positions: broker answered HTTP 500",
            )
        )
    for account in BOOK:
        journal(url, account)


def journal(url: str, account: str | None, type: str = POSITION_UPDATED) -> int:
    with session_factory(url).begin() as session:
        changes = [
            PositionChange(
                kind="created",
                asset_id=f"asset-{account}-aapl",
                symbol="AAPL",
                fields={"qty": (None, "2.5")},
            )
        ]
        return append_event(
            session,
            type=type,
            payload={"accountId": account, "created": ["AAPL"]},
            account_id=account,
            flow_run_id="flow-1",
            changes=changes if account is not None and type == POSITION_UPDATED else (),
        )


@pytest.fixture
def app(env: pytest.MonkeyPatch, database_url: str) -> FastAPI:
    env.setenv("RECON_DATABASE_URL", database_url)
    get_settings.cache_clear()
    seed(database_url)
    app = FastAPI()
    install_error_handlers(app)
    for module in (accounts, positions, tickets):
        app.include_router(module.router)
    return app


def scoped(url: str, capabilities: list[str], accounts: list[str], name: str = "user-a") -> str:
    with session_factory(url).begin() as session:
        return create_key(session, name, capabilities, accounts=accounts)


def client(app: FastAPI, token: str) -> TestClient:
    return TestClient(app, headers=auth(token))


def accounts_of(body: dict[str, Any]) -> set[str]:
    return {p["accountId"] for p in body["positions"]}


def test_a_scoped_key_sees_only_its_accounts_positions(app: FastAPI, database_url: str) -> None:
    user = client(app, scoped(database_url, ["admin:read"], ["acct-a"]))
    admin = client(app, make_key(database_url, ["admin:read"]))
    assert accounts_of(user.get("/api/positions").json()) == {"acct-a"}
    assert accounts_of(user.get("/api/positions?accountId=acct-a").json()) == {"acct-a"}
    refused = user.get("/api/positions?accountId=acct-b")
    assert refused.status_code == 403
    assert refused.json()["message"] == "this API key may not read that account"
    assert accounts_of(admin.get("/api/positions").json()) == {"acct-a", "acct-b"}
    assert accounts_of(admin.get("/api/positions?accountId=acct-b").json()) == {"acct-b"}
    assert admin.get("/api/positions?accountId=nobody").json()["positions"] == []


def test_a_scoped_key_sees_only_its_accounts_history(app: FastAPI, database_url: str) -> None:
    user = client(app, scoped(database_url, ["admin:read"], ["acct-a"]))
    history = user.get("/api/positions/AAPL/history").json()["history"]
    assert {h["accountId"] for h in history} == {"acct-a"}
    assert user.get("/api/positions/AAPL/history?accountId=acct-b").status_code == 403
    admin = client(app, make_key(database_url, ["admin:read"]))
    everyone = admin.get("/api/positions/AAPL/history").json()["history"]
    assert {h["accountId"] for h in everyone} == {"acct-a", "acct-b"}


def test_accounts_list_their_books_runs_and_errors(app: FastAPI, database_url: str) -> None:
    admin = client(app, make_key(database_url, ["admin:read"]))
    body = admin.get("/api/accounts").json()
    assert body["count"] == 2 and body["nextAfter"] is None
    a, b = body["accounts"]
    assert (a["accountId"], a["positions"], a["lastError"]) == ("acct-a", 2, None)
    assert a["lastAppliedFlowRunId"] == "flow-1"
    assert (b["accountId"], b["positions"]) == ("acct-b", 3)
    assert b["lastError"] == "positions: broker answered HTTP 500"
    page = admin.get("/api/accounts?limit=1").json()
    assert [x["accountId"] for x in page["accounts"]] == ["acct-a"]
    assert page["nextAfter"] == "acct-a"
    rest = admin.get("/api/accounts", params={"after": "acct-a"}).json()
    assert [x["accountId"] for x in rest["accounts"]] == ["acct-b"]
    user = client(app, scoped(database_url, ["admin:read"], ["acct-a"]))
    assert [x["accountId"] for x in user.get("/api/accounts").json()["accounts"]] == ["acct-a"]


def test_a_key_scope_needs_an_account(database_url: str) -> None:
    with pytest.raises(ApiKeyError, match="at least one account"):
        scoped(database_url, ["events:read"], [" "])


def _ids(source: EventSource, count: int) -> list[tuple[str, str]]:
    seen = []
    for event in source.iter_sse():
        seen.append((event.event, event.id))
        if len(seen) == count:
            break
    return seen


@pytest.fixture
def served(env: pytest.MonkeyPatch, database_url: str) -> Iterator[str]:
    env.setenv("RECON_DATABASE_URL", database_url)
    get_settings.cache_clear()
    with serve(stream_app(database_url, poll_interval=0.05, ping_interval=1.0)) as server:
        yield server.base_url


def test_the_stream_sends_a_scoped_key_only_its_accounts_events(
    served: str, database_url: str
) -> None:
    token = scoped(database_url, ["events:read"], ["acct-a"])
    # Replayed from the journal: b's row and a whole run's error are skipped, a's is sent.
    b_row = journal(database_url, "acct-b")
    run_error = journal(database_url, None, SYSTEM_ERROR)
    a_row = journal(database_url, "acct-a")
    with open_stream(served, auth(token, last_id=b_row - 1)) as source:
        assert _ids(source, 1) == [(POSITION_UPDATED, str(a_row))]
    assert run_error > b_row
    # Live: the same, for rows written while the stream is open.
    with open_stream(served, auth(token, last_id=a_row)) as source:
        journal(database_url, "acct-b")
        journal(database_url, None, SYSTEM_ERROR)
        b_error = journal(database_url, "acct-b", SYSTEM_ERROR)
        a_error = journal(database_url, "acct-a", SYSTEM_ERROR)
        assert _ids(source, 1) == [(SYSTEM_ERROR, str(a_error))]
    assert a_error > b_error


def test_the_streams_account_filter(served: str, database_url: str) -> None:
    admin = make_key(database_url, ["events:read"], name="admin")
    first = journal(database_url, "acct-a")
    b_row = journal(database_url, "acct-b")
    with open_stream(served, auth(admin, last_id=first - 1), {"accountId": "acct-b"}) as source:
        assert _ids(source, 1) == [(POSITION_UPDATED, str(b_row))]
    token = scoped(database_url, ["events:read"], ["acct-a"])
    with open_stream(served, auth(token), {"accountId": "acct-b"}) as source:
        assert source.response.status_code == 403


def test_a_runs_accounts_summary(database_url: str) -> None:
    seed(database_url)
    with session_factory(database_url)() as session:
        first = run_accounts(session, "flow-1")
        second = run_accounts(session, "flow-2")
        assert run_accounts(session, "flow-none") is None
    assert first is not None and second is not None
    assert (first.total, first.applied, first.failed) == (2, 2, 0)
    assert second.dump() == {
        "total": 1,
        "applied": 0,
        "failed": 1,
        "failedAccounts": [{"accountId": "acct-b", "error": "positions: broker answered HTTP 500"}],
    }


def test_status_has_accounts_only_in_the_broker_mode() -> None:
    counts = ("total_runs", "successful_runs", "failed_runs", "skipped_runs")
    flags = ("enabled", "is_running", "is_pending")
    state = JobState.model_validate(
        {name: None for name in JobState.model_fields}
        | dict.fromkeys(flags, False)
        | dict.fromkeys(counts, 0)
    )
    trading = JobStatus(position_reconciliation=state)
    assert "accounts" not in trading.model_dump(mode="json", by_alias=True)
    summary = AccountsSummary(total=3, applied=3, failed=0)
    broker = JobStatus(position_reconciliation=state, accounts=summary).dump()
    assert broker["accounts"] == {"total": 3, "applied": 3, "failed": 0, "failedAccounts": []}


def test_a_scoped_keys_ticket_streams_only_its_accounts(
    served: str, app: FastAPI, database_url: str
) -> None:
    token = scoped(database_url, ["events:read"], ["acct-a"], name="ticket-user")
    ticket = client(app, token).post("/api/stream/tickets").json()["ticket"]
    b_row = journal(database_url, "acct-b")
    a_row = journal(database_url, "acct-a")
    params = {"ticket": ticket, "lastEventId": str(b_row - 1)}
    with open_stream(served, {}, params) as source:
        assert _ids(source, 1) == [(POSITION_UPDATED, str(a_row))]

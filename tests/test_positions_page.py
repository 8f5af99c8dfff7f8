"""`GET /api/positions` a page at a time: limit, cursor, the settings that bound them, on
SQLite and PostgreSQL (the positions route over the app's own dependencies, in process)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.errors import install_error_handlers
from api.positions_page import encode_cursor
from api.routes import positions
from recon.settings import get_settings
from recon.store.database import session_factory
from tests.factories import book_rows
from tests.support.asgi import auth, make_key

# Two accounts; symbols chosen so account order, symbol order and insertion order differ.
BOOK = {"acct-b": ["MSFT", "AAPL", "TSLA"], "acct-a": ["ZM", "GOOGL", "AMZN", "META"]}
ORDER = [("acct-a", s) for s in sorted(BOOK["acct-a"])] + [
    ("acct-b", s) for s in sorted(BOOK["acct-b"])
]


@pytest.fixture
def client(env: pytest.MonkeyPatch, database_url: str) -> Iterator[TestClient]:
    env.setenv("RECON_DATABASE_URL", database_url)
    env.setenv("RECON_POSITIONS_LIMIT_DEFAULT", "4")
    env.setenv("RECON_POSITIONS_LIMIT_MAX", "5")
    get_settings.cache_clear()
    now = datetime.now(UTC)
    with session_factory(database_url).begin() as session:
        session.add_all(book_rows(BOOK, "1.5", now))
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(positions.router)
    headers = auth(make_key(database_url, ["admin:read"]))
    with TestClient(app, headers=headers) as test_client:
        yield test_client


def foreign(text: str) -> str:
    """A cursor built by hand rather than returned."""
    return base64.urlsafe_b64encode(text.encode()).decode()


def pages(client: TestClient, **params: Any) -> list[dict[str, Any]]:
    answers, cursor = [], None
    while True:
        answer = client.get(
            "/api/positions", params=params | ({"cursor": cursor} if cursor else {})
        )
        assert answer.status_code == 200, answer.text
        answers.append(answer.json())
        cursor = answer.json()["nextCursor"]
        if cursor is None:
            return answers


def keys(page: dict[str, Any]) -> list[tuple[str, str]]:
    return [(p["accountId"], p["symbol"]) for p in page["positions"]]


def test_without_parameters_the_answer_keeps_its_shape_and_is_bounded(client: TestClient) -> None:
    body = client.get("/api/positions").json()
    assert set(body) == {"positions", "count", "nextCursor"}
    assert body["count"] == len(body["positions"]) == 4  # RECON_POSITIONS_LIMIT_DEFAULT
    assert keys(body) == ORDER[:4]
    assert body["positions"][0]["qty"] == "1.5"  # still exact strings
    assert isinstance(body["nextCursor"], str)


@pytest.mark.parametrize("limit", [1, 2, 3, 5])
def test_following_the_cursor_reads_the_book_once_in_order(client: TestClient, limit: int) -> None:
    answers = pages(client, limit=limit)
    assert [p["count"] for p in answers] == [
        min(limit, len(ORDER) - start) for start in range(0, len(ORDER), limit)
    ]
    assert [k for page in answers for k in keys(page)] == ORDER


def test_the_cursor_works_within_one_account(client: TestClient) -> None:
    answers = pages(client, accountId="acct-b", limit=2)
    assert [keys(page) for page in answers] == [
        [("acct-b", "AAPL"), ("acct-b", "MSFT")],
        [("acct-b", "TSLA")],
    ]


def test_a_position_written_between_pages_is_not_lost(
    client: TestClient, database_url: str
) -> None:
    first = client.get("/api/positions", params={"limit": 3}).json()
    now = datetime.now(UTC)
    with session_factory(database_url).begin() as session:  # sorts after the first page
        session.add_all(book_rows({"acct-a": ["NVDA"]}, "10", now))
    rest = pages(client, limit=3, cursor=first["nextCursor"])
    seen = keys(first) + [k for page in rest for k in keys(page)]
    assert seen == sorted([*ORDER, ("acct-a", "NVDA")])


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({"limit": 6}, 400, "limit must be at most 5"),
        ({"limit": 0}, 422, "the request is not valid"),
        ({"cursor": "not-a-cursor"}, 400, "cursor is not one this API returned"),
        ({"cursor": encode_cursor(("a", "b", "c"))[:-2] + "!!"}, 400, "cursor is not one"),
        ({"cursor": foreign('["a", "b"]')}, 400, "cursor is not one"),
        ({"cursor": foreign('["a", "\\ud800", "c"]')}, 400, "cursor is not one"),
        ({"cursor": foreign('["a", "\\u0000", "c"]')}, 400, "cursor is not one"),
        ({"cursor": foreign('["a", 1, "c"]')}, 400, "cursor is not one"),
    ],
)
def test_an_out_of_bounds_limit_or_a_foreign_cursor_is_refused(
    client: TestClient, params: dict[str, Any], status: int, message: str
) -> None:
    answer = client.get("/api/positions", params=params)
    assert answer.status_code == status
    assert answer.json()["message"].startswith(message)

"""Scenario 8: bad requests. Schemathesis against the sidecar's own OpenAPI, with an admin
key, a read-only key and none: no 5xx, every error a JSON body. Malformed tokens, oversized
headers and oversized query values get a 4xx.

Against the sidecar app in this process (`tests.support.sidecar`, real HTTP through
uvicorn): a contract test, it needs no served stack. Triggered runs stay Scheduled.

Driven by hand (operation strategies under Hypothesis' `@given`) because schemathesis'
`from_fixture` loader breaks on pytest 9 (it reads the removed `Function._nodeid`).
"""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from recon.keys import create_key
from recon.store.database import session_factory
from tests.support.sidecar import Sidecar

WAITING = {"true", "1", "yes", "on"}
EXAMPLES = {"admin": 30, "none": 15, "reader": 10}
SENT: Counter[str] = Counter()
ROUTES = [
    ("GET", "/api/admin/jobs/status"),
    ("POST", "/api/admin/jobs/sync-positions"),
    ("GET", "/api/positions"),
    ("GET", "/api/positions/AAPL/history"),
    ("GET", "/api/stream/events"),
]


def _token(sidecar: Sidecar, key: str) -> str | None:
    if key == "none":
        return None
    if key == "admin":
        return sidecar.token
    with session_factory(sidecar.url).begin() as session:
        return create_key(session, f"reader-{uuid.uuid4().hex[:8]}", ["admin:read"])


def _check(case: Any, base: str, token: str | None) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    query = dict(case.query or {})
    if case.method == "POST" and str(query.get("wait", "true")).lower() in WAITING:
        # A waiting trigger holds the request for a whole run; the fuzzer wants answers.
        case.query = query | {"wait": "false"}
    response = case.call(base_url=base, headers=headers, timeout=60)
    SENT[f"{response.status_code // 100}xx"] += 1
    where = (case.method, case.path, case.query, response.status_code, response.text[:300])
    assert response.status_code < 500, where
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body, dict) and body.get("error") and body.get("message"), where


@pytest.mark.usefixtures("no_open_runs")
@pytest.mark.parametrize("key", list(EXAMPLES))
def test_fuzzed_requests_never_get_a_server_error(sidecar: Sidecar, key: str) -> None:
    schema = schemathesis.openapi.from_url(f"{sidecar.base}/openapi.json")
    # The stream never ends; its bad inputs are covered below and in tests/test_stream.py.
    schema = schema.exclude(path="/api/stream/events")
    token = _token(sidecar, key)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 6
    before = SENT.copy()
    for operation in operations:

        @settings(
            max_examples=EXAMPLES[key],
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def fuzz(case: Any) -> None:
            _check(case, sidecar.base, token)

        fuzz()
    print(
        f"\n[bad requests] db={sidecar.db} key={key} operations={len(operations)} "
        f"requests={(SENT - before).total()} answers={dict(SENT - before)} 5xx=0 "
        "non-JSON errors=0"
    )


def test_malformed_tokens_and_oversized_input_get_a_4xx_json(sidecar: Sidecar) -> None:
    malformed = [
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer rk_a b"},
        {"Authorization": "Basic Zm9vOmJhcg=="},
        {"Authorization": "bearer rk_\u00e9t\u00e9".encode()},  # not ASCII
        {"Authorization": "Bearer rk_" + "A" * 10_000},
        {"Authorization": f"Bearer {sidecar.token}x"},
    ]
    answers: Counter[int] = Counter()
    with httpx.Client(base_url=sidecar.base, timeout=10) as client:
        for method, path in ROUTES:
            for headers in malformed:
                answers[_status(client, method, path, headers=headers)] += 1
            # Oversized query values: a 60 kB token, an id of 1,000 digits.
            oversized = {"access_token": "x" * 60_000, "lastEventId": "1" * 1000}
            answers[_status(client, method, path, params=oversized)] += 1
        # A resume point that is not a journal id (the only header the stream reads).
        valid = {"Authorization": f"Bearer {sidecar.token}"}
        for last in ("9" * 40, "-1", "1e3"):
            headers = valid | {"Last-Event-ID": last}
            answers[_status(client, "GET", "/api/stream/events", headers=headers)] += 1
        # NUL in a query value or a path (PostgreSQL text cannot hold it; found by the fuzzer).
        answers[
            _status(client, "GET", "/api/positions", params={"accountId": "\x00"}, headers=valid)
        ] += 1
        answers[_status(client, "GET", "/api/positions/A%00B/history", headers=valid)] += 1
        # A header block far past what the server accepts.
        huge = {"X-Padding": "p" * 200_000, "Authorization": f"Bearer {sidecar.token}"}
        answers[_status(client, "GET", "/api/positions", headers=huge)] += 1
    assert sum(answers.values()) >= 10 and all(400 <= code < 500 for code in answers), answers
    print(
        f"\n[bad requests] db={sidecar.db} malformed tokens, oversized headers and query "
        f"values: {sum(answers.values())} requests, answers={dict(answers)}, 5xx=0"
    )


def _status(client: httpx.Client, method: str, path: str, **kwargs: Any) -> int:
    with client.stream(method, path, **kwargs) as response:
        if response.status_code < 400:
            return response.status_code  # a stream opened: the assertion reports it
        if response.headers.get("content-type", "").startswith("application/json"):
            body = response.read()
            assert b'"error"' in body and b'"message"' in body, body[:300]
        return response.status_code

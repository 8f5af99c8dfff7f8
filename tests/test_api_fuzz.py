"""Schemathesis against the running sidecar's own OpenAPI: no 5xx, every error a JSON body.

Driven by hand (operation strategies under Hypothesis' `@given`) because schemathesis'
`from_fixture` loader breaks on pytest 9 (it reads the removed `Function._nodeid`).
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.test_api import stack  # noqa: F401 - the module-scoped live stack fixture

WAITING = {"true", "1", "yes", "on"}


def _check(case: Any, base: str, token: str | None) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    query = dict(case.query or {})
    if case.method == "POST" and str(query.get("wait", "true")).lower() in WAITING:
        # A waiting trigger holds the request for a whole run; the fuzzer wants answers.
        case.query = query | {"wait": "false"}
    response = case.call(base_url=base, headers=headers, timeout=60)
    where = (case.method, case.path, case.query, response.status_code, response.text[:300])
    assert response.status_code < 500, where
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body, dict) and body.get("error") and body.get("message"), where


@pytest.mark.parametrize(("key", "examples"), [("admin", 30), (None, 15), ("reader", 10)])
def test_fuzzed_requests_never_get_a_server_error(
    stack: dict[str, Any],  # noqa: F811
    key: str | None,
    examples: int,
) -> None:
    schema = schemathesis.openapi.from_url(f"{stack['base']}/openapi.json")
    # The stream never ends; its bad inputs are covered in tests/test_stream.py.
    schema = schema.exclude(path="/api/stream/events")
    token = stack["tokens"][key] if key else None
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 6
    for operation in operations:

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def fuzz(case: Any) -> None:
            _check(case, stack["base"], token)

        fuzz()

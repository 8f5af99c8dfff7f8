"""One served stack per database for the scenarios that need the whole system."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.databases import DATABASES, app_database
from tests.support.stack import Stack, served_stack


@pytest.fixture(scope="package", params=DATABASES)
def stack(
    request: pytest.FixtureRequest, simulator_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp(f"reliability-{request.param}")
    settings = {
        "RECON_FETCH_RETRIES": "2",
        "RECON_FETCH_BACKOFF_SECONDS": "0.1",
        "RECON_HTTP_TIMEOUT_SECONDS": "3",
        "RECON_TRIGGER_WAIT_SECONDS": "60",
    }
    with (
        app_database(request.param, root) as url,
        served_stack(
            root, db=request.param, url=url, simulator=simulator_server, settings=settings
        ) as stack,
    ):
        yield stack


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Each scenario prints its figures (`[scenario] ...`); collect them at the end of the
    run, so they show in CI's output without `-s`."""
    lines = [
        line
        for report in terminalreporter.stats.get("passed", [])
        if "tests/reliability/" in report.nodeid and report.when == "call"
        for line in report.capstdout.splitlines()
        if line.startswith("[")
    ]
    if lines:
        terminalreporter.section("reliability figures")
        for line in lines:
            terminalreporter.write_line(line)

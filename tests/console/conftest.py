"""One served stack (SQLite) for the console's browser tests and the preview's API tests,
and one headless Chromium (Debian's, `/usr/bin/chromium`: Playwright's own download cannot
be reached) for the package.

Screenshots go to `$RECON_CONSOLE_SCREENSHOTS` when it is set (`make screenshots` sets it
to docs/console), else under the test's temporary directory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.console.pages import WAIT_MS
from tests.sim import Sim
from tests.support.sidecar import EVERY_CAPABILITY
from tests.support.stack import Stack, sqlite_stack

CHROMIUM = Path("/usr/bin/chromium")
KEYS = {
    "admin": EVERY_CAPABILITY,
    # Reads everything, may not trigger: sees no buttons.
    "viewer": ["admin:read", "events:read"],
}


@pytest.fixture(scope="package")
def stack(simulator_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("console")
    Sim.of(simulator_server).reset()
    with sqlite_stack(root, simulator_server, keys=KEYS, trigger_wait=60) as stack:
        yield stack
    Sim.of(simulator_server).reset()


@pytest.fixture
def sim(simulator_server: Any) -> Sim:
    """The simulator, left as the test leaves it (the package's tests build on each other's
    books); reset when the package ends."""
    return Sim.of(simulator_server)


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail("the browser tests need Debian's chromium: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox cannot start.
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any, stack: Stack) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    expect.set_options(timeout=WAIT_MS)  # a condition, not a sleep: met as soon as it holds
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on(
        "console",
        lambda message: (
            problems.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    yield page
    context.close()
    assert problems == [], "the page raised or broke its Content-Security-Policy"


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    target = os.environ.get("RECON_CONSOLE_SCREENSHOTS")
    folder = Path(target) if target else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder

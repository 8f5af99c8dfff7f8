"""What the console's tests do with the page and the stack: sign in, find a row, count the
journal and the run log, sync through the API, take a screenshot."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, expect
from sqlalchemy import func, select

from recon.store.database import session_factory
from recon.store.models import PositionChange, PositionEvent, SyncRun
from tests.support.stack import Stack

WAIT_MS = 60_000  # a run through the deployment on a loaded 2-core machine


def shoot(page: Page, folder: Path, name: str) -> None:
    """A screenshot of the whole page for docs/console.md (JPEG: the docs stay small)."""
    page.screenshot(path=folder / f"{name}.jpg", full_page=True, type="jpeg", quality=70)


def sign_in(page: Page, stack: Stack, key: str = "admin") -> None:
    page.goto(stack.base + "/")
    page.fill("#api-key", stack.tokens[key])
    page.click("#sign-in-button")
    expect(page.locator("#console")).to_be_visible()


def counts(stack: Stack) -> dict[str, int]:
    with session_factory(stack.url)() as session:
        return {
            t.__tablename__: session.scalar(select(func.count()).select_from(t)) or 0
            for t in (PositionEvent, PositionChange, SyncRun)
        }


def sync(stack: Stack) -> None:
    answer = stack.trigger(wait=True)
    assert answer.status_code == 200, answer.text


def row(page: Page, symbol: str) -> Any:
    return page.locator("#book-table tbody tr").filter(
        has=page.locator("td:first-child", has_text=re.compile(f"^{re.escape(symbol)}$"))
    )

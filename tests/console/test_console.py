"""The console in a real browser (headless Debian Chromium, Playwright) against a served
stack: sign in, the book, live changes, Sync now, Preview (writes nothing), the override,
a key without admin:write, and markup from the broker shown as text.

The tests build on each other's books, in file order (one stack for the package).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Page, expect
from sqlalchemy import select

from recon.store.database import session_factory
from recon.store.models import AuditEntry
from tests.console.books import HTML_ERROR, HTML_SYMBOL, SYMBOLS, book
from tests.console.pages import counts, row, shoot, sign_in, sync
from tests.sim import Sim
from tests.support.process import Process
from tests.support.stack import Stack


def test_the_page_is_static_with_a_strict_policy(stack: Stack) -> None:
    answer = httpx.get(stack.base + "/", timeout=10)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy
    assert "unsafe-inline" not in policy and "<script>" not in answer.text  # no inline script
    assert httpx.get(stack.base + "/console/app.js", timeout=10).status_code == 200
    assert httpx.get(stack.base + "/console/secret.py", timeout=10).status_code == 404
    assert httpx.get(stack.base + "/console/..%2Fmain.py", timeout=10).status_code == 404


def test_sign_in_and_the_book_loads(page: Page, stack: Stack, sim: Sim, screenshots: Path) -> None:
    sim.load(book())
    sync(stack)
    page.goto(stack.base + "/")
    page.fill("#api-key", "rk_wrong")
    page.click("#sign-in-button")
    expect(page.locator("#sign-in-error")).to_contain_text("invalid or revoked API key")
    sign_in(page, stack)
    expect(page.locator("#book-table tbody tr")).to_have_count(len(SYMBOLS))
    expect(row(page, "AAPL").locator("td").nth(2)).to_have_text("10")
    expect(page.locator("#who")).to_contain_text("admin")
    expect(page.locator("#runs-table tbody tr").first).to_contain_text("admin")
    expect(page.locator("#job-fields")).to_contain_text("*/5 * * * *")
    # The key stays in this tab's sessionStorage, and nowhere in the page's URL.
    assert page.evaluate("sessionStorage.getItem('recon.apiKey')") == stack.tokens["admin"]
    assert stack.tokens["admin"] not in page.url
    # Sorting (by symbol already: a click turns it around) and filtering.
    page.click("#book-table th[data-key=symbol]")
    expect(page.locator("#book-table tbody tr").first.locator("td").first).to_have_text("XOM")
    page.fill("#book-filter", "ms")
    expect(page.locator("#book-table tbody tr")).to_have_count(1)
    page.fill("#book-filter", "")
    shoot(page, screenshots, "overview")


def test_a_change_on_the_broker_shows_live_in_book_and_feed(
    page: Page, stack: Stack, sim: Sim, screenshots: Path
) -> None:
    sign_in(page, stack)
    expect(page.locator("#stream-state")).to_have_text("stream: live")
    page.evaluate("window.__sameDocument = true")
    sim.load(book(AAPL="15"))
    sync(stack)
    expect(row(page, "AAPL").locator("td").nth(2)).to_have_text("15")
    expect(row(page, "AAPL")).to_have_class(re.compile("changed"))
    feed = page.locator("#event-list li").first
    expect(feed).to_contain_text("position:updated")
    expect(feed).to_contain_text("qty: 10 → 15")
    assert page.evaluate("window.__sameDocument") is True  # no reload
    # History: the position's changes and its quantity chart.
    row(page, "AAPL").click()
    expect(page.locator("#history-list li")).to_have_count(2)
    expect(page.locator("#history-list li").first).to_contain_text("qty: 10 → 15")
    expect(page.locator("#history-chart svg circle")).to_have_count(2)
    shoot(page, screenshots, "live-change")


def test_sync_now_then_preview_which_writes_nothing(
    page: Page, stack: Stack, sim: Sim, screenshots: Path
) -> None:
    sign_in(page, stack)
    sim.load(book(AAPL="15", MSFT="12"))
    page.click("#sync-now")
    expect(page.locator("#action-result")).to_contain_text("Position sync completed: 1 changes")
    expect(row(page, "MSFT").locator("td").nth(2)).to_have_text("12")

    sim.load(book(AAPL="15", MSFT="12", KO="7", NVDA="3"))
    before, book_before = counts(stack), stack.book()
    page.click("#preview")
    expect(page.locator("#action-result")).to_contain_text("Preview, nothing written: 2 changes")
    lists = page.locator("#preview-lists")
    expect(lists).to_contain_text("would create")
    expect(lists.locator("dd").nth(0)).to_have_text("NVDA")
    expect(lists.locator("dd").nth(1)).to_have_text("KO")
    expect(page.locator("#preview-details")).to_contain_text("qty: 10 → 7")
    expect(page.locator("#apply-mass")).to_be_hidden()  # not refused
    shoot(page, screenshots, "preview")
    # Nothing written: the book, the journal, the run log.
    assert counts(stack) == before and stack.book() == book_before
    expect(row(page, "KO").locator("td").nth(2)).to_have_text("10")
    with session_factory(stack.url)() as session:
        last = session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc())).first()
    assert last is not None and (last.actor, last.action) == ("admin", "preview")
    with stack.prefect() as prefect:
        run = prefect.read_flow_run(last.flow_run_id)
    assert {"key:admin", "preview"} <= set(run.tags)
    expect(page.locator("#runs-table tbody tr").first).to_contain_text("(preview)")


def test_apply_with_mass_removal_only_after_a_refused_preview(
    page: Page, stack: Stack, sim: Sim, screenshots: Path
) -> None:
    sign_in(page, stack)
    sim.load(book(**{s: "0" for s in SYMBOLS[2:]}))  # keep two of eight
    page.click("#preview")
    expect(page.locator("#preview-refused")).to_contain_text("over the cap")
    expect(page.locator("#apply-mass")).to_be_visible()
    shoot(page, screenshots, "refused-preview")
    asked: list[str] = []

    def answer(dialog: Any) -> None:
        asked.append(dialog.message)
        dialog.accept()

    page.once("dialog", answer)
    page.click("#apply-mass")
    expect(page.locator("#action-result")).to_contain_text("Position sync completed")
    (question,) = asked
    assert all(symbol in question for symbol in SYMBOLS[2:]) and "REMOVE 6" in question
    expect(page.locator("#book-table tbody tr")).to_have_count(2)
    expect(page.locator("#audit-table tbody tr").first).to_contain_text("override")


def test_a_key_without_admin_write_sees_no_buttons_and_gets_403(page: Page, stack: Stack) -> None:
    sign_in(page, stack, "viewer")
    expect(page.locator("#book-table tbody tr").first).to_be_visible()
    expect(page.locator("#actions")).to_be_hidden()
    for button in ("#sync-now", "#preview", "#apply-mass"):
        expect(page.locator(button)).to_be_hidden()
    status = page.evaluate(
        """async () => (await fetch('/api/admin/jobs/sync-positions?dryRun=true', {
            method: 'POST',
            headers: {Authorization: 'Bearer ' + sessionStorage.getItem('recon.apiKey')},
        })).status"""
    )
    assert status == 403


def test_markup_from_the_broker_is_shown_as_text(
    page: Page, stack: Stack, sim: Sim, screenshots: Path
) -> None:
    sign_in(page, stack)
    expect(page.locator("#stream-state")).to_have_text("stream: live")
    sim.load(book(**{HTML_SYMBOL: "1"}))
    sync(stack)
    expect(row(page, HTML_SYMBOL)).to_have_count(1)
    expect(page.locator("#event-list li").first).to_contain_text(HTML_SYMBOL)
    # An error text holding markup (the simulator's bad-data fault), in a preview.
    sim.fault("unknown_enum", path="/v2/positions", value=HTML_ERROR)
    try:
        page.click("#preview")
        expect(page.locator("#preview-lists")).to_contain_text(HTML_ERROR)
    finally:
        sim.clear_fault()
    assert page.evaluate("window.__xss") is None
    assert page.locator("#book-table img, #event-list img, #preview-result script").count() == 0
    shoot(page, screenshots, "markup-as-text")


def test_the_feed_resumes_after_the_sidecar_restarts_with_no_event_twice(
    page: Page, stack: Stack, sim: Sim
) -> None:
    sign_in(page, stack)
    expect(page.locator("#stream-state")).to_have_text("stream: live")
    sim.load(book(AAPL="20"))
    sync(stack)
    first = stack.last_event_id()
    expect(page.locator(f"#event-list li[data-event-id='{first}']")).to_have_count(1)
    port = stack.base.rsplit(":", 1)[1]
    stack.sidecar.stop()
    expect(page.locator("#stream-state")).not_to_have_text("stream: live")
    # Journaled while no sidecar is up: a scheduled run, through Prefect.
    sim.load(book(AAPL="21"))
    stack.wait_final(stack.schedule_run(delay=0).id)
    missed = stack.last_event_id()
    assert missed > first
    stack.sidecar = Process(["cli", "api", "--port", port], stack.env, stack.root / "sidecar-2.log")
    expect(page.locator("#stream-state")).to_have_text("stream: live")
    expect(page.locator(f"#event-list li[data-event-id='{missed}']")).to_contain_text(
        "qty: 20 → 21"
    )
    ids = page.eval_on_selector_all("#event-list li", "items => items.map(i => i.dataset.eventId)")
    assert len(ids) == len(set(ids)), "an event shown twice"
    assert str(first) in ids

"""The console in a real headless Chromium (Debian's `chromium`), driven by Playwright.

Each test leaves screenshots of the pages it saw in test-output/screenshots/.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from gateway.audit import EXPORT_COLUMNS
from tests.console.flows import Console

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium for the module; skipped without it, except under CI."""
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("browser tests need Debian's chromium at /usr/bin/chromium under CI")
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium (and CI is not set)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield launched
        launched.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh browser profile per test: no cookies carried over."""
    fresh = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
    fresh.set_default_timeout(15_000)
    yield fresh
    fresh.close()


def _sign_in(page: Page, console: Console, principal: str, shots: Path | None = None) -> None:
    page.goto(f"{console.url}/console/login")
    page.get_by_label("API key").fill(console.keys[principal])
    if shots is not None:
        page.screenshot(path=shots / "login.png")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def test_browser_approver_approves_agents_request_and_sees_it_applied(
    console: Console, context: BrowserContext, screenshots: Path
) -> None:
    action_id = console.pending_restock(delta=180)
    page = context.new_page()
    _sign_in(page, console, "finn", screenshots)
    expect(page).to_have_url(f"{console.url}/console/approvals")
    card = page.locator(f"#action-{action_id}")
    expect(card).to_contain_text("Waiting for your decision")
    expect(card).to_contain_text("Requested by restock-bot")
    card.scroll_into_view_if_needed()
    page.screenshot(path=screenshots / "approvals-finn.png", full_page=True)
    card.get_by_label("Comment").fill("Pallet checked on the dock")
    card.get_by_role("button", name="Approve").click()
    expect(page).to_have_url(f"{console.url}/console/actions/{action_id}?done=approved")
    expect(page.locator("p.lead .badge")).to_have_text("Applied")
    page.screenshot(path=screenshots / "action-applied.png", full_page=True)
    assert console.status_of(action_id) == "APPLIED"


def test_browser_agents_owner_sees_no_approve_button_on_its_request(
    console: Console, context: BrowserContext, screenshots: Path
) -> None:
    action_id = console.pending_restock()
    page = context.new_page()
    _sign_in(page, console, "olivia")
    card = page.locator(f"#action-{action_id}")
    expect(card).to_contain_text("You can't decide this one")
    expect(card.get_by_role("button", name="Approve")).to_have_count(0)
    expect(card.get_by_role("button", name="Reject")).to_have_count(0)
    card.scroll_into_view_if_needed()
    page.screenshot(path=screenshots / "approvals-olivia-owner.png")


def test_browser_compliance_filters_audit_trail_and_downloads_csv(
    console: Console, context: BrowserContext, screenshots: Path, tmp_path: Path
) -> None:
    console.pending_restock()
    page = context.new_page()
    _sign_in(page, console, "carla")
    expect(page).to_have_url(f"{console.url}/console/audit")
    expect(page.get_by_text("The trail is intact.")).to_be_visible()
    page.get_by_label("People or agents").select_option("agent")
    page.get_by_label("Outcome").select_option("PENDING_APPROVAL")
    page.get_by_role("button", name="Show").click()
    expect(page).to_have_url(re.compile(r"/console/audit\?.*principal_kind=agent.*outcome=PEND"))
    expect(page.locator("table.events tbody tr").first).to_contain_text("restock-bot")
    page.screenshot(path=screenshots / "audit-filtered.png", full_page=True)
    with page.expect_download() as info:
        page.get_by_role("link", name="CSV (spreadsheets)").click()
    saved = tmp_path / info.value.suggested_filename
    info.value.save_as(saved)
    rows = list(csv.DictReader(io.StringIO(saved.read_text("utf-8"))))
    assert saved.suffix == ".csv"
    assert tuple(rows[0]) == EXPORT_COLUMNS
    assert {(r["principal_kind"], r["outcome"]) for r in rows} == {("agent", "PENDING_APPROVAL")}


def test_browser_forged_form_without_csrf_token_is_refused(
    console: Console, context: BrowserContext, screenshots: Path
) -> None:
    action_id = console.pending_restock()
    page = context.new_page()
    _sign_in(page, console, "finn")
    form = page.locator(f'form[action="/console/actions/{action_id}/approve"]')
    form.locator('input[name="csrf_token"]').evaluate("field => field.remove()")
    with page.expect_response(f"**/console/actions/{action_id}/approve") as posted:
        form.get_by_role("button", name="Approve").click()
    assert posted.value.status == 403
    expect(page.get_by_role("heading", name="Form refused")).to_be_visible()
    page.screenshot(path=screenshots / "forged-post-refused.png")
    assert console.status_of(action_id) == "PENDING_APPROVAL"


def test_browser_signed_out_user_is_sent_to_sign_in(
    console: Console, context: BrowserContext, screenshots: Path
) -> None:
    page = context.new_page()
    page.goto(f"{console.url}/console/approvals")
    expect(page).to_have_url(f"{console.url}/console/login?next=%2Fconsole%2Fapprovals")
    _sign_in(page, console, "finn")
    expect(page).to_have_url(f"{console.url}/console/approvals")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_text("You are signed out.")).to_be_visible()
    page.screenshot(path=screenshots / "signed-out.png")
    page.goto(f"{console.url}/console/approvals")
    expect(page).to_have_url(f"{console.url}/console/login?next=%2Fconsole%2Fapprovals")


def test_browser_sources_page_reads_well(
    console: Console, context: BrowserContext, screenshots: Path
) -> None:
    page = context.new_page()
    _sign_in(page, console, "sam")
    expect(page).to_have_url(f"{console.url}/console/sources")
    page.get_by_role("button", name="Check every system now").click()
    expect(page.get_by_text("Checked just now.")).to_be_visible()
    expect(page.locator("article.system .badge.good")).to_have_count(2)
    page.screenshot(path=screenshots / "sources.png", full_page=True)

"""The console in a real headless Chromium (Debian's `chromium`), driven by Playwright.

Each test leaves screenshots of the pages it saw in test-output/screenshots/.
"""

from __future__ import annotations

import csv
import io
import os
import re
import sqlite3
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
    systems = page.locator("article.system").count()
    assert systems >= 2  # the ERP and the CRM, and any other configured system
    expect(page.locator("article.system .badge.good")).to_have_count(systems)
    page.screenshot(path=screenshots / "sources.png", full_page=True)


PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1440, "height": 900}
# Every console page, as the person who uses it: (name, who signs in, path).
PAGES = [
    ("approvals", "finn", "/console/approvals"),
    ("action-pending", "finn", "/console/actions/{pending}"),
    ("action-applied", "finn", "/console/actions/{applied}"),
    ("in-doubt", "finn", "/console/in-doubt"),
    ("audit", "carla", "/console/audit"),
    ("ledger", "carla", "/console/ledger"),
    ("sources", "sam", "/console/sources"),
    ("not-found", "finn", "/console/no-such-page"),
    ("login", None, "/console/login"),
]


@pytest.fixture(scope="module")
def actions(console: Console) -> dict[str, str]:
    """One action waiting for approval and one applied, for the action pages."""
    applied = console.graphql(
        "sam",
        'mutation { adjustInventory(input: {sku: "SKU-0002", location: "WH-BER", delta: 5, '
        'reason: "recount after the stock take"}) { status action { id } } }',
    )["adjustInventory"]
    assert applied["status"] == "APPLIED", applied
    return {
        "pending": console.pending_restock(delta=240, sku="SKU-0002"),
        "applied": applied["action"]["id"],
    }


def _page_width(page: Page) -> int:
    width: int = page.evaluate("document.documentElement.scrollWidth")
    return width


@pytest.mark.parametrize(("name", "principal", "path"), PAGES, ids=[p[0] for p in PAGES])
@pytest.mark.parametrize("size", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_browser_every_page_fits_phone_and_desktop_width(
    console: Console,
    browser: Browser,
    screenshots: Path,
    actions: dict[str, str],
    name: str,
    principal: str | None,
    path: str,
    size: dict[str, int],
) -> None:
    fresh = browser.new_context(viewport=size)  # type: ignore[arg-type]
    fresh.set_default_timeout(15_000)
    try:
        page = fresh.new_page()
        if principal is not None:
            _sign_in(page, console, principal)
        page.goto(f"{console.url}{path.format(**actions)}")
        assert _page_width(page) <= size["width"], f"{name} is wider than the screen"
        if principal is not None:  # the header keeps the name and sign-out on screen
            signed_out = page.get_by_role("button", name="Sign out").bounding_box()
            assert signed_out is not None
            assert signed_out["x"] + signed_out["width"] <= size["width"]
        label = "phone" if size is PHONE else "desktop"
        page.screenshot(path=screenshots / f"{label}-{name}.png", full_page=True)
    finally:
        fresh.close()


def test_browser_phone_decision_buttons_take_the_whole_width(
    console: Console, browser: Browser, screenshots: Path, actions: dict[str, str]
) -> None:
    fresh = browser.new_context(viewport=PHONE)  # type: ignore[arg-type]
    try:
        page = fresh.new_page()
        _sign_in(page, console, "finn")
        page.goto(f"{console.url}/console/actions/{actions['pending']}")
        approve = page.get_by_role("button", name=re.compile(r"^Approve \+240 boxes"))
        reject = page.get_by_role("button", name=re.compile(r"^Reject \+240 boxes"))
        approve.scroll_into_view_if_needed()
        page.screenshot(path=screenshots / "phone-decide.png")
        for button in (approve, reject):
            box = button.bounding_box()
            assert box is not None
            assert box["width"] >= 300  # one column: the width of the card, not half of it
            assert box["x"] >= 0
            assert box["x"] + box["width"] <= PHONE["width"]
    finally:
        fresh.close()


def test_browser_skip_link_is_first_and_jumps_to_the_content(
    console: Console, context: BrowserContext
) -> None:
    page = context.new_page()
    _sign_in(page, console, "finn")
    page.keyboard.press("Tab")
    focused = page.evaluate("document.activeElement.textContent")
    assert focused == "Skip to the page's content"
    expect(page.get_by_role("link", name="Skip to the page's content")).to_be_visible()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"#main$"))
    assert page.evaluate("document.activeElement.id") == "main"


def test_browser_approve_buttons_are_named_for_their_action(
    console: Console, context: BrowserContext, actions: dict[str, str]
) -> None:
    page = context.new_page()
    _sign_in(page, console, "finn")
    card = page.locator(f"#action-{actions['pending']}")
    name = "Approve +240 boxes of Wood screw 5x80 mm at WH-BER, requested by restock-bot for olivia"
    expect(card.get_by_role("button", name=name, exact=True)).to_have_count(1)
    named = page.get_by_role("button", name="Approve", exact=True)
    expect(named).to_have_count(0)  # none is just "Approve" for a screen reader


def test_browser_control_borders_have_three_to_one_contrast(
    console: Console, context: BrowserContext
) -> None:
    page = context.new_page()
    _sign_in(page, console, "finn")
    colour = page.locator("textarea").first.evaluate("e => getComputedStyle(e).borderTopColor")
    red, green, blue = (int(n) for n in re.findall(r"\d+", colour)[:3])
    assert _contrast((red, green, blue), (255, 255, 255)) >= 3.0


def _contrast(one: tuple[int, int, int], two: tuple[int, int, int]) -> float:
    def luminance(rgb: tuple[int, int, int]) -> float:
        linear = [
            c / 255 / 12.92 if c / 255 <= 0.03928 else ((c / 255 + 0.055) / 1.055) ** 2.4
            for c in rgb
        ]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    high, low = sorted((luminance(one), luminance(two)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_browser_unknown_console_address_shows_a_console_page(
    console: Console, context: BrowserContext
) -> None:
    page = context.new_page()
    _sign_in(page, console, "finn")
    response = page.goto(f"{console.url}/console/approvals/nothing")
    assert response is not None
    assert response.status == 404
    expect(page.get_by_role("heading", name="No such page")).to_be_visible()
    expect(page.get_by_role("link", name="Approvals")).to_be_visible()


@pytest.mark.parametrize("size", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_browser_record_moved_since_request_is_shown_before_the_decision(
    console: Console, browser: Browser, screenshots: Path, size: dict[str, int]
) -> None:
    sku, location = "SKU-0005", "WH-BER"
    action_id = console.pending_restock(delta=300, sku=sku)
    erp = console.database.parent / "erp.db"
    with sqlite3.connect(erp) as connection:  # stock counted in the ERP meanwhile
        connection.execute(
            "UPDATE stock_levels SET on_hand = on_hand + 40 WHERE sku = ? AND location = ?",
            (sku, location),
        )
    fresh = browser.new_context(viewport=size)  # type: ignore[arg-type]
    try:
        page = fresh.new_page()
        _sign_in(page, console, "finn")
        page.goto(f"{console.url}/console/actions/{action_id}")
        warning = page.get_by_role(
            "heading", name="The record has changed since this was requested"
        )
        expect(warning).to_be_visible()
        approve = page.get_by_role("button", name=re.compile(r"^Approve "))
        above = page.evaluate(
            "([a, b]) => a.compareDocumentPosition(b) & Node.DOCUMENT_POSITION_FOLLOWING",
            [warning.element_handle(), approve.element_handle()],
        )
        assert above  # read before anyone can approve
        assert _page_width(page) <= size["width"]
        label = "phone" if size is PHONE else "desktop"
        page.screenshot(path=screenshots / f"{label}-action-record-moved.png", full_page=True)
    finally:
        fresh.close()


def _credit(console: Console, principal: str, amount: str) -> str:
    data = console.graphql(
        principal,
        'mutation { issueCreditNote(input: {customerId: "C-00101", orderId: "SO-100432", '
        f'amount: "{amount}", reason: "damaged in transit"}}) {{ status action {{ id }} }} }}',
    )
    assert data["issueCreditNote"]["status"] == "PENDING_APPROVAL", data
    action_id: str = data["issueCreditNote"]["action"]["id"]
    return action_id


@pytest.fixture(scope="module")
def credits(console: Console) -> dict[str, str]:
    """A credit finn can decide (sam's) and one nobody can complete (olivia's, two needed)."""
    return {
        "open": _credit(console, "sam", "2000.00"),
        "stuck": _credit(console, "olivia", "6000.00"),
    }


@pytest.mark.parametrize("size", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_browser_queue_filters_and_flags_what_nobody_can_approve(
    console: Console,
    browser: Browser,
    screenshots: Path,
    credits: dict[str, str],
    size: dict[str, int],
) -> None:
    fresh = browser.new_context(viewport=size)  # type: ignore[arg-type]
    try:
        page = fresh.new_page()
        _sign_in(page, console, "finn")
        expect(page.locator("p.counts")).to_contain_text("nobody can approve as things stand")
        page.get_by_text("Filter and sort").click()
        page.get_by_label("Kind of action").select_option("credit_note.issue")
        page.get_by_label("Sort by").select_option("amount")
        page.get_by_role("button", name="Show").click()
        expect(page).to_have_url(re.compile(r"kind=credit_note\.issue.*sort=amount"))
        stuck = page.locator(f"#action-{credits['stuck']}")
        expect(stuck).to_contain_text("Nobody can approve this as things stand")
        expect(stuck).to_contain_text("Credit note of 6,000.00 EUR to")
        expect(stuck.get_by_role("button", name=re.compile("^Approve"))).to_have_count(0)
        expect(stuck.get_by_role("button", name=re.compile("^Reject"))).to_have_count(1)
        assert _page_width(page) <= size["width"]
        label = "phone" if size is PHONE else "desktop"
        page.screenshot(path=screenshots / f"{label}-approvals-filtered.png", full_page=True)
        page.get_by_label("Only those I can decide").check()
        page.get_by_role("button", name="Show").click()
        expect(page.locator(f"#action-{credits['open']}")).to_have_count(1)
        expect(page.locator(f"#action-{credits['stuck']}")).to_have_count(0)
    finally:
        fresh.close()

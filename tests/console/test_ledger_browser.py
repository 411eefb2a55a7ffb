"""The action ledger in a real headless Chromium: on a phone its table scrolls inside its
box, never the page; screenshots at desktop and phone sizes in test-output/screenshots/."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.console.flows import Console
from tests.console.test_ledger import _decide

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run"]
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1440, "height": 900}


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


@pytest.fixture(scope="module")
def decided(console: Console) -> str:
    """An agent's restock approved with a comment: a full row."""
    action_id = console.pending_restock(delta=175, sku="SKU-0011")
    _decide(console, "finn", action_id, "approve", "Pallet counted on the dock")
    console.pending_restock(delta=185, sku="SKU-0012")
    return action_id


def _ledger_page(browser: Browser, console: Console, viewport: dict[str, int]) -> Page:
    context = browser.new_context(viewport=viewport)  # type: ignore[arg-type]
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.goto(f"{console.url}/console/login?next=/console/ledger")
    page.get_by_label("API key").fill(console.keys["carla"])
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Action ledger")).to_be_visible()
    return page


def _width(page: Page, script: str) -> int:
    value = page.evaluate(script)
    assert isinstance(value, int)
    return value


def test_ledger_on_a_phone_scrolls_its_table_inside_its_box(
    console: Console, decided: str, browser: Browser, screenshots: Path
) -> None:
    page = _ledger_page(browser, console, PHONE)
    page.screenshot(path=screenshots / "ledger-390.png", full_page=True)
    assert _width(page, "document.documentElement.scrollWidth") <= PHONE["width"]
    box = page.get_by_role("region", name="Actions, newest first")
    expect(box).to_be_visible()
    inner = _width(page, "document.querySelector('table.ledger').scrollWidth")
    outer = _width(page, "document.querySelector('table.ledger').parentElement.clientWidth")
    assert inner > outer  # the table is wider than the phone: it scrolls in its box
    page.goto(f"{console.url}/console/audit?action_id={decided}")
    page.screenshot(path=screenshots / "ledger-events-390.png", full_page=True)
    assert _width(page, "document.documentElement.scrollWidth") <= PHONE["width"]
    page.context.close()


def test_ledger_on_a_desktop_shows_the_row_and_links_to_its_events(
    console: Console, decided: str, browser: Browser, screenshots: Path
) -> None:
    page = _ledger_page(browser, console, DESKTOP)
    page.screenshot(path=screenshots / "ledger-1440.png", full_page=True)
    row = page.locator(f"#action-{decided}")
    expect(row).to_contain_text("Pallet counted on the dock")
    expect(row).to_contain_text("Applied")
    row.get_by_role("link", name="Events of Adjust inventory of").click()  # named for its row
    expect(page.get_by_role("heading", name="Audit trail")).to_be_visible()
    expect(page.locator("table.events")).to_contain_text("Now")
    page.screenshot(path=screenshots / "ledger-events-1440.png", full_page=True)
    page.context.close()

"""The drift page: copies compared with their system of record, and a fix prepared by a person."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from gateway.app import create_app
from gateway.demo import DemoEstate
from gateway.settings import Settings
from sources.demo import build_estate, create_erp
from sources.demo.process import StorefrontProcess
from sources.demo.storefront_store import seed_storefront
from tests.console.flows import Console, csrf_token
from tests.factories import live_server, with_source


@pytest.fixture(scope="module")
def drift_console(
    estate: DemoEstate, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Console]:
    """A live gateway over an ERP file and a storefront process of this module's own."""
    folder = tmp_path_factory.mktemp("drift-console")
    erp_url = f"sqlite+aiosqlite:///{folder / 'erp.db'}"
    built = build_estate()
    asyncio.run(create_erp(erp_url, built))
    seed_storefront(folder / "storefront.db", built)
    database = folder / "gatehouse.db"
    with StorefrontProcess.start(folder / "storefront.db") as storefront:
        config = with_source(estate.config(), "erp", url=erp_url, timeout=2.0)
        config = with_source(config, "storefront", url=storefront.url, timeout=2.0)
        app = create_app(Settings(database_url=f"sqlite+aiosqlite:///{database}"), config)
        with live_server(app) as server:
            yield Console(url=server.url, keys=estate.keys, database=database)


def test_drift_page_sweeps_and_lists_each_mismatch(drift_console: Console) -> None:
    with drift_console.signed_in("sam") as sam:
        first = sam.get("/console/drift")
        assert first.status_code == 200
        assert 'href="/console/drift"' in first.text
        token = csrf_token(first.text)
        swept = sam.post("/console/drift/sweep", data={"csrf_token": token})
        assert swept.status_code == 303
        page = sam.get(swept.headers["location"]).text
    assert "Swept just now." in page
    assert "drift: 5 records" in page
    assert '<th scope="row">InventoryItem SKU-0040</th>' in page
    assert page.count("Prepare a fix") == 5


def test_drift_fix_is_a_dry_run_then_a_governed_write(drift_console: Console) -> None:
    fix = {"entity": "InventoryItem", "copy": "storefront", "key": "SKU-0080"}
    with drift_console.signed_in("olivia") as olivia:
        token = csrf_token(olivia.get("/console/drift").text)
        olivia.post("/console/drift/sweep", data={"csrf_token": token})
        dry = olivia.post(
            "/console/drift/fix", data={"csrf_token": token, **fix, "step": "dry-run"}
        )
        assert dry.status_code == 200, dry.text
        assert "STOREFRONT_SYNC_REVIEW" in dry.text
        assert "Submit this fix" in dry.text
        audited = drift_console.audit_count()
        sent = olivia.post(
            "/console/drift/fix", data={"csrf_token": token, **fix, "step": "submit"}
        )
        assert sent.status_code == 303
        assert sent.headers["location"].startswith("/console/actions/")
        action = olivia.get(sent.headers["location"])
        assert action.status_code == 200
    assert drift_console.audit_count() > audited  # the submitted fix is in the trail
    rows = drift_console.sql("SELECT status FROM actions WHERE kind = 'storefront.sync_stock'")
    assert ("PENDING_APPROVAL",) in rows


def test_drift_post_without_csrf_token_is_403(drift_console: Console) -> None:
    with drift_console.signed_in("sam") as sam:
        response = sam.post("/console/drift/sweep", data={})
    assert response.status_code == 403


def test_drift_fix_of_a_record_in_sync_is_refused(drift_console: Console) -> None:
    fix = {"entity": "InventoryItem", "copy": "storefront", "key": "SKU-0001", "step": "dry-run"}
    with drift_console.signed_in("olivia") as olivia:
        token = csrf_token(olivia.get("/console/drift").text)
        response = olivia.post("/console/drift/fix", data={"csrf_token": token, **fix})
    assert response.status_code == 404

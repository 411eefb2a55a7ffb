"""Drift checks: copies of contract fields compared with their system of record.

Real parts throughout: the ERP in a SQLite file of the test's own, the demo storefront and CRM
in their own processes, a second SQL system holding a copy of customers' e-mail addresses.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gateway.actions.store import Action
from gateway.alerts import AlertStatus, listed
from gateway.app import _chores, start
from gateway.cli import main
from gateway.config import GatewayConfig, load_config
from gateway.connectors import build_connectors
from gateway.database import audit_events, drift_findings
from gateway.demo import DemoEstate
from gateway.drift import (
    DriftStatus,
    drifting,
    sweep,
    sweep_estate,
    sweep_if_due,
    unknown,
)
from gateway.errors import ConfigError
from gateway.outcomes import WriteResult
from gateway.services import Services
from sources.demo import CrmProcess, build_estate, create_erp
from sources.demo.data import Estate
from sources.demo.process import StorefrontProcess
from sources.demo.storefront_store import seed_storefront
from tests.factories import (
    as_principal,
    fresh_postgres_database,
    require_postgres,
    run_query,
    services_for,
    submit,
    with_source,
)

# The storefront seeds every 40th SKU three units off (sources/demo/storefront.py).
SEEDED_OFF = ["SKU-0040", "SKU-0080", "SKU-0120", "SKU-0160", "SKU-0200"]


@dataclass
class Drifting:
    """An estate of the test's own: ERP file, storefront process, a ledger copy of e-mails."""

    config: GatewayConfig
    estate: Estate
    storefront: StorefrontProcess
    erp_url: str
    ledger: Path


@pytest.fixture
async def drifting_estate(
    tmp_path: Path, estate: DemoEstate, own_crm: CrmProcess
) -> AsyncIterator[Drifting]:
    built = build_estate()
    erp_url = f"sqlite+aiosqlite:///{tmp_path / 'erp.db'}"
    await create_erp(erp_url, built)
    seed_storefront(tmp_path / "storefront.db", built)
    ledger = _ledger(tmp_path / "ledger.db", built)
    with StorefrontProcess.start(tmp_path / "storefront.db") as storefront:
        config = with_source(estate.config(), "erp", url=erp_url)
        config = with_source(config, "crm", url=own_crm.url)
        config = with_source(config, "storefront", url=storefront.url, timeout=1.0)
        config = with_email_copy(config, f"sqlite+aiosqlite:///{ledger}")
        yield Drifting(config, built, storefront, erp_url, ledger)


def _ledger(path: Path, estate: Estate) -> Path:
    """A second system's table of customers' e-mail addresses: one of them out of date."""
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE contacts (customer_id TEXT PRIMARY KEY, email TEXT)")
        rows = [(c.id, c.email) for c in estate.customers]
        rows[2] = (rows[2][0], "old.address@example.com")
        connection.executemany("INSERT INTO contacts VALUES (?, ?)", rows)
    return path


def with_email_copy(config: GatewayConfig, url: str, **changes: Any) -> GatewayConfig:
    """The config with a ledger source holding a copy of Customer.email (a pii field)."""
    raw = config.model_dump(by_alias=True)
    raw["sources"]["ledger"] = {"kind": "sql", "url": url}
    copy = {"source": "ledger", "field": "email", "table": "contacts", "key": "customer_id"}
    raw["entities"]["Customer"]["copies"] = {"ledger": {**copy, **changes}}
    return GatewayConfig.model_validate(raw)


@pytest.fixture
async def drift_services(drifting_estate: Drifting, database_url: str) -> AsyncIterator[Services]:
    built = services_for(drifting_estate.config, database_url)
    await start(built)
    yield built
    await built.close()


def _report(report: Any, entity: str) -> Any:
    (found,) = [copy for copy in report.copies if copy.entity == entity]
    return found


async def test_sweep_storefront_off_by_units_reports_both_values_and_ages(
    drift_services: Services, drifting_estate: Drifting
) -> None:
    report = await sweep(drift_services)
    stock = _report(report, "InventoryItem")
    assert stock.status is DriftStatus.DRIFT
    assert (stock.authority, stock.holder, stock.checked) == ("erp", "storefront", 200)
    assert [f.key for f in stock.findings] == SEEDED_OFF
    levels = {
        level.sku: level.on_hand - level.reserved
        for level in drifting_estate.estate.stock_levels
        if level.location == "WH-BER"
    }
    first = stock.findings[0]
    assert first.record_value == str(levels["SKU-0040"])
    assert first.copy_value == str(levels["SKU-0040"] + 3)
    assert first.copy_updated_at == drifting_estate.estate.as_of  # the storefront's own stamp
    assert first.age(first.copy_updated_at) is not None
    # The ERP's side says when its stock at WH-BER last changed (levels.updated_at).
    (erp_level,) = [
        level
        for level in drifting_estate.estate.stock_levels
        if (level.sku, level.location) == ("SKU-0040", "WH-BER")
    ]
    assert first.record_updated_at == erp_level.updated_at
    assert first.age(first.record_updated_at) is not None
    assert report.drifting


async def test_sweep_order_placed_through_gateway_drifts_the_storefront_copy(
    drift_services: Services,
) -> None:
    await sweep(drift_services)
    line = {"sku": "SKU-0007", "quantity": 2, "location": "WH-BER"}
    placed = _action(
        await submit(drift_services, "order.place", {"customer_id": "C-00001", "lines": [line]})
    )
    assert placed.status.value == "APPLIED", placed.validation
    report = await sweep(drift_services)
    stock = _report(report, "InventoryItem")
    (order_drift,) = [f for f in stock.findings if f.key == "SKU-0007"]
    assert int(order_drift.copy_value or 0) - int(order_drift.record_value or 0) == 2


def _action(result: WriteResult) -> Action:
    assert result.action is not None, result
    return result.action


async def test_sweep_difference_within_tolerance_is_in_sync(drifting_estate: Drifting) -> None:
    raw = drifting_estate.config.model_dump(by_alias=True)
    raw["entities"]["InventoryItem"]["copies"]["storefront"]["tolerance"] = 3
    config = GatewayConfig.model_validate(raw)
    report = await _sweep_with(config, drifting_estate)
    assert _report(report, "InventoryItem").status is DriftStatus.IN_SYNC
    assert _report(report, "InventoryItem").findings == ()


async def test_sweep_difference_within_delay_lags_then_drifts(
    drifting_estate: Drifting, database_url: str
) -> None:
    raw = drifting_estate.config.model_dump(by_alias=True)
    raw["entities"]["InventoryItem"]["copies"]["storefront"]["delay"] = 300
    # Timed from when the sweep first saw it: the seeded ERP stock changed long ago, and a
    # difference older than `delay` since the record changed is drift at once (tested below).
    raw["entities"]["InventoryItem"]["copies"]["storefront"]["record_updated_at"] = None
    config = GatewayConfig.model_validate(raw)
    services = services_for(config, database_url)
    await start(services)
    try:
        now = datetime.now(UTC)
        first = await _sweep_at(services, now)
        stock = _report(first, "InventoryItem")
        assert {f.status for f in stock.findings} == {DriftStatus.LAGGING}
        assert stock.status is DriftStatus.IN_SYNC
        still = _report(await _sweep_at(services, now + timedelta(seconds=299)), "InventoryItem")
        assert {f.status for f in still.findings} == {DriftStatus.LAGGING}
        later = _report(await _sweep_at(services, now + timedelta(seconds=301)), "InventoryItem")
        assert {f.status for f in later.findings} == {DriftStatus.DRIFT}
        assert {f.first_seen for f in later.findings} == {now}
    finally:
        await services.close()


async def test_sweep_difference_older_than_delay_since_the_record_changed_drifts_at_once(
    drifting_estate: Drifting, database_url: str
) -> None:
    raw = drifting_estate.config.model_dump(by_alias=True)
    raw["entities"]["InventoryItem"]["copies"]["storefront"]["delay"] = 300
    config = GatewayConfig.model_validate(raw)
    services = services_for(config, database_url)
    await start(services)
    try:
        now = datetime.now(UTC)
        stock = _report(await _sweep_at(services, now), "InventoryItem")
        # The ERP's stock changed at the seed's time, well over five minutes ago.
        assert {f.status for f in stock.findings} == {DriftStatus.DRIFT}
        assert all(f.record_updated_at is not None for f in stock.findings)
    finally:
        await services.close()


async def _sweep_at(services: Services, now: datetime) -> Any:
    return await sweep_estate(
        config=services.config, connectors=services.connectors, engine=services.engine, now=now
    )


async def _sweep_with(config: GatewayConfig, drifting_estate: Drifting) -> Any:
    services = services_for(config, f"sqlite+aiosqlite:///{drifting_estate.ledger.parent}/g.db")
    await start(services)
    try:
        return await sweep(services)
    finally:
        await services.close()


async def test_sweep_pii_copy_never_stores_or_reports_the_values(
    drift_services: Services, drifting_estate: Drifting
) -> None:
    report = await sweep(drift_services)
    emails = _report(report, "Customer")
    (finding,) = emails.findings
    assert finding.key == drifting_estate.estate.customers[2].id
    assert (finding.masked, finding.record_value, finding.copy_value) == (True, None, None)
    async with drift_services.engine.connect() as connection:
        rows = (await connection.execute(select(drift_findings))).all()
        incidents = await drifting(connection)
    stored = " ".join(str(value) for row in rows for value in row)
    assert drifting_estate.estate.customers[2].email not in stored
    assert "old.address@example.com" not in stored
    by_entity = {incident.entity: incident for incident in incidents}
    assert "example.com" not in by_entity["Customer"].sample
    assert by_entity["Customer"].owner == drifting_estate.config.entities["Customer"].owner
    assert by_entity["InventoryItem"].records == len(SEEDED_OFF)
    assert by_entity["InventoryItem"].field == "levels.available"


async def test_sweep_storefront_down_is_unknown_and_other_copies_still_checked(
    drift_services: Services, drifting_estate: Drifting
) -> None:
    await sweep(drift_services)
    drifting_estate.storefront.stop()
    report = await sweep(drift_services)
    stock, emails = _report(report, "InventoryItem"), _report(report, "Customer")
    assert stock.status is DriftStatus.UNKNOWN
    assert "storefront" in (stock.error or "")
    assert emails.status is DriftStatus.DRIFT  # read and compared all the same
    assert not any(copy.status is DriftStatus.DRIFT for copy in report.copies if copy is stock)
    async with drift_services.engine.connect() as connection:
        incidents = {incident.entity for incident in await drifting(connection)}
        unreadable = await unknown(connection)
    assert incidents == {"Customer"}  # the storefront's earlier findings are no longer drift
    assert [(u.entity, u.copy) for u in unreadable] == [("InventoryItem", "storefront")]
    drifting_estate.storefront.restart()
    again = _report(await sweep(drift_services), "InventoryItem")
    assert again.status is DriftStatus.DRIFT


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"field": "mail"}, "entities.Customer.copies.ledger.field: 'mail' is not one of"),
        ({"source": "nowhere"}, "entities.Customer.copies.ledger.source: no source named"),
        ({"table": None}, "entities.Customer.copies.ledger.table: required"),
        ({"tolerance": 1}, "entities.Customer.copies.ledger.tolerance: only an int or decimal"),
        ({"where": {"location": "X"}}, "entities.Customer.copies.ledger.where: only a child's"),
        ({"colour": "red"}, "entities.Customer.copies.ledger.colour"),
    ],
)
def test_copy_config_mistake_is_refused_naming_the_key(
    tmp_path: Path, estate: DemoEstate, changes: dict[str, Any], expected: str
) -> None:
    text = estate.template.read_text(encoding="utf-8")
    copy = {"source": "erp", "field": "email", "table": "contacts", **changes}
    body = "".join(f"{k} = {_toml(v)}\n" for k, v in copy.items() if v is not None)
    path = tmp_path / "gatehouse.toml"
    path.write_text(text + f"\n[entities.Customer.copies.ledger]\n{body}", encoding="utf-8")
    with pytest.raises(ConfigError) as error:
        load_config(path, environ=estate.environ())
    assert expected in str(error.value)


def test_child_copy_without_its_row_is_refused(estate: DemoEstate) -> None:
    raw = estate.config().model_dump(by_alias=True)
    del raw["entities"]["InventoryItem"]["copies"]["storefront"]["where"]
    with pytest.raises(ValueError, match=r"copies\.storefront\.where: required for a child"):
        GatewayConfig.model_validate(raw)


def _toml(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return f'"{value}"' if isinstance(value, str) else str(value)


_DRIFT_QUERY = """
query ($entity: String, $status: DriftStatus) {
  drift(entity: $entity, status: $status) {
    entity copy key field status recordValue copyValue masked authority holder
    recordAgeSeconds copyAgeSeconds firstSeen checkedAt
  }
}
"""


async def test_graphql_drift_shows_only_entities_the_principal_may_read(
    drift_services: Services,
) -> None:
    await sweep(drift_services)
    olivia = await run_query(drift_services, _DRIFT_QUERY, variables={"status": "DRIFT"})
    assert olivia.errors is None, olivia.errors
    found = olivia.data["drift"] if olivia.data else []
    assert {row["entity"] for row in found} == {"Customer", "InventoryItem"}
    stock = [row for row in found if row["entity"] == "InventoryItem"]
    assert (stock[0]["authority"], stock[0]["holder"]) == ("erp", "storefront")
    assert stock[0]["recordValue"] is not None
    assert stock[0]["copyAgeSeconds"] >= 0
    (email,) = [row for row in found if row["entity"] == "Customer"]
    assert (email["masked"], email["recordValue"], email["copyValue"]) == (True, None, None)
    # The restocking agent reads inventory only: customers' drift is not its to see.
    bot = await run_query(drift_services, _DRIFT_QUERY, principal="restock-bot")
    assert bot.errors is None, bot.errors
    assert {row["entity"] for row in (bot.data or {})["drift"]} == {"InventoryItem"}
    refused = await run_query(
        drift_services, _DRIFT_QUERY, principal="restock-bot", variables={"entity": "Customer"}
    )
    assert refused.errors is not None
    assert refused.errors[0].extensions is not None
    assert refused.errors[0].extensions["code"] == "FORBIDDEN"


async def test_repair_is_a_dry_run_then_an_approved_audited_write(
    drift_services: Services,
) -> None:
    report = await sweep(drift_services)
    finding = _report(report, "InventoryItem").findings[0]
    fix = {"sku": finding.key, "available": int(finding.record_value or 0)}
    dry = _action(await submit(drift_services, "storefront.sync_stock", fix, dry_run=True))
    assert dry.status.value == "DRY_RUN"
    assert dry.diff == {
        "before": {"available": int(finding.copy_value or 0)},
        "after": {"available": fix["available"]},
    }
    pending = _action(await submit(drift_services, "storefront.sync_stock", fix))
    assert (pending.status.value, pending.rule) == ("PENDING_APPROVAL", "STOREFRONT_SYNC_REVIEW")
    waiting = _report(await sweep(drift_services), "InventoryItem")
    assert finding.key in [f.key for f in waiting.findings]  # nothing written before approval
    finn = as_principal(drift_services, "finn")
    applied = _action(await drift_services.writes.approve(pending.id, finn, "matches the ERP"))
    assert applied.status.value == "APPLIED"
    after = _report(await sweep(drift_services), "InventoryItem")
    assert finding.key not in [f.key for f in after.findings]
    async with drift_services.engine.connect() as connection:
        rows = await connection.execute(
            select(audit_events.c.event).where(audit_events.c.action_id == pending.id)
        )
        events = list(rows.scalars())
    assert "action.applied" in events


def test_cli_drift_exit_codes(
    drifting_estate: Drifting,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    estate: DemoEstate,
    capsys: pytest.CaptureFixture[str],
) -> None:
    environ = {
        **estate.environ(),
        "GATEHOUSE_ERP_URL": drifting_estate.erp_url,
        "GATEHOUSE_STOREFRONT_URL": drifting_estate.storefront.url,
        "GATEHOUSE_CONFIG": str(estate.template),
        "GATEHOUSE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
    }
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert main(["drift"]) == 1
    out = capsys.readouterr().out
    assert "SKU-0040  erp: " in out
    assert "  storefront: " in out
    assert "erp is authoritative" in out
    assert main(["drift", "--entity", "Order"]) == 0  # declares no copies
    assert main(["drift", "--entity", "Nothing"]) == 2
    monkeypatch.setenv("GATEHOUSE_STOREFRONT_URL", "http://127.0.0.1:9")
    assert main(["drift"]) == 3
    assert "UNKNOWN, not checked: source 'storefront'" in capsys.readouterr().out
    monkeypatch.delenv("GATEHOUSE_STOREFRONT_URL")
    assert main(["drift"]) == 2


def test_build_connectors_maps_copies_without_listing_them(drifting_estate: Drifting) -> None:
    connectors = build_connectors(drifting_estate.config)
    assert list(connectors["storefront"].entities()) == []
    assert list(connectors["ledger"].entities()) == []
    assert "InventoryItem" in connectors["erp"].entities()


async def test_periodic_sweep_runs_once_per_period_across_replicas(
    drifting_estate: Drifting, tmp_path: Path
) -> None:
    """Two replicas' chores over one PostgreSQL database: one sweeps, the other does not."""
    require_postgres()
    async with fresh_postgres_database("drift") as url:
        replicas = [services_for(drifting_estate.config, url) for _ in range(2)]
        for replica in replicas:
            await start(replica)
        try:
            ran = await asyncio.gather(*(sweep_if_due(r, every=3600) for r in replicas))
            assert sorted(report is not None for report in ran) == [False, True]
            assert await sweep_if_due(replicas[0], every=3600) is None  # not due for an hour
        finally:
            for replica in replicas:
                await replica.close()


def test_chores_include_the_sweep_only_when_configured(drifting_estate: Drifting) -> None:
    raw = drifting_estate.config.model_dump(by_alias=True)
    raw["drift"] = {"every": "5m"}
    config = GatewayConfig.model_validate(raw)
    assert config.drift.every == 300
    on = services_for(config, "sqlite+aiosqlite:///:memory:")
    off = services_for(drifting_estate.config, "sqlite+aiosqlite:///:memory:")
    assert "drift_sweep" in [chore.__name__ for chore in _chores(on)]
    assert "drift_sweep" not in [chore.__name__ for chore in _chores(off)]


async def test_sweep_malformed_copy_is_unknown_naming_the_source(
    drift_services: Services, drifting_estate: Drifting
) -> None:
    with sqlite3.connect(drifting_estate.ledger.parent / "storefront.db") as connection:
        connection.execute("UPDATE stock SET available = 'plenty' WHERE sku = 'SKU-0003'")
    report = await sweep(drift_services)
    stock = _report(report, "InventoryItem")
    assert stock.status is DriftStatus.UNKNOWN
    assert stock.error == "source 'storefront' answered with data that does not match its contract"
    assert _report(report, "Customer").status is DriftStatus.DRIFT


async def test_a_drifting_field_is_one_owner_alert_held_while_unreadable_and_never_shows_pii(
    drift_services: Services, drifting_estate: Drifting
) -> None:
    await sweep(drift_services)
    await drift_services.notifier.watch()
    opened = await _open_alerts(drift_services)
    assert set(opened) == {
        "InventoryItem.levels.available in storefront",
        "Customer.email in ledger",
    }
    stock = opened["InventoryItem.levels.available in storefront"]
    assert stock.kind == "drift"
    assert stock.owner == "Supply Chain <inventory@acme.example>"
    assert stock.evidence["records"] == len(SEEDED_OFF)
    email = opened["Customer.email in ledger"]
    assert "old.address@example.com" not in str(email.evidence) + email.summary
    # The storefront down: its drift cannot be told, so its alert neither resolves nor repeats.
    drifting_estate.storefront.stop()
    await sweep(drift_services)
    await drift_services.notifier.watch()
    still = await _open_alerts(drift_services)
    assert still["InventoryItem.levels.available in storefront"].id == stock.id
    drifting_estate.storefront.restart()


async def _open_alerts(services: Services) -> dict[str, Any]:
    async with services.engine.connect() as connection:
        found = await listed(connection, status=AlertStatus.OPEN, limit=50)
    return {alert.subject: alert for alert in found if alert.kind == "drift"}

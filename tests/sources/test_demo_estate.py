"""The demo estate on real parts: the ERP in SQLite and PostgreSQL, the CRM as a process."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import ColumnElement, Select, func, literal_column, select, table, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from sources.demo import CrmProcess, Estate, build_estate, create_erp, seed_crm
from sources.demo.data import CreditNote, Invoice, Order, OrderLine, Payment

POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
TABLE_COUNTS = ("locations", "accounts", "items", "stock_levels", "orders", "order_lines")


@pytest.fixture(scope="module")
def estate() -> Estate:
    return build_estate()


@pytest.fixture
async def postgres_schema() -> AsyncIterator[str]:
    """A fresh, uniquely named schema on the PostgreSQL server, dropped afterwards."""
    engine = create_async_engine(POSTGRES_URL, connect_args={"timeout": 5})
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except (OSError, SQLAlchemyError) as error:
        await engine.dispose()
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required under CI but {POSTGRES_URL} failed: {error}")
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is unreachable and CI is not set: {error}")
    schema = f"demo_estate_{uuid.uuid4().hex[:12]}"
    try:
        yield schema
    finally:
        async with engine.begin() as connection:
            await connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        await engine.dispose()


@pytest.fixture(scope="module")
def crm(tmp_path_factory: pytest.TempPathFactory, estate: Estate) -> Iterator[CrmProcess]:
    db_path = tmp_path_factory.mktemp("crm") / "crm.db"
    seed_crm(db_path, estate)
    with CrmProcess.start(db_path) as process:
        yield process


@pytest.fixture
def client(crm: CrmProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=crm.url, timeout=5) as http:
        yield http


# --- data ---------------------------------------------------------------------------------


def test_build_estate_same_seed_and_time_gives_identical_data(estate: Estate) -> None:
    assert build_estate(now=estate.as_of) == estate
    assert build_estate(seed=8, now=estate.as_of) != estate


def test_build_estate_defaults_give_consistent_order_to_cash(estate: Estate) -> None:
    assert (len(estate.customers), len(estate.items), len(estate.stock_levels)) == (300, 200, 600)
    assert [c.id for c in estate.customers[:2]] == ["C-00001", "C-00002"]
    assert all(o.total == sum(line.line_total for line in o.lines) for o in estate.orders)
    assert all(line.line_total == line.unit_price * line.quantity for line in _lines(estate))
    currency = {account.customer_id: account.currency for account in estate.accounts}
    ledger: list[Order | Invoice | Payment | CreditNote] = [
        *estate.orders,
        *estate.invoices,
        *estate.payments,
        *estate.credit_notes,
    ]
    assert all(entry.currency == currency[entry.customer_id] for entry in ledger)
    invoiced = {invoice.order_id for invoice in estate.invoices}
    shipped = {o.id for o in estate.orders if o.status in ("shipped", "delivered")}
    assert invoiced == shipped
    stamps = [o.updated_at for o in estate.orders] + [p.received_at for p in estate.payments]
    assert max(stamps) <= estate.as_of


def test_build_estate_defaults_keep_almost_everyone_within_credit(estate: Estate) -> None:
    balances = _expected_balances(estate, estate.as_of.date())
    limits = {account.customer_id: account.credit_limit for account in estate.accounts}
    over_limit = [cid for cid, (outstanding, _) in balances.items() if outstanding > limits[cid]]
    overdue = [cid for cid, (_, overdue) in balances.items() if overdue > 0]
    assert len(over_limit) <= 3
    assert len(overdue) >= 10
    assert min(outstanding for outstanding, _ in balances.values()) >= 0


# --- ERP ----------------------------------------------------------------------------------


async def test_create_erp_sqlite_seeds_every_table_quickly(tmp_path: Path, estate: Estate) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'erp.db'}"
    started = time.perf_counter()
    await create_erp(url, estate)
    assert time.perf_counter() - started < 3
    await create_erp(url, estate)  # re-runnable: drops and re-creates

    counts = await _counts(url, schema=None)

    assert counts["items"] == 200
    assert counts["stock_levels"] == 600
    assert counts["order_lines"] == len(list(_lines(estate)))
    assert counts["orders"] == len(estate.orders)


async def test_create_erp_sqlite_balances_view_matches_ledger(
    tmp_path: Path, estate: Estate
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'erp.db'}"
    await create_erp(url, estate)

    await _assert_views_match_estate(url, schema=None, estate=estate)


@pytest.mark.postgres
async def test_create_erp_postgres_balances_view_matches_ledger(
    postgres_schema: str, estate: Estate
) -> None:
    await create_erp(POSTGRES_URL, estate, schema=postgres_schema)
    await create_erp(POSTGRES_URL, estate, schema=postgres_schema)  # re-runnable

    counts = await _counts(POSTGRES_URL, schema=postgres_schema)

    assert (counts["items"], counts["stock_levels"]) == (200, 600)
    await _assert_views_match_estate(POSTGRES_URL, schema=postgres_schema, estate=estate)


# --- CRM ----------------------------------------------------------------------------------


def test_crm_get_known_id_returns_customer_with_etag(client: httpx.Client, estate: Estate) -> None:
    response = client.get("/api/customers/C-00001")

    body = response.json()
    seeded = estate.customers[0]
    assert response.status_code == 200
    assert response.headers["ETag"] == f'"{body["etag"]}"'
    assert set(body) == {
        "id",
        "name",
        "email",
        "phone",
        "region",
        "segment",
        "contacts",
        "updated_at",
        "etag",
    }
    assert (body["id"], body["name"], body["email"]) == (seeded.id, seeded.name, seeded.email)
    assert body["contacts"] == [vars(contact) for contact in seeded.contacts]
    assert datetime.fromisoformat(body["updated_at"]) == seeded.updated_at


def test_crm_get_unknown_id_returns_404_not_found(client: httpx.Client) -> None:
    response = client.get("/api/customers/C-99999")

    assert (response.status_code, response.json()) == (404, {"error": "not_found"})


def test_crm_batch_ids_returns_found_ones_in_order(client: httpx.Client) -> None:
    response = client.get("/api/customers", params={"ids": "C-00003,C-99999,C-00001"})

    assert response.status_code == 200
    assert [customer["id"] for customer in response.json()["data"]] == ["C-00003", "C-00001"]


def test_crm_batch_over_500_ids_returns_400(client: httpx.Client) -> None:
    ids = ",".join(f"C-{number:05d}" for number in range(1, 502))

    response = client.get("/api/customers", params={"ids": ids})

    assert response.status_code == 400
    assert response.json()["error"] == "too_many_ids"


def test_crm_search_mixed_case_query_returns_page_and_total(
    client: httpx.Client, estate: Estate
) -> None:
    matches = sorted(c.id for c in estate.customers if "bakery" in f"{c.name} {c.email}".lower())

    response = client.get("/api/customers", params={"q": "BaKeRy", "limit": 3, "offset": 1})

    body = response.json()
    assert body["total"] == len(matches) > 4
    assert [customer["id"] for customer in body["data"]] == matches[1:4]


def test_crm_patch_stale_if_match_returns_412_with_current_etag(client: httpx.Client) -> None:
    stale = client.get("/api/customers/C-00010").json()["etag"]
    first = client.patch(
        "/api/customers/C-00010", json={"phone": "+49 30 1111111"}, headers={"If-Match": stale}
    )

    second = client.patch(
        "/api/customers/C-00010", json={"phone": "+49 30 2222222"}, headers={"If-Match": stale}
    )

    assert first.status_code == 200
    assert first.json()["etag"] != stale
    assert second.status_code == 412
    assert second.json() == {"error": "precondition_failed", "etag": first.json()["etag"]}
    assert client.get("/api/customers/C-00010").json()["phone"] == "+49 30 1111111"


def test_crm_patch_repeated_idempotency_key_replays_without_reapplying(
    client: httpx.Client,
) -> None:
    headers = {"Idempotency-Key": f"key-{uuid.uuid4()}"}
    contacts = [{"name": "Ana Silva", "email": "ana.silva@example.pt", "role": "Buyer"}]
    first = client.patch("/api/customers/C-00011", json={"contacts": contacts}, headers=headers)

    replay = client.patch("/api/customers/C-00011", json={"contacts": contacts}, headers=headers)
    reused = client.patch("/api/customers/C-00011", json={"name": "Other"}, headers=headers)

    assert first.status_code == replay.status_code == 200
    assert replay.json() == first.json()
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert client.get("/api/customers/C-00011").json()["etag"] == first.json()["etag"]
    assert (reused.status_code, reused.json()["error"]) == (422, "idempotency_key_reused")


@pytest.mark.parametrize(
    "body",
    [
        {"phone": 42},
        {"region": "EU-EAST"},
        {"contacts": [{"name": "No Email"}]},
        {"name": None},
        {"nickname": "x"},
        {},
    ],
)
def test_crm_patch_invalid_body_returns_422(client: httpx.Client, body: dict[str, Any]) -> None:
    response = client.patch("/api/customers/C-00012", json=body)

    assert (response.status_code, response.json()["error"]) == (422, "invalid_request")


def test_crm_process_restart_keeps_port_and_data(
    tmp_path: Path, estate: Estate, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_crm(tmp_path / "crm.db", estate)
    monkeypatch.chdir(tmp_path)  # the child must not depend on the caller's directory
    with CrmProcess.start(Path("crm.db")) as crm, httpx.Client(base_url=crm.url) as http:
        url = crm.url
        http.patch("/api/customers/C-00020", json={"segment": "enterprise"})

        crm.restart()

        assert crm.url == url
        assert http.get("/health").json() == {"status": "ok"}
        assert http.get("/api/customers/C-00020").json()["segment"] == "enterprise"
        crm.stop()
        assert not crm.running
        with pytest.raises(httpx.ConnectError):
            http.get("/health")


def test_crm_process_missing_database_raises_with_child_stderr(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="no CRM database at"):
        CrmProcess.start(tmp_path / "missing.db")


# --- helpers ------------------------------------------------------------------------------


def _lines(estate: Estate) -> Iterator[OrderLine]:
    for order in estate.orders:
        yield from order.lines


def _expected_balances(estate: Estate, today: date) -> dict[str, tuple[Decimal, Decimal]]:
    """Outstanding and overdue per customer, with payments applied to the oldest debt first."""
    invoiced = {account.customer_id: Decimal(0) for account in estate.accounts}
    overdue = dict(invoiced)
    settled = dict(invoiced)
    for invoice in estate.invoices:
        invoiced[invoice.customer_id] += invoice.amount
        if invoice.due_date < today:
            overdue[invoice.customer_id] += invoice.amount
    settlements: list[Payment | CreditNote] = [*estate.payments, *estate.credit_notes]
    for entry in settlements:
        settled[entry.customer_id] += entry.amount
    balances = {}
    for customer_id, amount in invoiced.items():
        outstanding = amount - settled[customer_id]
        due = min(max(overdue[customer_id] - settled[customer_id], Decimal(0)), outstanding)
        balances[customer_id] = (outstanding, due)
    return balances


def _latest_change(estate: Estate) -> dict[str, datetime]:
    latest = {account.customer_id: account.updated_at for account in estate.accounts}
    changes = [(i.customer_id, i.updated_at) for i in estate.invoices]
    changes += [(p.customer_id, p.received_at) for p in estate.payments]
    changes += [(n.customer_id, n.issued_at) for n in estate.credit_notes]
    for customer_id, changed_at in changes:
        latest[customer_id] = max(latest[customer_id], changed_at)
    return latest


async def _counts(url: str, *, schema: str | None) -> dict[str, int]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            return {
                name: (
                    await connection.execute(_select_all(name, schema, func.count()))
                ).scalar_one()
                for name in TABLE_COUNTS
            }
    finally:
        await engine.dispose()


async def _assert_views_match_estate(url: str, *, schema: str | None, estate: Estate) -> None:
    engine = create_async_engine(url)
    try:
        await _assert_balances(engine, schema, estate)
        await _assert_stock_positions(engine, schema, estate)
    finally:
        await engine.dispose()


async def _assert_balances(engine: AsyncEngine, schema: str | None, estate: Estate) -> None:
    async with engine.connect() as connection:
        today = (await connection.execute(text("SELECT CURRENT_DATE"))).scalar_one()
        rows = (await connection.execute(_select_all("customer_balances", schema))).all()
    expected = _expected_balances(estate, date.fromisoformat(str(today)))
    latest = _latest_change(estate)
    limits = {account.customer_id: account.credit_limit for account in estate.accounts}
    assert len(rows) == len(expected) == 300
    for row in rows:
        outstanding, overdue = expected[row.customer_id]
        assert Decimal(row.outstanding_cents) / 100 == outstanding
        assert Decimal(row.overdue_cents) / 100 == overdue
        assert Decimal(row.available_credit_cents) / 100 == limits[row.customer_id] - outstanding
        assert _as_utc(row.updated_at) == latest[row.customer_id]
    assert sum(1 for row in rows if row.overdue_cents > 0) >= 10


async def _assert_stock_positions(engine: AsyncEngine, schema: str | None, estate: Estate) -> None:
    async with engine.connect() as connection:
        rows = (await connection.execute(_select_all("stock_positions", schema))).all()
    below = {
        (s.sku, s.location) for s in estate.stock_levels if s.on_hand - s.reserved < s.reorder_point
    }
    assert len(rows) == 600
    assert {(row.sku, row.location) for row in rows if row.below_reorder_point == 1} == below
    assert all(row.available == row.on_hand - row.reserved for row in rows)
    assert all(_as_utc(row.updated_at) <= estate.as_of for row in rows)


def _select_all(name: str, schema: str | None, *columns: ColumnElement[Any]) -> Select[Any]:
    """SELECT * (or the given columns) FROM a table or view named at run time."""
    return select(*(columns or (literal_column("*"),))).select_from(table(name, schema=schema))


def _as_utc(value: str | datetime) -> datetime:
    """A view's timestamp as aware UTC: text on SQLite (stored UTC, no offset), aware on PG."""
    parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

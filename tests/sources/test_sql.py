"""The SQL connector over the demo ERP, in the session's SQLite file and in a PostgreSQL schema."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from gateway.config import GatewayConfig
from gateway.connectors import build_connectors
from gateway.demo import DemoEstate
from sources.connector import Connector
from sources.demo import build_estate, create_erp
from sources.errors import SourceDataError, SourceTimeout, SourceUnavailable
from sources.records import ChildMapping, FieldMapping
from sources.sql import SqlConnector, SqlEntity
from tests.factories import (
    POSTGRES_URL,
    drop_schema,
    new_schema_name,
    require_postgres,
    with_source,
)

LOCATIONS = ["WH-AMS", "WH-BER", "WH-MAD"]


@dataclass(frozen=True)
class Erp:
    """Where an ERP database is: a URL, and on PostgreSQL the schema that holds it."""

    url: str
    schema: str | None = None

    async def execute(self, sql: str, **params: Any) -> list[Any]:
        """Run raw SQL in the ERP (in its schema) and return the rows, if any."""
        args = {"server_settings": {"search_path": self.schema}} if self.schema else {}
        engine = create_async_engine(self.url, connect_args=args)
        try:
            async with engine.begin() as connection:
                result = await connection.execute(text(sql), params)
                return list(result.all()) if result.returns_rows else []
        finally:
            await engine.dispose()

    async def keys(self, sql: str, **params: Any) -> list[str]:
        """The first column of a raw query."""
        return [row[0] for row in await self.execute(sql, **params)]


async def erp_connector(config: GatewayConfig, erp: Erp, **changes: Any) -> Connector:
    """The ERP connector the gateway builds from the demo config, pointed at `erp`."""
    changed = with_source(config, "erp", url=erp.url, db_schema=erp.schema, **changes)
    connectors = build_connectors(changed)
    await connectors.pop("crm").close()
    return connectors["erp"]


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def erp(request: pytest.FixtureRequest, estate: DemoEstate) -> Iterator[Erp]:
    """The session's SQLite ERP, or a fresh PostgreSQL schema seeded for this module."""
    if request.param == "sqlite":
        yield Erp(estate.erp_url)
        return
    require_postgres()
    schema = new_schema_name()
    try:
        asyncio.run(create_erp(POSTGRES_URL, build_estate(), schema=schema))
        yield Erp(POSTGRES_URL, schema)
    finally:
        drop_schema(POSTGRES_URL, schema)


@pytest.fixture
def writable(erp: Erp, tmp_path: Path) -> Erp:
    """An ERP a test may change: a copy of the SQLite file, or the module's own PG schema."""
    if erp.schema:
        return erp
    copy = tmp_path / "erp.db"
    shutil.copyfile(erp.url.removeprefix("sqlite+aiosqlite:///"), copy)
    return Erp(f"sqlite+aiosqlite:///{copy}")


@pytest.fixture
async def source(config: GatewayConfig, erp: Erp) -> AsyncIterator[Connector]:
    connector = await erp_connector(config, erp)
    yield connector
    await connector.close()


async def page_keys(source: Connector, entity: str, **options: Any) -> list[str]:
    page = await source.page(entity, **{"filters": {}, "search": None, "after": None} | options)
    assert not page.has_more
    return [record.key for record in page.records]


# --- reads ---------------------------------------------------------------------------------


async def test_read_item_returns_its_levels_in_one_call(source: Connector, erp: Erp) -> None:
    record = await source.read("InventoryItem", "SKU-0001")

    assert record is not None
    levels = [(level["location"], level["on_hand"]) for level in record.data["levels"]]
    raw = await erp.execute(
        "SELECT location, on_hand FROM stock_levels WHERE sku = 'SKU-0001' ORDER BY location"
    )
    assert levels == [tuple(row) for row in raw]
    assert [location for location, _ in levels] == LOCATIONS
    assert record.updated_at is not None
    assert record.updated_at.utcoffset() == timedelta(0)
    assert source.stats.calls == 1


async def test_read_many_50_skus_returns_only_existing_in_one_call(source: Connector) -> None:
    skus = [f"SKU-{number:04d}" for number in range(1, 51)]

    found = await source.read_many("InventoryItem", [*skus, "SKU-9999"])

    assert sorted(found) == skus
    assert all(len(record.data["levels"]) == 3 for record in found.values())
    assert source.stats.calls == 1


async def test_read_unknown_key_returns_none(source: Connector) -> None:
    assert await source.read("Order", "nope") is None
    assert source.stats.healthy is True


async def test_read_order_returns_lines_by_line_no(source: Connector, erp: Erp) -> None:
    [order_id] = await erp.keys(
        "SELECT order_id FROM order_lines GROUP BY order_id ORDER BY COUNT(*) DESC, order_id"
        " LIMIT 1"
    )

    record = await source.read("Order", order_id)

    assert record is not None
    lines = record.data["lines"]
    assert len(lines) > 1
    assert [line["line_no"] for line in lines] == sorted(line["line_no"] for line in lines)
    assert sum(line["line_total"] for line in lines) == record.data["total"]


async def test_page_balances_are_exact_decimals_with_available_credit(
    source: Connector, erp: Erp
) -> None:
    page = await source.page("Balance", filters={}, search=None, limit=500, after=None)
    raw = await erp.execute("SELECT customer_id, outstanding_cents FROM customer_balances")

    money = ("credit_limit", "outstanding", "overdue", "available_credit")
    for record in page.records:
        values = [record.data[name] for name in money]
        assert all(isinstance(value, Decimal) for value in values)
        assert all(value.as_tuple().exponent == -2 for value in values)
        assert record.data["available_credit"] == values[0] - values[1]
    outstanding = {record.key: record.data["outstanding"] for record in page.records}
    assert outstanding == {key: Decimal(cents).scaleb(-2) for key, cents in raw}
    assert any(outstanding.values())


async def test_page_walk_of_37_visits_all_200_items_once(source: Connector, erp: Erp) -> None:
    keys: list[str] = []
    more: list[bool] = []
    after = None
    while not more or more[-1]:
        page = await source.page("InventoryItem", filters={}, search=None, limit=37, after=after)
        assert len(page.positions) == len(page.records)
        keys += [record.key for record in page.records]
        more.append(page.has_more)
        after = page.positions[-1]

    assert keys == await erp.keys("SELECT sku FROM items ORDER BY sku")
    assert len(keys) == len(set(keys)) == 200
    assert more == [True] * 5 + [False]
    assert source.stats.calls == 6


# --- filters and search --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entity", "filters", "expected"),
    [
        (
            "Order",
            {"customer_id": "C-00002"},
            "SELECT id FROM orders WHERE customer_id = 'C-00002'",
        ),
        (
            "Order",
            {"status": ["open", "cancelled"]},
            "SELECT id FROM orders WHERE status IN ('open', 'cancelled')",
        ),
        (
            "InventoryItem",
            {"sku": ["SKU-0003", "SKU-0001", "SKU-9999"]},
            "SELECT sku FROM items WHERE sku IN ('SKU-0001', 'SKU-0003')",
        ),
        ("InventoryItem", {"active": False}, "SELECT sku FROM items WHERE NOT active"),
        (
            "InventoryItem",
            {"levels.location": "WH-BER", "levels.below_reorder_point": True},
            "SELECT sku FROM stock_levels"
            " WHERE location = 'WH-BER' AND on_hand - reserved < reorder_point",
        ),
    ],
)
async def test_page_filters_return_exactly_the_matching_rows(
    source: Connector, erp: Erp, entity: str, filters: dict[str, object], expected: str
) -> None:
    keys = await page_keys(source, entity, filters=filters, limit=500)

    raw = await erp.keys(expected)
    assert raw
    assert sorted(keys) == sorted(raw)
    assert len(keys) == len(set(keys))


async def test_page_search_ignores_case_on_name_and_sku(source: Connector) -> None:
    item = await source.read("InventoryItem", "SKU-0001")
    assert item is not None
    name = item.data["name"]

    for text_ in (name[2:12].swapcase(), name.upper(), "sku-0001"):
        assert "SKU-0001" in await page_keys(source, "InventoryItem", search=text_, limit=500)


async def test_page_search_treats_percent_and_underscore_literally(source: Connector) -> None:
    item = await source.read("InventoryItem", "SKU-0001")
    assert item is not None
    words = item.data["name"].split(" ")
    wildcards = ["%", "_", f"{words[0]}%{words[-1]}", "_".join(words), "SKU_0001"]

    for search in wildcards:
        assert await page_keys(source, "InventoryItem", search=search, limit=500) == []


# --- versions ------------------------------------------------------------------------------


async def test_read_version_changes_with_a_level_and_only_then(
    config: GatewayConfig, writable: Erp
) -> None:
    source = await erp_connector(config, writable)
    change = "UPDATE stock_levels SET on_hand = on_hand + :by WHERE sku = 'SKU-0001'"

    async def versions() -> dict[str, str]:
        found = await source.read_many("InventoryItem", ["SKU-0001", "SKU-0002"])
        return {key: record.version for key, record in found.items()}

    try:
        before, again = await versions(), await versions()
        await writable.execute(change, by=1)
        changed = await versions()
        await writable.execute(change, by=-1)
        restored = await versions()
    finally:
        await source.close()

    assert again == before
    assert changed["SKU-0001"] != before["SKU-0001"]
    assert changed["SKU-0002"] == before["SKU-0002"]
    assert restored == before


# --- faults --------------------------------------------------------------------------------


async def test_read_unreachable_database_raises_unavailable(config: GatewayConfig) -> None:
    # PostgreSQL only: a failed aiosqlite connect leaves a worker thread that may report to
    # the test's event loop after it has closed (an aiosqlite race, not the connector's).
    url = "postgresql+asyncpg://postgres@127.0.0.1:1/test"
    source = await erp_connector(config, Erp(url), timeout=2)
    try:
        with pytest.raises(SourceUnavailable, match="source 'erp'") as failure:
            await source.read("InventoryItem", "SKU-0001")
    finally:
        await source.close()

    assert failure.value.source == "erp"
    assert (source.stats.calls, source.stats.errors) == (1, 1)
    assert source.stats.healthy is False


@pytest.mark.postgres
@pytest.mark.parametrize("erp", ["postgres"], indirect=True)
async def test_read_slower_than_timeout_raises_timeout_then_recovers(erp: Erp) -> None:
    await erp.execute(
        "CREATE OR REPLACE VIEW slow_answers AS SELECT 'a'::text AS id FROM pg_sleep(2)"
    )
    fields = (FieldMapping("id", "id"),)
    slow = SqlEntity("Slow", table="slow_answers", key="id", fields=fields, schema=erp.schema)
    source = SqlConnector("erp", url=erp.url, entities=[slow], timeout=0.3)
    try:
        with pytest.raises(SourceTimeout, match="source 'erp'"):
            await source.read("Slow", "a")
        await source.ping()
    finally:
        await source.close()

    assert source.stats.seconds < 1.5
    assert (source.stats.errors, source.stats.healthy) == (1, True)


THING = SqlEntity(
    "Thing",
    table="things",
    key="id",
    fields=(FieldMapping("id", "id"), FieldMapping("count", "count", type="int")),
    children=(
        ChildMapping(
            "parts",
            at="parts",
            parent_key="thing_id",
            fields=(FieldMapping("qty", "qty", type="int"),),
        ),
    ),
)


@pytest.fixture
async def things(tmp_path: Path) -> AsyncIterator[SqlConnector]:
    """A connector over a SQLite file with a malformed parent row and a malformed child row."""
    path = tmp_path / "things.db"
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.executescript(
            "CREATE TABLE things (id TEXT PRIMARY KEY, count INTEGER);"
            "CREATE TABLE parts (thing_id TEXT, qty INTEGER);"
            "INSERT INTO things VALUES ('good', 1), ('bad', 'abc'), ('bad-part', 2);"
            "INSERT INTO parts VALUES ('good', 3), ('bad-part', 'abc');"
        )
    source = SqlConnector("erp", url=f"sqlite+aiosqlite:///{path}", entities=[THING])
    yield source
    await source.close()


@pytest.mark.parametrize(
    ("key", "field"), [("bad", "Thing.count"), ("bad-part", "Thing.parts.qty")]
)
async def test_read_malformed_row_raises_data_error_naming_field(
    things: SqlConnector, key: str, field: str
) -> None:
    good = await things.read("Thing", "good")
    assert good is not None
    assert good.data == {"id": "good", "count": 1, "parts": [{"qty": 3}]}

    with pytest.raises(SourceDataError) as failure:
        await things.read("Thing", key)
    assert failure.value.field == field
    assert field in str(failure.value)


async def test_read_malformed_row_counts_as_error(things: SqlConnector) -> None:
    with pytest.raises(SourceDataError):
        await things.read("Thing", "bad")
    assert (things.stats.errors, things.stats.healthy) == (1, False)


async def test_read_many_scaled_decimals_add_up_exactly(
    config: GatewayConfig, writable: Erp
) -> None:
    await writable.execute("DROP TABLE IF EXISTS amounts")
    await writable.execute("CREATE TABLE amounts (id VARCHAR(8) PRIMARY KEY, cents BIGINT)")
    await writable.execute(
        "INSERT INTO amounts VALUES ('a', 10), ('b', 20), ('c', -5), ('d', 123456789012345678)"
    )
    amount = FieldMapping("amount", "cents", type="decimal", scale=2)
    fields = (FieldMapping("id", "id"), amount)
    entity = SqlEntity("Amount", "amounts", "id", fields, schema=writable.schema)
    source = SqlConnector("erp", url=writable.url, entities=[entity])
    try:
        found = await source.read_many("Amount", ["a", "b", "c", "d"])
    finally:
        await source.close()

    values = {key: record.data["amount"] for key, record in found.items()}
    assert str(values["a"] + values["b"]) == "0.30"
    assert values == {
        "a": Decimal("0.10"),
        "b": Decimal("0.20"),
        "c": Decimal("-0.05"),
        "d": Decimal("1234567890123456.78"),
    }

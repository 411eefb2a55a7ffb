"""The tryton connector over a real seeded Tryton on PostgreSQL: the estate's entities as
tryton.toml maps them, read with Tryton's own context (company, warehouses)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal

import pytest

from gateway.config import GatewayConfig
from gateway.connectors import build_connectors
from sources.errors import SourceDataError
from sources.records import FieldMapping
from sources.tryton.connector import TrytonConnector, TrytonEntity
from sources.tryton.rpc import TrytonRpc
from sources.tryton_estate.server import TrytonServer
from tests.tryton.conftest import StubTryton
from tests.tryton.estate import tryton_config, tryton_environ

pytestmark = pytest.mark.postgres


@pytest.fixture
def config(tryton_server: TrytonServer) -> GatewayConfig:
    return tryton_config(tryton_server)


@pytest.fixture
async def erp(config: GatewayConfig, tryton_server: TrytonServer) -> AsyncIterator[TrytonConnector]:
    connector = build_connectors(config, tryton_environ(tryton_server))["erp"]
    assert isinstance(connector, TrytonConnector)
    yield connector
    await connector.close()


async def test_customer_read_from_party_with_contact_mechanisms(erp: TrytonConnector) -> None:
    record = await erp.read("Customer", "C-00001")

    assert record is not None
    assert record.data["name"] == "Aurora Bakery"
    assert record.data["email"] == "orders@aurora-bakery.example"
    assert record.data["phone"] == "+32 2 555 01 01"
    assert {c["role"] for c in record.data["contacts"]} == {"email", "phone"}
    assert record.version == record.data["etag"]  # Tryton's _timestamp
    assert isinstance(record.updated_at, datetime)


async def test_customer_unknown_key_is_none_and_read_many_one_call(erp: TrytonConnector) -> None:
    assert await erp.read("Customer", "C-99999") is None
    calls = erp.stats.calls

    found = await erp.read_many("Customer", ["C-00002", "C-00003", "C-99999"])

    assert sorted(found) == ["C-00002", "C-00003"]
    assert erp.stats.calls == calls + 1


async def test_inventory_item_quantity_per_warehouse(erp: TrytonConnector) -> None:
    record = await erp.read("InventoryItem", "SKU-1001")

    assert record is not None
    assert record.data["name"] == "Steel Hammer"
    assert record.data["unit_price"] == Decimal("24.90")
    assert record.data["currency"] == "EUR"
    (level,) = record.data["levels"]
    # 120 counted in, 10 on the seeded confirmed sale (shipped or still to go)
    assert level["location"] == "WH"
    assert level["on_hand"] in (110, 120)
    assert level["available"] == 110


async def test_order_read_from_sale_with_lines(erp: TrytonConnector) -> None:
    page = await erp.page("Order", filters={}, search=None, limit=5, after=None)
    (order,) = [r for r in page.records if r.key == "SO-00001"]

    assert order.data["customer_id"] == "C-00002"
    assert order.data["status"] == "open"
    assert order.data["currency"] == "EUR"
    assert [(line["sku"], line["quantity"]) for line in order.data["lines"]] == [
        ("SKU-1001", 10),
        ("SKU-1003", 40),
    ]
    assert order.data["total"] == sum(line["line_total"] for line in order.data["lines"])


async def test_balance_receivable_and_credit_left(erp: TrytonConnector) -> None:
    record = await erp.read("Balance", "C-00002")
    unlimited = await erp.read("Balance", "C-00004")

    assert record is not None
    assert record.data["currency"] == "EUR"
    assert record.data["credit_limit"] == Decimal(20000)
    assert record.data["outstanding"] > 0  # the seeded sale's posted invoice
    assert record.data["available_credit"] < Decimal(20000) - record.data["outstanding"] + 1
    assert unlimited is not None
    assert unlimited.data["credit_limit"] is None


async def test_customer_page_in_key_order_with_search_and_cursor(erp: TrytonConnector) -> None:
    first = await erp.page("Customer", filters={}, search=None, limit=3, after=None)
    second = await erp.page("Customer", filters={}, search=None, limit=3, after=first.positions[-1])
    searched = await erp.page("Customer", filters={}, search="bakery", limit=10, after=None)

    assert [r.key for r in first.records] == ["C-00001", "C-00002", "C-00003"]
    assert first.has_more
    assert [r.key for r in second.records] == ["C-00004", "C-00005", "C-00006"]
    assert [r.key for r in searched.records] == ["C-00001"]


async def test_answer_missing_a_field_is_data_error_naming_it(stub_tryton: StubTryton) -> None:
    stub_tryton.answer_json({"id": 1, "result": [2, "token", None]})
    stub_tryton.answer_json({"id": 2, "result": {"company": 1}})
    stub_tryton.answer_json({"id": 3, "result": [{"id": 1, "code": "C-00001"}]})  # no name
    entity = TrytonEntity(
        name="Customer",
        model="party.party",
        key="id",
        fields=(FieldMapping("id", "code"), FieldMapping("name", "name")),
    )
    rpc = TrytonRpc("erp", url=stub_tryton.url, database="db", user="u", password="p")
    connector = TrytonConnector("erp", rpc=rpc, entities=[entity])
    try:
        with pytest.raises(SourceDataError, match=r"field Customer\.name: missing"):
            await connector.read("Customer", "C-00001")
    finally:
        await connector.close()
    assert connector.stats.errors == 1

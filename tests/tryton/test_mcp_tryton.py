"""MCP over the Tryton estate: the same tools as over the demo estate, answering from Tryton,
through the SDK's own client over streamable HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from gateway.app import create_app
from gateway.catalog import action_kinds
from gateway.config import load_config
from gateway.demo import CONFIG_TEMPLATE, DemoEstate, new_keys
from gateway.mcp import tool_name
from gateway.settings import Settings
from sources.tryton_estate.server import TrytonServer
from tests.factories import LiveServer, live_server
from tests.test_mcp import agent, tool_names
from tests.tryton.estate import tryton_config, tryton_environ

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def keys() -> dict[str, str]:
    return new_keys()


@pytest.fixture(scope="module")
def server(
    tryton_server: TrytonServer, keys: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    database = tmp_path_factory.mktemp("mcp-tryton") / "gatehouse.db"
    settings = Settings(database_url=f"sqlite+aiosqlite:///{database}")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in tryton_environ(tryton_server).items():
            patch.setenv(name, value)
        app = create_app(settings, tryton_config(tryton_server, keys))
        with live_server(app) as running:
            yield running


async def test_mcp_tryton_offers_the_demo_estates_tools(
    server: LiveServer, tryton_server: TrytonServer, keys: dict[str, str], estate: DemoEstate
) -> None:
    demo = load_config(CONFIG_TEMPLATE, environ=estate.environ())
    tryton = tryton_config(tryton_server, keys)
    async with agent(server, keys["olivia"]) as client:
        offered = await tool_names(client)

    # The order-to-cash writes; the demo's storefront (its copy of stock and the action that
    # repairs it) is a system of the demo estate alone.
    demo_writes = {tool_name(kind) for kind in action_kinds(demo.actions)}
    demo_writes -= {"sync_storefront_stock"}
    assert {tool_name(kind) for kind in action_kinds(tryton.actions)} == demo_writes
    assert demo_writes <= offered
    assert {"get_customer", "get_inventory", "get_order", "get_balance", "can_i"} <= offered


async def test_mcp_tryton_read_tools_answer_from_tryton_with_freshness(
    server: LiveServer, keys: dict[str, str]
) -> None:
    calls: list[tuple[str, dict[str, Any], str]] = [
        ("get_customer", {"customer_id": "C-00001"}, "customer"),
        ("get_inventory", {"skus": ["SKU-1001", "SKU-1002"]}, "inventory"),
        ("get_order", {"order_id": "SO-00001", "max_age_seconds": 0}, "order"),
        ("list_customer_orders", {"customer_id": "C-00002"}, "orders"),
        ("get_balance", {"customer_id": "C-00002"}, "balance"),
    ]
    async with agent(server, keys["support-bot"]) as client:
        for name, arguments, root in calls:
            result = await client.call_tool(name, arguments)
            assert not result.is_error, (name, result.content)
            data = result.structured_content["data"][root]
            node = data["edges"][0]["node"] if "edges" in data else data
            assert node["freshness"]["system"] == "erp", name
        customer = await client.call_tool("get_customer", {"customer_id": "C-00001"})
        assert customer.structured_content["data"]["customer"]["email"] is None  # no pii grant
        assert "customer.email" in customer.structured_content["masked"]


async def test_mcp_tryton_write_tool_applies_in_tryton(
    server: LiveServer, keys: dict[str, str]
) -> None:
    arguments = {"sku": "SKU-1005", "location": "WH", "delta": 4, "reason": "inbound"}
    async with agent(server, keys["restock-bot"]) as client:
        result = await client.call_tool("adjust_inventory", arguments)
        assert not result.is_error, result.content
        assert result.structured_content["status"] == "APPLIED"
        read = await client.call_tool("get_inventory", {"skus": ["SKU-1005"]})
    assert not read.is_error

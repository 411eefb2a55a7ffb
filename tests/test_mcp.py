"""The MCP server, through the SDK's own client, over streamable HTTP and over stdio."""

from __future__ import annotations

import shutil
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from gateway.app import create_app
from gateway.demo import CONFIG_TEMPLATE, DemoEstate
from gateway.settings import Settings
from tests.factories import LiveServer, live_server, with_source

ADJUST = {"sku": "SKU-0005", "location": "WH-AMS", "reason": "inbound pallet"}


@pytest.fixture(scope="module")
def erp_copy(estate: DemoEstate, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A writable copy of the session's ERP, so writes here do not disturb other tests."""
    target = tmp_path_factory.mktemp("mcp-erp") / "erp.db"
    shutil.copy(estate.erp_url.split("///", 1)[1], target)
    return f"sqlite+aiosqlite:///{target}"


@pytest.fixture(scope="module")
def database_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mcp-gateway") / "gatehouse.db"


@pytest.fixture(scope="module")
def server(estate: DemoEstate, erp_copy: str, database_file: Path) -> Iterator[LiveServer]:
    config = with_source(estate.config(), "erp", url=erp_copy)
    settings = Settings(database_url=f"sqlite+aiosqlite:///{database_file}")
    with live_server(create_app(settings, config)) as running:
        yield running


@asynccontextmanager
async def agent(server: LiveServer, key: str, mode: str = "auto") -> AsyncIterator[Client]:
    """An MCP client session over streamable HTTP with the given API key."""
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=30)
    async with (
        http,
        Client(streamable_http_client(f"{server.url}/mcp", http_client=http), mode=mode) as client,
    ):
        yield client


async def tool_names(client: Client) -> set[str]:
    return {tool.name for tool in (await client.list_tools()).tools}


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_each_agent_lists_only_the_tools_its_policy_could_allow(
    server: LiveServer, estate: DemoEstate, mode: str
) -> None:
    async with agent(server, estate.keys["restock-bot"], mode) as client:
        restock = await tool_names(client)
    async with agent(server, estate.keys["support-bot"], mode) as client:
        support = await tool_names(client)
    assert {"get_inventory", "adjust_inventory", "get_action", "can_i"} <= restock
    assert not {"get_customer", "record_payment", "place_order", "get_balance"} & restock
    assert {
        "get_customer",
        "find_customers",
        "get_order",
        "list_customer_orders",
        "get_balance",
        "update_customer_contact",
        "issue_credit_note",
        "cancel_order",
    } <= support
    assert not {"record_payment", "adjust_inventory", "place_order"} & support


async def test_write_tool_schema_is_the_action_model(
    server: LiveServer, estate: DemoEstate
) -> None:
    async with agent(server, estate.keys["restock-bot"]) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    schema = tools["adjust_inventory"].input_schema
    assert {
        "sku",
        "location",
        "delta",
        "reason",
        "dry_run",
        "idempotency_key",
        "expected_version",
    } == set(schema["properties"])
    assert set(schema["required"]) == {"sku", "location", "delta", "reason"}
    assert schema["additionalProperties"] is False
    assert "PENDING_APPROVAL" in (tools["adjust_inventory"].description or "")


async def test_every_read_tool_answers_with_freshness(
    server: LiveServer, estate: DemoEstate
) -> None:
    calls: list[tuple[str, dict[str, Any], str]] = [
        ("get_customer", {"customer_id": "C-00001"}, "customer"),
        ("find_customers", {"search": "gmbh", "first": 3}, "customers"),
        ("get_inventory", {"skus": ["SKU-0001", "SKU-0002"]}, "inventory"),
        ("get_order", {"order_id": "SO-100001", "max_age_seconds": 0}, "order"),
        ("list_customer_orders", {"customer_id": "C-00002"}, "orders"),
        ("get_balance", {"customer_id": "C-00001"}, "balance"),
    ]
    async with agent(server, estate.keys["support-bot"]) as client:
        for name, arguments, root in calls:
            result = await client.call_tool(name, arguments)
            assert not result.is_error, (name, result.content)
            data = result.structured_content["data"][root]
            node = data["edges"][0]["node"] if "edges" in data else data
            assert node["freshness"]["status"] in ("FRESH", "AGING"), name
            assert node["freshness"]["system"] in ("crm", "erp"), name
        customer = await client.call_tool("get_customer", {"customer_id": "C-00001"})
        assert customer.structured_content["data"]["customer"]["email"] is None
        assert "customer.email" in customer.structured_content["masked"]
        contracts = await client.call_tool("describe_contracts", {})
        entities = {c["entity"] for c in contracts.structured_content["data"]["contracts"]}
        assert entities == {"Customer", "InventoryItem", "Order", "Balance"}


async def test_allowed_write_is_applied_and_audited_as_mcp(
    server: LiveServer, estate: DemoEstate
) -> None:
    async with agent(server, estate.keys["restock-bot"]) as client:
        result = await client.call_tool("adjust_inventory", {**ADJUST, "delta": 20})
    assert not result.is_error, result.content
    assert result.structured_content["status"] == "APPLIED"
    action_id = result.structured_content["action_id"]
    events = await _audit(server, estate, action_id)
    assert [(e["event"], e["channel"], e["principal"], e["onBehalfOf"]) for e in events] == [
        ("action.applied", "mcp", "restock-bot", "olivia")
    ]


async def test_write_above_limit_is_pending_then_applied_after_human_approval(
    server: LiveServer, estate: DemoEstate
) -> None:
    async with agent(server, estate.keys["restock-bot"]) as client:
        dry = await client.call_tool("adjust_inventory", {**ADJUST, "delta": 300, "dry_run": True})
        assert dry.structured_content["status"] == "DRY_RUN"
        assert dry.structured_content["decision"]["outcome"] == "review"
        pending = await client.call_tool("adjust_inventory", {**ADJUST, "delta": 300})
        assert pending.structured_content["status"] == "PENDING_APPROVAL"
        assert pending.structured_content["approvers"] == ["finn"]
        assert "get_action" in pending.content[0].text
        action_id = pending.structured_content["action_id"]
        _approve(server, estate, action_id)
        followed = await client.call_tool("get_action", {"action_id": action_id})
    assert followed.structured_content["status"] == "APPLIED"


async def test_denied_and_invalid_writes_are_tool_errors_with_the_reason(
    server: LiveServer, estate: DemoEstate
) -> None:
    async with agent(server, estate.keys["restock-bot"]) as client:
        denied = await client.call_tool("adjust_inventory", {**ADJUST, "delta": 6000})
        invalid = await client.call_tool(
            "adjust_inventory", {**ADJUST, "sku": "SKU-NOPE", "delta": 5}
        )
        can = await client.call_tool(
            "can_i", {"action": "adjust_inventory", "input": {**ADJUST, "delta": 6000}}
        )
    assert denied.is_error
    assert "RESTOCK_NEVER_OVER_5000" in denied.content[0].text
    assert "ask your human owner (olivia)" in denied.content[0].text
    assert invalid.is_error
    assert "sku: unknown SKU SKU-NOPE" in invalid.content[0].text
    assert can.structured_content["decision"]["rule"] == "RESTOCK_NEVER_OVER_5000"


async def test_graphql_query_tool_reads_and_refuses_mutations(
    server: LiveServer, estate: DemoEstate
) -> None:
    async with agent(server, estate.keys["support-bot"]) as client:
        read = await client.call_tool("graphql_query", {"query": "{ me { id kind } }"})
        mutation = await client.call_tool(
            "graphql_query",
            {
                "query": 'mutation { cancelOrder(input: {orderId: "SO-100001", reason: "x y"}) '
                "{ status } }"
            },
        )
    assert read.structured_content["data"]["me"] == {"id": "support-bot", "kind": "agent"}
    assert mutation.is_error
    assert "queries only" in mutation.content[0].text


async def test_malformed_arguments_name_the_argument(
    server: LiveServer, estate: DemoEstate
) -> None:
    async with agent(server, estate.keys["restock-bot"]) as client:
        wrong_type = await client.call_tool("adjust_inventory", {**ADJUST, "delta": "many"})
        missing = await client.call_tool("get_inventory", {"first": 0})
        unknown = await client.call_tool("adjust_inventory", {**ADJUST, "delta": 1, "x": 1})
    assert wrong_type.is_error
    assert "argument 'delta'" in wrong_type.content[0].text
    assert missing.is_error
    assert "argument 'first'" in missing.content[0].text
    assert unknown.is_error
    assert "argument 'x'" in unknown.content[0].text


@pytest.mark.parametrize("key", [None, "gh_not_a_key"])
def test_missing_or_bad_key_gets_401_and_no_tools(server: LiveServer, key: str | None) -> None:
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    response = httpx.post(
        f"{server.url}/mcp",
        headers=headers,
        timeout=10,
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
    )
    assert response.status_code == 401
    assert "tools" not in response.text


async def test_stdio_transport_serves_the_agent_named_by_its_key(
    estate: DemoEstate, erp_copy: str, tmp_path: Path, repo_root: Path
) -> None:
    environ = {
        **estate.environ(),
        "GATEHOUSE_ERP_URL": erp_copy,
        "GATEHOUSE_API_KEY": estate.keys["restock-bot"],
        "GATEHOUSE_CONFIG": str(CONFIG_TEMPLATE),
        "GATEHOUSE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'gatehouse.db'}",
        "PYTHONPATH": str(repo_root),
    }
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "gateway", "mcp"], env=environ, cwd=str(tmp_path)
    )
    async with Client(params) as client:
        names = await tool_names(client)
        result = await client.call_tool("get_inventory", {"skus": ["SKU-0001"]})
    assert "adjust_inventory" in names
    assert "get_customer" not in names
    item = result.structured_content["data"]["inventory"]["edges"][0]["node"]
    assert item["sku"] == "SKU-0001"
    assert item["freshness"]["system"] == "erp"


def _approve(server: LiveServer, estate: DemoEstate, action_id: str) -> None:
    response = httpx.post(
        f"{server.url}/graphql",
        json={
            "query": f'mutation {{ approveAction(id: "{action_id}", comment: "ok") {{ status }} }}'
        },
        headers={"Authorization": f"Bearer {estate.keys['finn']}"},
        timeout=10,
    )
    assert response.json()["data"]["approveAction"]["status"] == "APPLIED"


async def _audit(server: LiveServer, estate: DemoEstate, action_id: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(
            f"{server.url}/graphql",
            json={
                "query": f'{{ auditEvents(filter: {{actionId: "{action_id}"}}) {{ edges {{ '
                "node { event channel principal onBehalfOf } } } }"
            },
            headers={"Authorization": f"Bearer {estate.keys['carla']}"},
        )
    return [edge["node"] for edge in response.json()["data"]["auditEvents"]["edges"]]


async def test_stdio_with_env_file_needs_only_the_agents_key(
    estate: DemoEstate, erp_copy: str, tmp_path: Path, repo_root: Path
) -> None:
    settings = {
        **estate.environ(),
        "GATEHOUSE_ERP_URL": erp_copy,
        "GATEHOUSE_CONFIG": str(CONFIG_TEMPLATE),
        "GATEHOUSE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'gatehouse.db'}",
    }
    env_file = tmp_path / "gatehouse.env"  # as `gatehouse demo` writes it
    env_file.write_text("".join(f"export {k}={v}\n" for k, v in settings.items()))
    environ = {"GATEHOUSE_API_KEY": estate.keys["restock-bot"], "PYTHONPATH": str(repo_root)}
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "gateway", "--env-file", str(env_file), "mcp"],
        env=environ,
        cwd=str(tmp_path),
    )
    async with Client(params) as client:
        names = await tool_names(client)
    assert "adjust_inventory" in names

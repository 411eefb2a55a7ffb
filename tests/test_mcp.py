"""The MCP server, through the SDK's own client, over streamable HTTP and over stdio."""

from __future__ import annotations

import json
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
from mcp.shared.exceptions import MCPError
from mcp.types import TextResourceContents

from gateway.app import create_app
from gateway.demo import CONFIG_TEMPLATE, DemoEstate
from gateway.settings import Settings
from sources.demo import CrmProcess
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
        assert not pending.is_error
        assert pending.structured_content["status"] == "PENDING_APPROVAL"
        assert pending.structured_content["approvers"] == ["finn"]
        assert pending.structured_content["hint"] == "wait_for_approval"
        assert "get_action" in pending.content[0].text
        action_id = pending.structured_content["action_id"]
        _approve(server, estate, action_id)
        followed = await client.call_tool("get_action", {"action_id": action_id})
    assert followed.structured_content["status"] == "APPLIED"
    history = followed.structured_content["history"]
    assert [(e["event"], e["principal"]) for e in history] == [
        ("action.pending_approval", "restock-bot"),
        ("action.approved", "finn"),
        ("action.applied", "restock-bot"),  # the effect is the requester's
    ]


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
    refusal = denied.structured_content
    assert refusal["status"] == "DENIED"
    assert refusal["hint"] == "stop"
    assert refusal["action_id"]
    assert refusal["decision"]["outcome"] == "deny"
    assert refusal["decision"]["rule"] == "RESTOCK_NEVER_OVER_5000"
    assert invalid.is_error
    assert "sku: unknown SKU SKU-NOPE" in invalid.content[0].text
    assert invalid.structured_content["hint"] == "retry_with_new_key"
    assert invalid.structured_content["errors"][0]["argument"] == "sku"
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
    assert wrong_type.structured_content["errors"][0]["argument"] == "delta"
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


async def test_stale_expected_version_is_conflict_naming_the_argument_and_current_version(
    server: LiveServer, estate: DemoEstate
) -> None:
    arguments = {**ADJUST, "delta": 5, "expected_version": "stale", "idempotency_key": "stale-1"}
    async with agent(server, estate.keys["restock-bot"]) as client:
        conflict = await client.call_tool("adjust_inventory", arguments)
    assert conflict.is_error
    refusal = conflict.structured_content
    assert refusal["status"] == "CONFLICT"
    assert refusal["hint"] == "reread_then_retry"
    assert refusal["action_id"]
    assert refusal["current_version"] not in (None, "stale")
    assert [e["argument"] for e in refusal["errors"]] == ["expected_version"]
    assert refusal["current_version"] in conflict.content[0].text


@pytest.fixture
def crm_server(
    estate: DemoEstate, erp_copy: str, own_crm: CrmProcess, tmp_path: Path
) -> Iterator[LiveServer]:
    config = with_source(estate.config(), "erp", url=erp_copy)
    config = with_source(config, "crm", url=own_crm.url, timeout=1.0)
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'gatehouse.db'}")
    with live_server(create_app(settings, config)) as running:
        yield running


async def test_crm_down_write_fails_then_retry_action_applies_it_under_the_same_id(
    crm_server: LiveServer, estate: DemoEstate, own_crm: CrmProcess
) -> None:
    change = {"customer_id": "C-00001", "email": "after-outage@example.org"}
    async with agent(crm_server, estate.keys["support-bot"]) as client:
        own_crm.stop()
        failed = await client.call_tool("update_customer_contact", change)
        own_crm.restart()
        action_id = failed.structured_content["action_id"]
        retried = await client.call_tool("retry_action", {"action_id": action_id})
        again = await client.call_tool("retry_action", {"action_id": action_id})
        followed = await client.call_tool("get_action", {"action_id": action_id})
    assert failed.is_error
    assert failed.structured_content["status"] == "FAILED"
    assert failed.structured_content["hint"] == "call_retry_action"
    assert "retry_action" in failed.structured_content["next_step"]
    assert failed.structured_content["errors"][0]["code"] == "SOURCE_UNAVAILABLE"
    assert not retried.is_error, retried.content
    assert retried.structured_content["status"] == "APPLIED"
    assert retried.structured_content["action_id"] == action_id
    assert again.is_error
    assert again.structured_content["status"] == "NOT_FAILED"
    assert again.structured_content["hint"] == "stop"
    events = [e["event"] for e in followed.structured_content["history"]]
    assert events == ["action.failed", "action.retried", "action.applied"]


async def test_read_with_its_source_down_is_an_error_not_a_missing_record(
    crm_server: LiveServer, estate: DemoEstate, own_crm: CrmProcess
) -> None:
    async with agent(crm_server, estate.keys["support-bot"]) as client:
        missing = await client.call_tool("get_customer", {"customer_id": "C-99999"})
        own_crm.stop()
        down = await client.call_tool("get_customer", {"customer_id": "C-00003"})
    assert not missing.is_error
    assert missing.structured_content["data"] == {"customer": None}
    assert missing.structured_content["errors"] == []
    assert down.is_error
    assert down.structured_content["data"] is None
    assert [(e["code"], e["source"]) for e in down.structured_content["errors"]] == [
        ("SOURCE_UNAVAILABLE", "crm")
    ]


async def test_tools_carry_titles_and_annotations_from_the_actions_contracts(
    server: LiveServer, estate: DemoEstate
) -> None:
    async with agent(server, estate.keys["olivia"]) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    for name in ("get_customer", "get_balance", "get_action", "can_i", "describe_contracts"):
        annotations = tools[name].annotations
        assert annotations is not None
        assert (annotations.read_only_hint, annotations.open_world_hint) == (True, False), name
    for name, destructive in {
        "adjust_inventory": True,
        "cancel_order": True,
        "record_payment": True,
        "issue_credit_note": True,
        "place_order": False,
        "retry_action": True,
    }.items():
        annotations = tools[name].annotations
        assert annotations is not None
        assert not annotations.read_only_hint, name
        assert annotations.destructive_hint is destructive, name
        assert annotations.idempotent_hint is True, name
        assert annotations.open_world_hint is False, name
    assert tools["issue_credit_note"].title == "Issue credit note"
    credit = tools["issue_credit_note"].input_schema["properties"]
    assert "Balance" in credit["expected_version"]["description"]
    assert "currency" in credit["amount"]["description"]
    assert "expected_version" not in tools["place_order"].input_schema["properties"]
    for tool in tools.values():
        for name, argument in tool.input_schema["properties"].items():
            assert argument.get("description"), (tool.name, name)
        assert "STALE" not in (tool.description or ""), tool.name  # said once, in instructions


@pytest.mark.parametrize(("principal", "tools"), [("restock-bot", 7), ("support-bot", 14)])
async def test_tools_list_of_each_demo_agent_fits_in_8_kb(
    server: LiveServer, estate: DemoEstate, principal: str, tools: int
) -> None:
    async with agent(server, estate.keys[principal]) as client:
        listed = await client.list_tools()
    size = len(listed.model_dump_json(by_alias=True, exclude_none=True))
    print(f"tools/list of {principal}: {tools} tools, {size} bytes")
    assert len(listed.tools) == tools
    assert size <= 8 * 1024


async def _resource(client: Client, uri: str) -> Any:
    result = await client.read_resource(uri)
    (content,) = result.contents
    assert isinstance(content, TextResourceContents)
    assert content.mime_type == "application/json"
    return json.loads(content.text)


async def test_contracts_and_effective_policy_are_resources(
    server: LiveServer, estate: DemoEstate
) -> None:
    async with agent(server, estate.keys["support-bot"]) as client:
        listed = {str(r.uri) for r in (await client.list_resources()).resources}
        assert listed == {"gatehouse://contracts", "gatehouse://policy/me"}
        contracts = await _resource(client, "gatehouse://contracts")
        policy = await _resource(client, "gatehouse://policy/me")

    email = contracts["Customer"]["fields"]["email"]
    assert (email["classification"], contracts["Customer"]["system"]) == ("pii", "crm")
    assert contracts["InventoryItem"]["fields"]["levels.on_hand"]["min"] == "0"

    assert policy["principal"] == {
        "id": "support-bot",
        "kind": "agent",
        "on_behalf_of": "sam",
        "roles": ["support-agent"],
    }
    assert set(policy["reads"]) == {"Customer", "InventoryItem", "Order", "Balance"}
    assert {"email", "phone", "contacts.email"} <= set(policy["reads"]["Customer"]["masked"])
    assert policy["reads"]["Balance"]["masked"] == []
    # Agents may never record payments: the tool is not theirs, nor is it in their policy.
    assert "recordPayment" not in policy["writes"]
    credit = policy["writes"]["issueCreditNote"]
    assert [(r["when"], r["outcome"], r["rule"]) for r in credit["rules"]] == [
        ("amount <= 50", "allow", "SUPPORT_SMALL_CREDIT"),
        ("amount > 50", "review", "SUPPORT_CREDIT_REVIEW"),
    ]
    assert {a["id"] for a in credit["approvers"]} == {"olivia", "finn"}
    assert policy["rate_limit"] == "300/minute"


async def test_effective_policy_follows_the_caller(server: LiveServer, estate: DemoEstate) -> None:
    async with agent(server, estate.keys["restock-bot"]) as client:
        policy = await _resource(client, "gatehouse://policy/me")
        with pytest.raises(MCPError) as unknown:
            await client.read_resource("gatehouse://nothing")
    assert set(policy["reads"]) == {"InventoryItem"}
    assert set(policy["writes"]) == {"adjustInventory"}
    rules = policy["writes"]["adjustInventory"]["rules"]
    assert [r["outcome"] for r in rules] == ["deny", "allow", "review"]
    assert rules[0]["when"] == "quantity > 5000"
    assert "gatehouse://nothing" in str(unknown.value)


async def test_a_write_tool_never_listed_for_the_agent_is_denied_and_audited(
    server: LiveServer, estate: DemoEstate
) -> None:
    payment = {
        "customer_id": "C-00001",
        "amount": "10.00",
        "currency": "EUR",
        "reference": "agent tries",
        "idempotency_key": "support-bot-pays",
    }
    async with agent(server, estate.keys["support-bot"]) as client:
        assert "record_payment" not in await tool_names(client)
        denied = await client.call_tool("record_payment", payment)
        unknown = await client.call_tool("launch_rockets", {})
    assert denied.is_error
    refusal = denied.structured_content
    assert refusal is not None
    assert (refusal["status"], refusal["decision"]["rule"]) == ("DENIED", "AGENT_NO_PAYMENTS")
    events = await _audit(server, estate, refusal["action_id"])
    assert [(e["event"], e["channel"], e["principal"]) for e in events] == [
        ("action.denied", "mcp", "support-bot")
    ]
    assert unknown.is_error
    assert "Unknown tool: launch_rockets" in unknown.content[0].text

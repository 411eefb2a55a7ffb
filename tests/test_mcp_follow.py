"""Following a pending action to its end with MCP `subscriptions/listen`, through the SDK's
own client: the decision arrives as a resource update, also across a gateway restart."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.client.subscriptions import ResourceUpdated, Subscription
from mcp.shared.exceptions import MCPError
from mcp.types import TextResourceContents

from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.demo import DemoEstate
from gateway.settings import Settings
from tests.factories import live_server, with_source
from tests.test_mcp import ADJUST, _approve, agent


@pytest.fixture
def config(estate: DemoEstate, tmp_path: Path) -> GatewayConfig:
    """The demo over a writable copy of the session's ERP."""
    erp = tmp_path / "erp.db"
    shutil.copy(estate.erp_url.split("///", 1)[1], erp)
    return with_source(estate.config(), "erp", url=f"sqlite+aiosqlite:///{erp}")


def _settings(tmp_path: Path) -> Settings:
    return Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'gatehouse.db'}")


async def _read(client: Client, uri: str) -> Any:
    (content,) = (await client.read_resource(uri)).contents
    assert isinstance(content, TextResourceContents)
    return json.loads(content.text)


async def _pending(client: Client) -> tuple[str, str]:
    result = await client.call_tool("adjust_inventory", {**ADJUST, "delta": 300})
    output = result.structured_content
    assert output is not None
    assert output["status"] == "PENDING_APPROVAL"
    assert output["follow"] == f"gatehouse://actions/{output['action_id']}"
    assert output["follow"] in result.content[0].text
    return output["action_id"], output["follow"]


async def _next_update(subscription: Subscription) -> ResourceUpdated:
    with anyio.fail_after(10):
        async for event in subscription:
            assert isinstance(event, ResourceUpdated)
            return event
    raise AssertionError("the stream ended without an update")


async def test_a_pending_action_is_followed_to_its_end_without_polling(
    config: GatewayConfig, estate: DemoEstate, tmp_path: Path
) -> None:
    with live_server(create_app(_settings(tmp_path), config)) as server:
        async with agent(server, estate.keys["restock-bot"]) as client:
            templates = (await client.list_resource_templates()).resource_templates
            assert [t.uri_template for t in templates] == ["gatehouse://actions/{action_id}"]
            action_id, uri = await _pending(client)
            assert (await _read(client, uri))["status"] == "PENDING_APPROVAL"
            async with client.listen(resource_subscriptions=[uri]) as subscription:
                await anyio.to_thread.run_sync(_approve, server, estate, action_id)
                event = await _next_update(subscription)
            followed = await _read(client, uri)
        async with agent(server, estate.keys["support-bot"]) as other:
            with pytest.raises(MCPError):  # another's action is no resource of this agent's
                await _read(other, uri)
    assert event.uri == uri
    assert followed["status"] == "APPLIED"
    assert followed["action_id"] == action_id
    assert [e["event"] for e in followed["history"]][-1] == "action.applied"


async def test_a_follower_learns_the_outcome_across_a_gateway_restart(
    config: GatewayConfig, estate: DemoEstate, tmp_path: Path
) -> None:
    settings = _settings(tmp_path)
    with live_server(create_app(settings, config)) as first:
        port = int(first.url.rsplit(":", 1)[1])
        async with agent(first, estate.keys["restock-bot"]) as client:
            action_id, uri = await _pending(client)
    # The gateway restarted (a new process on the same database and port); the agent
    # connects again, listens again, and hears of the decision taken after the restart.
    with live_server(create_app(settings, config), port) as second:
        async with (
            agent(second, estate.keys["restock-bot"]) as client,
            client.listen(resource_subscriptions=[uri]) as subscription,
        ):
            assert (await _read(client, uri))["status"] == "PENDING_APPROVAL"
            await anyio.to_thread.run_sync(_approve, second, estate, action_id)
            event = await _next_update(subscription)
            followed = await _read(client, uri)
    assert event.uri == uri
    assert followed["status"] == "APPLIED"

"""Per-principal rate limits on a live server: operations are counted, not HTTP requests,
over GraphQL and MCP alike; a refusal is 429 with Retry-After and names the limit."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from gateway.app import create_app
from gateway.config import RateLimits
from gateway.demo import DemoEstate
from gateway.settings import Settings
from tests.factories import LiveServer, live_server

QUERY = {"query": "{ me { id } }"}


@pytest.fixture(scope="module")
def server(estate: DemoEstate, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A gateway allowing humans four operations a minute and agents two."""
    config = estate.config()
    rate = RateLimits(human="4/minute", agent="2/minute")
    config = config.model_copy(update={"limits": config.limits.model_copy(update={"rate": rate})})
    database = tmp_path_factory.mktemp("rates") / "gatehouse.db"
    settings = Settings(database_url=f"sqlite+aiosqlite:///{database}")
    with live_server(create_app(settings, config)) as running:
        yield running


def _key(estate: DemoEstate, principal: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {estate.keys[principal]}"}


def post(server: LiveServer, body: object, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{server.url}/graphql", json=body, headers=headers, timeout=10)


def test_rate_limit_counts_operations_not_requests(server: LiveServer, estate: DemoEstate) -> None:
    olivia = _key(estate, "olivia")
    assert post(server, [QUERY] * 3, olivia).status_code == 200

    refused = post(server, [QUERY] * 2, olivia)  # the second request, the fifth operation

    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    for answer in refused.json():
        assert answer["data"] is None
        (error,) = answer["errors"]
        assert error["extensions"]["code"] == "RATE_LIMITED"
        assert error["extensions"]["limit"] == "rate.human"
        assert "rate.human" in error["message"]
    # A refused request is not charged, and each principal has its own window.
    assert post(server, QUERY, olivia).status_code == 200
    assert post(server, QUERY, olivia).status_code == 429
    assert post(server, QUERY, _key(estate, "finn")).status_code == 200


async def test_rate_limit_counts_mcp_tool_calls(server: LiveServer, estate: DemoEstate) -> None:
    key = estate.keys["support-bot"]
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=30)
    async with (
        http,
        Client(streamable_http_client(f"{server.url}/mcp", http_client=http)) as client,
    ):
        answers = [
            await client.call_tool("graphql_query", {"query": "{ me { id } }"}) for _ in range(3)
        ]
    assert [answer.is_error for answer in answers] == [False, False, True]
    assert "RATE_LIMITED" in answers[2].content[0].text
    assert "rate.agent" in answers[2].content[0].text

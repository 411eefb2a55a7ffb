"""Per-principal rate limits on a live server: operations are counted, not HTTP requests,
over GraphQL and MCP alike; a refusal is 429 with Retry-After and names the limit."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import httpx2
import pytest
from limits import parse
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from pydantic import ValidationError

from gateway.app import create_app
from gateway.config import GatewayConfig, RateLimits
from gateway.counters import Windows
from gateway.demo import DemoEstate
from gateway.settings import Settings
from tests.factories import LiveServer, free_port, live_server

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


REDIS = "redis://127.0.0.1:6379/0"  # the machine's Redis (CI runs one too)


def _with_counters(estate: DemoEstate, counters: str, prefix: str) -> GatewayConfig:
    config = estate.config()
    limits = config.limits.model_copy(
        update={
            "rate": RateLimits(human="4/minute", agent="2/minute"),
            "counters": counters,
            "counters_prefix": prefix,
        }
    )
    return config.model_copy(update={"limits": limits})


def test_replicas_sharing_redis_count_one_window(estate: DemoEstate, tmp_path: Path) -> None:
    config = _with_counters(estate, REDIS, f"gh-test-{uuid.uuid4().hex[:8]}")
    olivia = _key(estate, "olivia")
    replicas = [
        create_app(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'gh.db'}"), config)
        for _ in range(2)
    ]
    with live_server(replicas[0]) as one, live_server(replicas[1]) as two:
        assert post(one, [QUERY] * 3, olivia).status_code == 200
        assert post(two, QUERY, olivia).status_code == 200  # the fourth of four, on the other
        assert post(one, QUERY, olivia).status_code == 429
        assert post(two, QUERY, olivia).status_code == 429
        assert post(two, QUERY, _key(estate, "finn")).status_code == 200


async def test_windows_in_memory_are_each_processs_and_in_redis_shared() -> None:
    rate = parse("2/minute")
    prefix = f"gh-test-{uuid.uuid4().hex[:8]}"
    for shared, windows in (
        (False, [Windows(), Windows()]),
        (True, [Windows(REDIS, prefix=prefix), Windows(REDIS, prefix=prefix)]),
    ):
        assert await windows[0].hit(rate, "channel", "ops")
        assert await windows[0].hit(rate, "channel", "ops")
        assert await windows[1].hit(rate, "channel", "ops") is not shared
        assert not await windows[0].hit(rate, "channel", "ops")
        assert 1 <= await windows[0].reset_in(rate, "channel", "ops") <= 60
        for each in windows:
            await each.close()


def test_unreachable_redis_serves_uncounted_and_never_logs_the_url(
    estate: DemoEstate, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    counters = f"redis://:hunter2-secret@127.0.0.1:{port}/0"
    config = _with_counters(estate, counters, "gh-test")
    olivia = _key(estate, "olivia")
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'gh.db'}")
    with caplog.at_level(logging.WARNING), live_server(create_app(settings, config)) as server:
        # Five operations against a limit of four: nothing counts while Redis is away.
        assert post(server, [QUERY] * 3, olivia).status_code == 200
        assert post(server, [QUERY] * 2, olivia).status_code == 200
    warnings = [r for r in caplog.records if r.getMessage().startswith("rate windows")]
    assert warnings, caplog.text
    assert "hunter2" not in caplog.text
    assert f":{port}" not in caplog.text


@pytest.mark.parametrize(
    "counters", ["memcached://127.0.0.1:11211", "redis://", "memory", "http://redis:6379"]
)
def test_unknown_counters_are_refused_naming_the_key(estate: DemoEstate, counters: str) -> None:
    raw = estate.config().model_dump(mode="json", by_alias=True, exclude={"base_dir"})
    raw["limits"]["counters"] = counters
    with pytest.raises(ValidationError) as error:
        GatewayConfig.model_validate({**raw, "base_dir": estate.config().base_dir})
    assert "limits.counters" in str(error.value).replace("\n", ".")

"""OAuth for MCP, end to end: the SDK's own client discovers the authorization server from the
gateway's 401, obtains a token with client_credentials and calls tools with it."""

from __future__ import annotations

import asyncio
import logging
import shutil
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.authz import OUT_OF_SCOPE, Outcome
from gateway.config import GatewayConfig, OAuthConfig, load_config
from gateway.demo import CONFIG_TEMPLATE, DemoEstate
from gateway.errors import ConfigError
from gateway.services import Services
from gateway.settings import Settings
from tests.authorization_server import AuthorizationServer, Registered, new_key
from tests.factories import LiveServer, as_principal, free_port, live_server, with_source

SECRET = "s3cret-for-tests"  # the test authorization server's client secret
READ, WRITE = "gatehouse:read", "gatehouse:write"
ADJUST = {"sku": "SKU-0005", "location": "WH-AMS", "delta": 3, "reason": "inbound pallet"}
TOOLS_CALL = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "tools/call",
    "params": {"name": "adjust_inventory", "arguments": ADJUST},
}


def client(*scopes: str, fault: str | None = None) -> Registered:
    return Registered(SECRET, frozenset(scopes), fault)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def authorization_server() -> Iterator[AuthorizationServer]:
    server = AuthorizationServer(
        clients={
            "restock-client": client(READ, WRITE),
            "support-reader": client(READ),
            "stale-client": client(READ, fault="expired"),
            "misdirected-client": client(READ, fault="wrong_audience"),
            "forger-client": client(READ, fault="unknown_key"),
            "stranger-client": client(READ),  # known to the server, mapped to nobody here
        }
    )
    with live_server(server.app()) as running:
        server.base_url = running.url
        yield server


@pytest.fixture(scope="module")
def database_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("oauth-gateway") / "gatehouse.db"


@pytest.fixture(scope="module")
def gateway(
    estate: DemoEstate,
    authorization_server: AuthorizationServer,
    database_file: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LiveServer]:
    erp = tmp_path_factory.mktemp("oauth-erp") / "erp.db"
    shutil.copy(estate.erp_url.split("///", 1)[1], erp)
    port = free_port()
    oauth = OAuthConfig(
        resource=f"http://127.0.0.1:{port}/mcp",
        authorization_servers=[authorization_server.issuer],
        principals={
            "restock-client": "restock-bot",
            "support-reader": "support-bot",
            "stale-client": "restock-bot",
            "misdirected-client": "restock-bot",
            "forger-client": "restock-bot",
        },
        jwks_min_refresh=0.5,
    )
    config = with_oauth(
        with_source(estate.config(), "erp", url=f"sqlite+aiosqlite:///{erp}"), oauth
    )
    settings = Settings(database_url=f"sqlite+aiosqlite:///{database_file}")
    with live_server(create_app(settings, config), port) as running:
        yield running


def with_oauth(config: GatewayConfig, oauth: OAuthConfig) -> GatewayConfig:
    auth = config.auth.model_copy(update={"oauth": oauth})
    return config.model_copy(update={"auth": auth})


class MemoryTokens:
    """The SDK's TokenStorage, in memory: one client's token and registration."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


@asynccontextmanager
async def oauth_agent(
    gateway: LiveServer, authorization_server: AuthorizationServer, client_id: str
) -> AsyncIterator[Client]:
    """An MCP session whose token the SDK obtains itself: 401, RFC 9728 and RFC 8414
    discovery, then client_credentials at the authorization server."""
    provider = ClientCredentialsOAuthProvider(
        server_url=f"{gateway.url}/mcp",
        storage=MemoryTokens(),
        client_id=client_id,
        client_secret=SECRET,
        issuer=authorization_server.issuer,
    )
    http = httpx2.AsyncClient(auth=provider, timeout=30)
    async with (
        http,
        Client(streamable_http_client(f"{gateway.url}/mcp", http_client=http)) as session,
    ):
        yield session


async def tool_names(session: Client) -> set[str]:
    return {tool.name for tool in (await session.list_tools()).tools}


def actions_recorded(database_file: Path) -> int:
    with sqlite3.connect(database_file) as db:
        return int(db.execute("SELECT count(*) FROM actions").fetchone()[0])


def metadata_url(gateway: LiveServer) -> str:
    return f"{gateway.url}/.well-known/oauth-protected-resource/mcp"


@pytest.mark.parametrize("suffix", ["/mcp", ""])
def test_protected_resource_metadata_names_the_authorization_server(
    gateway: LiveServer, authorization_server: AuthorizationServer, suffix: str
) -> None:
    response = httpx.get(f"{gateway.url}/.well-known/oauth-protected-resource{suffix}")
    assert response.status_code == 200
    metadata = response.json()
    assert metadata["resource"] == f"{gateway.url}/mcp"
    assert metadata["authorization_servers"] == [authorization_server.issuer]
    assert set(metadata["scopes_supported"]) == {READ, WRITE, "gatehouse:approve"}


def test_protected_resource_metadata_without_oauth_is_404(estate: DemoEstate) -> None:
    app = create_app(Settings(database_url="sqlite+aiosqlite://"), estate.config())
    with TestClient(app) as http:
        assert http.get("/.well-known/oauth-protected-resource").status_code == 404
        assert http.get("/.well-known/oauth-protected-resource/mcp").status_code == 404
        assert http.post("/mcp", json={}).headers["www-authenticate"] == "Bearer"


def test_missing_credential_gets_401_naming_the_resource_metadata(gateway: LiveServer) -> None:
    response = httpx.post(f"{gateway.url}/mcp", json=TOOLS_CALL)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == (
        f'Bearer resource_metadata="{metadata_url(gateway)}"'
    )


async def test_sdk_client_obtains_a_token_and_calls_tools(
    gateway: LiveServer, authorization_server: AuthorizationServer
) -> None:
    async with oauth_agent(gateway, authorization_server, "restock-client") as session:
        assert {"get_inventory", "adjust_inventory"} <= await tool_names(session)
        result = await session.call_tool("get_inventory", {"skus": ["SKU-0001"]})
    assert not result.is_error, result.content
    assert result.structured_content["data"]["inventory"]["edges"][0]["node"]["sku"] == "SKU-0001"


async def test_oauth_principal_is_the_mapped_one_on_graphql_too(
    gateway: LiveServer, authorization_server: AuthorizationServer
) -> None:
    async with oauth_agent(gateway, authorization_server, "restock-client") as session:
        await tool_names(session)
    token = authorization_server.issued[-1]
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{gateway.url}/graphql",
            headers={"Authorization": f"Bearer {token}"},
            json={"query": "{ me { id kind credential } }"},
        )
    assert response.json()["data"]["me"] == {
        "id": "restock-bot",
        "kind": "agent",
        "credential": "oauth",
    }


async def test_read_scope_narrows_the_principal_to_reads(
    gateway: LiveServer, authorization_server: AuthorizationServer, estate: DemoEstate
) -> None:
    async with oauth_agent(gateway, authorization_server, "support-reader") as session:
        narrowed = await tool_names(session)
        result = await session.call_tool("get_customer", {"customer_id": "C-00001"})
    assert not result.is_error, result.content
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {estate.keys['support-bot']}"})
    async with http, Client(streamable_http_client(f"{gateway.url}/mcp", http_client=http)) as s:
        full = await tool_names(s)
    assert {"update_customer_contact", "issue_credit_note"} <= full
    assert "get_customer" in narrowed
    assert not {"update_customer_contact", "issue_credit_note", "cancel_order"} & narrowed
    mutation = (
        'mutation { updateCustomerContact(input: {customerId: "C-00011", email: "x@example.com"})'
        " { status action { decision { rule } } } }"
    )
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{gateway.url}/graphql",
            headers={"Authorization": f"Bearer {authorization_server.issued[-1]}"},
            json={"query": mutation},
        )
    written = response.json()["data"]["updateCustomerContact"]
    assert written == {"status": "DENIED", "action": {"decision": {"rule": "OUT_OF_SCOPE"}}}


@pytest.mark.parametrize(
    ("client_id", "reason"),
    [
        ("stale-client", "Signature has expired"),
        ("misdirected-client", "Audience doesn't match"),
        ("forger-client", "signed by a key its authorization server does not publish"),
        ("stranger-client", "no principal is mapped to its subject or client id"),
    ],
)
async def test_bad_token_gets_401_with_resource_metadata_and_nothing_runs(
    gateway: LiveServer,
    authorization_server: AuthorizationServer,
    database_file: Path,
    caplog: pytest.LogCaptureFixture,
    client_id: str,
    reason: str,
) -> None:
    before = actions_recorded(database_file)
    caplog.set_level(logging.WARNING, logger="gatehouse")
    with pytest.raises(Exception):  # noqa: B017, PT011 - the SDK's error for a refused token
        async with oauth_agent(gateway, authorization_server, client_id) as session:
            await session.call_tool("adjust_inventory", ADJUST)
    token = authorization_server.issued[-1]
    async with httpx.AsyncClient() as http:
        headers = {"Authorization": f"Bearer {token}"}
        response = await http.post(f"{gateway.url}/mcp", json=TOOLS_CALL, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == (
        f'Bearer resource_metadata="{metadata_url(gateway)}", error="invalid_token"'
    )
    assert "adjust" not in response.text
    assert actions_recorded(database_file) == before
    refusals = [r.getMessage() for r in caplog.records if "token refused" in r.getMessage()]
    assert refusals
    assert all(reason in message for message in refusals)
    issued = authorization_server.issued
    assert not any(token in record.getMessage() for record in caplog.records for token in issued)


async def test_rotated_key_is_accepted_without_a_restart(
    gateway: LiveServer, authorization_server: AuthorizationServer
) -> None:
    async with oauth_agent(gateway, authorization_server, "restock-client") as session:
        await tool_names(session)
    fetched = authorization_server.jwks_requests
    authorization_server.rotate()
    await asyncio.sleep(0.6)  # jwks_min_refresh
    async with oauth_agent(gateway, authorization_server, "restock-client") as session:
        result = await session.call_tool("get_inventory", {"skus": ["SKU-0002"]})
    assert not result.is_error, result.content
    assert authorization_server.jwks_requests == fetched + 1


async def test_unknown_keys_fetch_the_jwks_at_most_once_per_interval(
    gateway: LiveServer, authorization_server: AuthorizationServer
) -> None:
    claims = {"iss": authorization_server.issuer, "sub": "restock-client"}
    forged = [authorization_server.sign(claims, key=new_key()) for _ in range(5)]
    await asyncio.sleep(0.6)  # jwks_min_refresh
    fetched = authorization_server.jwks_requests
    async with httpx.AsyncClient() as http:
        for token in forged:
            headers = {"Authorization": f"Bearer {token}"}
            response = await http.post(f"{gateway.url}/mcp", json=TOOLS_CALL, headers=headers)
            assert response.status_code == 401
    assert authorization_server.jwks_requests == fetched + 1


async def test_api_keys_keep_working_beside_oauth(gateway: LiveServer, estate: DemoEstate) -> None:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {estate.keys['restock-bot']}"})
    async with http, Client(streamable_http_client(f"{gateway.url}/mcp", http_client=http)) as s:
        result = await s.call_tool("get_inventory", {"skus": ["SKU-0003"]})
    assert not result.is_error, result.content


OAUTH_TOML = """
[auth.oauth]
resource = "https://gatehouse.example.com/mcp"
authorization_servers = ["https://auth.example.com/realms/gatehouse"]
principals = { "restock-client" = "%s" }
"""


def test_oauth_config_loads_from_the_toml_file(tmp_path: Path, estate: DemoEstate) -> None:
    path = tmp_path / "gatehouse.toml"
    path.write_text(CONFIG_TEMPLATE.read_text() + OAUTH_TOML % "restock-bot")
    oauth = load_config(path, environ=estate.environ()).auth.oauth
    assert oauth is not None
    assert oauth.principals == {"restock-client": "restock-bot"}
    assert oauth.jwks_min_refresh == 10.0


def test_oauth_config_mapping_to_an_unknown_principal_names_the_key(
    tmp_path: Path, estate: DemoEstate
) -> None:
    path = tmp_path / "gatehouse.toml"
    path.write_text(CONFIG_TEMPLATE.read_text() + OAUTH_TOML % "restock-bott")
    with pytest.raises(ConfigError, match=r"auth\.oauth\.principals\.restock-client: no principal"):
        load_config(path, environ=estate.environ())


def test_scopes_narrow_what_policy_allows_and_never_widen_it(services: Services) -> None:
    restock = as_principal(services, "restock-bot")
    small = {"quantity": 5}
    read_only = replace(restock, scopes=frozenset({READ}))
    refused = services.policy.decide(read_only, "inventory.adjust", "write", small)
    assert (refused.outcome, refused.rule) == (Outcome.DENY, OUT_OF_SCOPE)
    assert not services.policy.could_ever(read_only, "inventory.adjust", "write")
    writer = replace(restock, scopes=frozenset({READ, WRITE}))
    assert services.policy.decide(writer, "inventory.adjust", "write", small).allowed
    everything = replace(restock, scopes=frozenset({READ, WRITE, "gatehouse:approve"}))
    assert not services.policy.decide(everything, "inventory.adjust", "approve").allowed

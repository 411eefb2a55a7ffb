"""Small builders the tests share: configs, services, a GraphQL runner and a live server."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy
import uvicorn
from fastapi import FastAPI
from sqlalchemy import Select, Table
from sqlalchemy.ext.asyncio import create_async_engine
from strawberry.types import ExecutionResult

from gateway.actions import store
from gateway.actions.store import Action, Status
from gateway.app import build_services
from gateway.config import GatewayConfig
from gateway.graphql.context import Context
from gateway.graphql.schema import build_schema
from gateway.idempotency import claim
from gateway.outcomes import WriteRequest, WriteResult, request_digest
from gateway.principals import Principal
from gateway.services import Services
from gateway.settings import Settings
from sources.demo.erp import erp_metadata
from sources.sql import SqlConnector

POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


def postgres_reachable() -> bool:
    """True when the PostgreSQL server answers on 127.0.0.1:5432."""
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


def require_postgres() -> None:
    """Skip without PostgreSQL, except under CI, where it must run."""
    import pytest

    if not postgres_reachable():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL on 127.0.0.1:5432 is required under CI")
        pytest.skip("PostgreSQL on 127.0.0.1:5432 is unreachable (and CI is not set)")


async def postgres_admin(statement: str, url: str = POSTGRES_URL) -> None:
    """Run one statement outside a transaction (CREATE or DROP DATABASE)."""
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(sqlalchemy.text(statement))
    finally:
        await engine.dispose()


@asynccontextmanager
async def fresh_postgres_database(prefix: str, url: str = POSTGRES_URL) -> AsyncIterator[str]:
    """A new, empty database on `url`'s server, dropped afterwards even if in use; its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    await postgres_admin(f'CREATE DATABASE "{name}"', url)
    try:
        yield url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', url)


def new_schema_name() -> str:
    """A PostgreSQL schema name no other test uses."""
    return f"gh_test_{uuid.uuid4().hex[:12]}"


def drop_schema(url: str, schema: str) -> None:
    """Drop a test schema and everything in it."""

    async def drop() -> None:
        engine = create_async_engine(url)
        async with engine.begin() as connection:
            await connection.execute(sqlalchemy.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        await engine.dispose()

    asyncio.run(drop())


def with_source(config: GatewayConfig, name: str, **changes: Any) -> GatewayConfig:
    """The config with one source's settings changed (url, timeout, schema...)."""
    source = config.sources[name].model_copy(update=changes)
    return config.model_copy(update={"sources": {**config.sources, name: source}})


def services_for(config: GatewayConfig, database_url: str) -> Services:
    """The gateway's services over a config, as the app builds them."""
    return build_services(Settings(database_url=database_url), config)


async def run_query(
    services: Services,
    query: str,
    *,
    principal: str = "olivia",
    variables: dict[str, Any] | None = None,
) -> ExecutionResult:
    """Execute a GraphQL document with a real context, as `principal`."""
    caller = services.authenticator.principal(principal)
    assert caller is not None, principal
    config = services.config
    schema = build_schema(config.limits, services.catalog.kinds(), config.graphql)
    context = Context(services=services, principal=caller)
    return await schema.execute(query, variable_values=variables, context_value=context)


def source_calls(services: Services) -> int:
    """Round-trips made to every system of record so far."""
    return sum(connector.stats.calls for connector in services.connectors.values())


class LiveServer:
    """An app served by uvicorn on a free loopback port, in a background thread."""

    def __init__(self, app: FastAPI, port: int = 0) -> None:
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        """The server's base URL."""
        socket_ = self.server.servers[0].sockets[0]
        return f"http://127.0.0.1:{socket_.getsockname()[1]}"

    def start(self) -> None:
        """Start and wait until it accepts requests."""
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("live server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop and wait for the thread."""
        self.server.should_exit = True
        self.thread.join(timeout=10)


def free_port() -> int:
    """A loopback port nothing listens on now (for a server whose URL must be known first)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def live_server(app: FastAPI, port: int = 0) -> Iterator[LiveServer]:
    """Serve `app` on loopback for the duration of the block."""
    server = LiveServer(app, port)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def submit(
    services: Services,
    kind: str,
    data: dict[str, Any],
    *,
    principal: str = "olivia",
    key: str | None = None,
    dry_run: bool = False,
    expected_version: str | None = None,
) -> WriteResult:
    """Send one write through the pipeline as `principal`."""
    caller = services.authenticator.principal(principal)
    assert caller is not None, principal
    request = WriteRequest(
        kind=kind,
        input=data,
        idempotency_key=key,
        dry_run=dry_run,
        expected_version=expected_version,
    )
    return await services.writes.submit(request, caller)


def as_principal(services: Services, name: str) -> Principal:
    """A configured principal by name."""
    found = services.authenticator.principal(name)
    assert found is not None, name
    return found


async def stock(services: Services, sku: str, location: str) -> dict[str, int]:
    """The stock level of one item at one location, read fresh from the ERP."""
    record = await services.reads.connector("InventoryItem").read("InventoryItem", sku)
    assert record is not None, sku
    (level,) = [lv for lv in record.data["levels"] if lv["location"] == location]
    return {"on_hand": level["on_hand"], "reserved": level["reserved"]}


def erp_connector(services: Services) -> SqlConnector:
    """The ERP's connector, for tests that read its tables directly."""
    connector = services.connectors["erp"]
    assert isinstance(connector, SqlConnector)
    return connector


def erp_tables(services: Services) -> dict[str, Table]:
    """The ERP's tables, in the connector's schema."""
    return {t.name: t for t in erp_metadata(erp_connector(services).schema).tables.values()}


async def erp_rows(services: Services, statement: Select[Any]) -> list[Any]:
    """The rows a statement selects from the ERP, read directly."""
    async with erp_connector(services).engine.connect() as connection:
        return list((await connection.execute(statement)).all())


async def left_in_flight(
    services: Services,
    kind: str,
    data: dict[str, Any],
    *,
    principal: str = "olivia",
    key: str | None = "crash-1",
    effect: bool,
    approved: bool = False,
) -> Action:
    """An action as a process that died leaves it: claimed, its lease lapsed; with its
    effect committed at the system of record when `effect`; approved (saved EXECUTING
    with the diff it was approved on) when `approved`."""
    writes = services.writes
    caller = as_principal(services, principal)
    request = WriteRequest(kind, data, idempotency_key=key)
    implementation = services.catalog.get(kind)
    assert implementation is not None
    parsed = implementation.Input.model_validate(data)
    action = writes._new_action(request, caller, implementation, parsed)
    lapsed = datetime.now(UTC) - timedelta(seconds=1)
    held = datetime.now(UTC) + timedelta(days=1) if key else None
    stored = replace(
        action, revision=1, lease_until=lapsed, key_held_until=held, request_digest="r"
    )
    if key is not None:  # the digest a replay of the same request computes
        stored = replace(stored, request_digest=request_digest(stored, request))
    if approved:
        async with services.catalog.source(kind).unit() as unit:
            plan = await implementation.plan(parsed, unit)
        diff = {"before": plan.before, "after": plan.after}
        stored = replace(stored, status=Status.EXECUTING, diff=diff, based_on=plan.target_version)
    async with services.engine.begin() as connection:
        assert (await claim(connection, store.row(stored), now=datetime.now(UTC))).won
    if effect:
        source = services.catalog.source(kind)
        async with source.unit() as unit:
            plan = await implementation.plan(parsed, unit)
            await implementation.execute(parsed, plan, unit, action_id=action.id)
    return stored

"""Cache eviction across replicas: announced on commit, evicted by every replica's listener.

    replica A: a change announcing(records), in a transaction --commit--> PostgreSQL
    replica B: Listener on a connection of its own --> Reads.evict(entity, [key])

Two sets of services in this process stand in for two replicas on one fresh database.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import sqlalchemy
from sqlalchemy import update
from sqlalchemy.ext.asyncio import create_async_engine

from gateway.audit import Prelude
from gateway.config import GatewayConfig
from gateway.database import audit_head, create_schema
from gateway.invalidation import Listener, announcing
from gateway.reads import Reads
from gateway.services import Services
from tests.factories import (
    fresh_postgres_database,
    postgres_admin,
    require_postgres,
    services_for,
)

ITEM = ("InventoryItem", "SKU-0001")
OTHER = ("InventoryItem", "SKU-0002")
FAST_BACKOFF = (0.05, 0.2)


@pytest.fixture
async def database() -> AsyncIterator[str]:
    """A new, empty PostgreSQL database, dropped afterwards; its URL."""
    require_postgres()
    async with fresh_postgres_database("gh_invalidation") as url:
        yield url


@pytest.fixture
async def replicas(
    config: GatewayConfig, database: str
) -> AsyncIterator[tuple[Services, Services]]:
    """Replica A, which writes, and replica B, which listens; both on `database`."""
    first, second = services_for(config, database), services_for(config, database)
    await create_schema(first.engine)  # the change an announcement rides on needs a table
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


async def _cached(reads: Reads, record: tuple[str, str]) -> bool:
    entry = await reads.get(*record)
    assert entry is not None, record
    return entry.freshness.cached


async def _evicted(reads: Reads, record: tuple[str, str], within: float = 5.0) -> bool:
    """Whether the record stops being served from cache within the time (a hit changes nothing)."""
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        if not await _cached(reads, record):
            return True
        await asyncio.sleep(0.02)
    return False


# A change to one row that alters nothing, for the announcement to ride on.
_TOUCH = update(audit_head).where(audit_head.c.id == 1).values(seq=audit_head.c.seq)


async def _announce(services: Services, *records: tuple[str, str], commit: bool = True) -> None:
    change = announcing(Prelude(_TOUCH, {}), list(records), services.engine.dialect.name)
    async with services.engine.connect() as connection:
        transaction = await connection.begin()
        assert (await connection.execute(change.statement, change.params)).rowcount == 1
        await (transaction.commit() if commit else transaction.rollback())


async def _listening_backends(url: str) -> list[int]:
    engine = create_async_engine(url)
    query = sqlalchemy.text(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND query LIKE 'LISTEN %' AND pid <> pg_backend_pid()"
    )
    try:
        async with engine.connect() as connection:
            return list((await connection.execute(query)).scalars())
    finally:
        await engine.dispose()


async def test_invalidation_announced_on_commit_evicts_the_record_on_another_replica(
    replicas: tuple[Services, Services],
) -> None:
    writer, other = replicas
    async with Listener(other.engine, other.reads).running():
        await _cached(other.reads, ITEM)
        assert await _cached(other.reads, ITEM)
        await _announce(writer, ITEM)
        assert await _evicted(other.reads, ITEM)


async def test_invalidation_rolled_back_announcement_is_never_delivered(
    replicas: tuple[Services, Services],
) -> None:
    writer, other = replicas
    async with Listener(other.engine, other.reads).running():
        for record in (ITEM, OTHER):
            await _cached(other.reads, record)
        await _announce(writer, ITEM, commit=False)
        await _announce(writer, OTHER)
        # Notifications arrive in commit order: once OTHER's is in, ITEM's never will be.
        assert await _evicted(other.reads, OTHER)
        assert await _cached(other.reads, ITEM)


async def test_invalidation_listener_cut_off_reconnects_and_forgets_what_it_may_have_missed(
    replicas: tuple[Services, Services], database: str
) -> None:
    writer, other = replicas
    async with Listener(other.engine, other.reads, backoff=FAST_BACKOFF).running():
        await _cached(other.reads, ITEM)
        (backend,) = await _listening_backends(database)
        await postgres_admin(f"SELECT pg_terminate_backend({backend})")
        # Back on a new connection, it drops the cache: announcements may have been missed.
        assert await _evicted(other.reads, ITEM)
        assert await _listening_backends(database) != [backend]
        await _cached(other.reads, OTHER)
        await _announce(writer, OTHER)
        assert await _evicted(other.reads, OTHER)


async def test_invalidation_listener_stopped_leaves_no_listening_connection(
    replicas: tuple[Services, Services], database: str
) -> None:
    _, other = replicas
    async with Listener(other.engine, other.reads).running():
        assert len(await _listening_backends(database)) == 1
    assert await _listening_backends(database) == []


async def test_invalidation_on_sqlite_is_local_only(services: Services) -> None:
    before = asyncio.all_tasks()
    async with Listener(services.engine, services.reads).running():
        assert asyncio.all_tasks() == before  # one process: nobody to listen to
        await _cached(services.reads, ITEM)
        await _announce(services, ITEM)
        assert await _cached(services.reads, ITEM)

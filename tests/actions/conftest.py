"""A writable estate per test, on SQLite and on PostgreSQL: ERP, gateway database, CRM.

SQLite: a copy of a seeded ERP file and a fresh gateway database file. PostgreSQL: a fresh
database cloned from a seeded template (CREATE DATABASE ... TEMPLATE), holding both the
ERP's tables and the gateway's own, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.app import start
from gateway.config import ActionConfig, GatewayConfig
from gateway.demo import DemoEstate
from gateway.services import Services
from sources.demo import CrmProcess, build_estate, create_erp
from tests.factories import postgres_admin, require_postgres, services_for, with_source


def pg_url(database: str) -> str:
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}"


@pytest.fixture(scope="session")
def sqlite_erp_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("erp-template") / "erp.db"
    asyncio.run(create_erp(f"sqlite+aiosqlite:///{path}", build_estate()))
    return path


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    require_postgres()
    name = f"gh_tpl_{uuid.uuid4().hex[:10]}"
    asyncio.run(postgres_admin(f'CREATE DATABASE "{name}"'))
    asyncio.run(create_erp(pg_url(name), build_estate()))
    yield name
    asyncio.run(postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@dataclass(frozen=True)
class Backend:
    """Where one test's ERP and gateway database live."""

    name: str
    erp_url: str
    database_url: str


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_erp_template")
        shutil.copy(template, tmp_path / "erp.db")
        yield Backend(
            "sqlite",
            f"sqlite+aiosqlite:///{tmp_path / 'erp.db'}",
            f"sqlite+aiosqlite:///{tmp_path / 'gatehouse.db'}",
        )
        return
    template_name: str = request.getfixturevalue("postgres_template")
    name = f"gh_test_{uuid.uuid4().hex[:10]}"
    asyncio.run(postgres_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template_name}"'))
    yield Backend("postgres", pg_url(name), pg_url(name))
    asyncio.run(postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def write_config(estate: DemoEstate, backend: Backend) -> GatewayConfig:
    """The demo configuration over this test's writable ERP (and the shared CRM)."""
    return with_source(estate.config(), "erp", url=backend.erp_url, timeout=2.0)


@contextlib.asynccontextmanager
async def running(config: GatewayConfig, backend: Backend) -> AsyncIterator[Services]:
    """The gateway's services over `config` and the backend's database, started."""
    built = services_for(config, backend.database_url)
    await start(built)
    try:
        yield built
    finally:
        await built.close()


@pytest.fixture
async def governed(write_config: GatewayConfig, backend: Backend) -> AsyncIterator[Services]:
    """The gateway's services over this test's writable estate."""
    async with running(write_config, backend) as built:
        yield built


@pytest.fixture
async def governed_crm(
    write_config: GatewayConfig, backend: Backend, own_crm: CrmProcess
) -> AsyncIterator[Services]:
    """Like `governed`, with a CRM process of the test's own."""
    config = with_source(write_config, "crm", url=own_crm.url, timeout=1.0)
    async with running(config, backend) as built:
        yield built


@pytest.fixture
async def governed_acme(write_config: GatewayConfig, backend: Backend) -> AsyncIterator[Services]:
    """Like `governed`, with Acme's own actions (tests/acme) configured next to the demo's."""
    acme = {
        "rename_item": ActionConfig(implementation="tests.acme.actions:RenameItem", source="erp"),
        "unreliable": ActionConfig(implementation="tests.acme.actions:Unreliable", source="erp"),
    }
    config = write_config.model_copy(update={"actions": {**write_config.actions, **acme}})
    async with running(config, backend) as built:
        yield built

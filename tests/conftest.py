"""Shared fixtures: one demo estate (ERP file + CRM process) per test session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.app import start
from gateway.config import GatewayConfig
from gateway.demo import DemoEstate, running_estate
from gateway.services import Services
from sources.demo import CrmProcess, build_estate, seed_crm
from tests.factories import services_for


@pytest.fixture(scope="session")
def estate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoEstate]:
    """The demo estate, seeded once: ERP in a SQLite file, CRM in its own process."""
    with running_estate(tmp_path_factory.mktemp("estate")) as running:
        yield running


@pytest.fixture
def config(estate: DemoEstate) -> GatewayConfig:
    """The demo configuration over the session's estate."""
    return estate.config()


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """A fresh SQLite file for the gateway's own database."""
    return f"sqlite+aiosqlite:///{tmp_path / 'gatehouse.db'}"


@pytest.fixture
async def services(config: GatewayConfig, database_url: str) -> AsyncIterator[Services]:
    """Fresh services (empty caches, zeroed counters, empty gateway database)."""
    built = services_for(config, database_url)
    await start(built)
    yield built
    await built.close()


@pytest.fixture
def own_crm(tmp_path: Path) -> Iterator[CrmProcess]:
    """A CRM process of the test's own, free to change, stop and restart."""
    seed_crm(tmp_path / "crm.db", build_estate())
    with CrmProcess.start(tmp_path / "crm.db") as process:
        yield process


@pytest.fixture
def repo_root() -> Path:
    """The repository's root directory."""
    return Path(__file__).resolve().parent.parent

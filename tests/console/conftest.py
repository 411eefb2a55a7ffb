"""A live gateway with the console, over a writable ERP copy of its own, per test module."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.app import create_app
from gateway.demo import DemoEstate
from gateway.settings import Settings
from sources.demo import build_estate, create_erp
from tests.console.flows import Console
from tests.factories import live_server, with_source


@pytest.fixture(scope="module")
def console(estate: DemoEstate, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """The gateway served on loopback: its own ERP file and gateway database, the shared CRM."""
    folder = tmp_path_factory.mktemp("console")
    erp_url = f"sqlite+aiosqlite:///{folder / 'erp.db'}"
    asyncio.run(create_erp(erp_url, build_estate()))
    database = folder / "gatehouse.db"
    config = with_source(estate.config(), "erp", url=erp_url, timeout=2.0)
    app = create_app(Settings(database_url=f"sqlite+aiosqlite:///{database}"), config)
    with live_server(app) as server:
        yield Console(url=server.url, keys=estate.keys, database=database)


@pytest.fixture
def screenshots(repo_root: Path) -> Path:
    """Where browser tests leave a picture of each page (git-ignored)."""
    folder = repo_root / "test-output" / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder

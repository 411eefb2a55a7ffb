"""The governed actions on the Tryton estate, through the gateway's write path, against a
real Tryton on PostgreSQL (a fresh copy of the seeded database for each test)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.actions.store import Status
from gateway.services import Services
from sources.tryton_estate.server import TrytonServer
from tests.factories import submit
from tests.tryton.conftest import ServerFactory
from tests.tryton.estate import governed_tryton

pytestmark = pytest.mark.postgres


@pytest.fixture
def server(tryton_servers: ServerFactory) -> TrytonServer:
    return tryton_servers()


@pytest.fixture
async def governed(
    server: TrytonServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Services]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'gatehouse.db'}"
    async with governed_tryton(server, url, monkeypatch) as services:
        yield services


async def on_hand(services: Services, sku: str) -> int:
    record = await services.catalog.source("inventory.adjust").read("InventoryItem", sku)
    assert record is not None
    (level,) = record.data["levels"]
    return int(level["on_hand"])


ADJUST = {"sku": "SKU-1004", "location": "WH", "delta": 5, "reason": "recount"}


async def test_adjust_inventory_moves_stock_in_tryton_once(governed: Services) -> None:
    before = await on_hand(governed, "SKU-1004")

    result = await submit(governed, "inventory.adjust", ADJUST, key="adj-1")
    replay = await submit(governed, "inventory.adjust", ADJUST, key="adj-1")

    assert result.status is Status.APPLIED, result
    assert replay.status is Status.APPLIED
    assert await on_hand(governed, "SKU-1004") == before + 5


async def test_adjust_inventory_below_zero_invalid_nothing_moved(governed: Services) -> None:
    before = await on_hand(governed, "SKU-1004")

    result = await submit(governed, "inventory.adjust", {**ADJUST, "delta": -(before + 1)})

    assert result.status is Status.INVALID
    assert await on_hand(governed, "SKU-1004") == before

"""Faults on the Tryton estate: Tryton down during a write, a gateway that died between
creating a sale and confirming it, recovery that finds each action's own effect in Tryton."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.actions.store import Status
from gateway.services import Services
from sources.tryton_estate.actions.orders import PlaceOrder
from sources.tryton_estate.actions.tryton import mark
from sources.tryton_estate.server import TrytonServer
from tests.factories import as_principal, left_in_flight, submit
from tests.tryton.conftest import ServerFactory
from tests.tryton.estate import governed_tryton

pytestmark = pytest.mark.postgres

PLACE = {"customer_id": "C-00006", "lines": [{"sku": "SKU-1003", "quantity": 4}]}


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


async def sales_marked(services: Services, action_id: str) -> list[str]:
    rpc = services.catalog.source("order.place").rpc  # type: ignore[attr-defined]
    rows = await rpc.search_read("sale.sale", [("reference", "=", mark(action_id))], ["state"])
    return [row["state"] for row in rows]


async def test_tryton_down_write_failed_then_retried_once_back(
    governed: Services, server: TrytonServer
) -> None:
    server.kill()
    failed = await submit(governed, "order.place", PLACE, key="down-1")
    server.restart()

    assert failed.status is Status.FAILED, failed
    assert failed.errors[0].code == "SOURCE_UNAVAILABLE"
    assert failed.action is not None
    retried = await governed.writes.retry(failed.action.id, as_principal(governed, "olivia"))
    assert retried.status is Status.APPLIED, retried
    assert await sales_marked(governed, failed.action.id) in (["processing"], ["confirmed"])


async def test_crash_between_create_and_confirm_draft_discarded_then_key_retries(
    governed: Services,
) -> None:
    action = await left_in_flight(governed, "order.place", PLACE, key="crash-1", effect=False)
    # the dead process had created the sale (marked) but not confirmed it
    implementation = PlaceOrder()
    source = governed.catalog.source("order.place")
    data = implementation.Input.model_validate(PLACE)
    plan = await implementation.plan(data, source)  # type: ignore[arg-type]
    rpc = source.rpc  # type: ignore[attr-defined]
    values = {"party": plan.context["party"]["id"], "reference": mark(action.id)}
    await rpc.create("sale.sale", [values])
    assert await sales_marked(governed, action.id) == ["draft"]

    assert await governed.writes.recover_due() == 1

    found = await governed.writes.get(action.id)
    assert found is not None
    assert found.status is Status.FAILED
    assert await sales_marked(governed, action.id) == []  # nothing half-placed left
    replay = await submit(governed, "order.place", PLACE, key="crash-1")
    assert replay.status is Status.APPLIED, replay
    assert len(await sales_marked(governed, action.id)) == 1


async def test_crash_after_confirm_recovered_applied_with_its_order(governed: Services) -> None:
    action = await left_in_flight(governed, "order.place", PLACE, key="crash-2", effect=True)

    assert await governed.writes.recover_due() == 1

    found = await governed.writes.get(action.id)
    assert found is not None
    assert found.status is Status.APPLIED
    assert found.result is not None
    assert found.result["order_id"].startswith("SO-")
    replay = await submit(governed, "order.place", PLACE, key="crash-2")
    assert replay.status is Status.APPLIED
    assert len(await sales_marked(governed, action.id)) == 1  # placed once


async def test_tryton_down_during_recovery_in_doubt_then_recovered(
    governed: Services, server: TrytonServer
) -> None:
    adjust = {"sku": "SKU-1005", "location": "WH", "delta": 2, "reason": "found two"}
    action = await left_in_flight(governed, "inventory.adjust", adjust, key="crash-3", effect=True)
    server.kill()

    await governed.writes.recover_due()
    in_doubt = await governed.writes.get(action.id)
    server.restart()
    await governed.writes.recover_due()
    settled = await governed.writes.get(action.id)

    assert in_doubt is not None
    assert in_doubt.status is Status.IN_DOUBT
    assert settled is not None
    assert settled.status is Status.APPLIED

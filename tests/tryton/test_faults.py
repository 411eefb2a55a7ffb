"""Faults on the Tryton estate: Tryton down during a write, a gateway that died between
creating a sale and confirming it, recovery that finds each action's own effect in Tryton."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from gateway.actions.store import Status
from gateway.services import Services
from sources.tryton_estate.actions.orders import PlaceOrder
from sources.tryton_estate.actions.tryton import mark
from sources.tryton_estate.server import TrytonServer
from tests.factories import as_principal, left_in_flight, live_server, submit
from tests.tryton.estate import governed_tryton

pytestmark = pytest.mark.postgres

PLACE = {"customer_id": "C-00006", "lines": [{"sku": "SKU-1003", "quantity": 4}]}


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


@dataclass
class Hop:
    """An HTTP hop in front of Tryton (as a load balancer is): it forwards every call, and
    from the first call of `trip_on` on answers 503, as for a Tryton that died, until `back`."""

    target: str
    trip_on: str | None = None
    down: bool = False

    def back(self) -> None:
        self.trip_on, self.down = None, False

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/{path:path}")
        async def forward(path: str, request: Request) -> Response:
            body = await request.body()
            if self.trip_on is not None and self.trip_on.encode() in body:
                self.down = True
            if self.down:
                return Response(status_code=503)
            kept = ("authorization", "content-type")
            headers = {k: v for k, v in request.headers.items() if k in kept}
            async with httpx.AsyncClient(timeout=30) as client:
                answer = await client.post(f"{self.target}/{path}", content=body, headers=headers)
            return Response(answer.content, answer.status_code, media_type="application/json")

        return app


async def test_tryton_dies_between_create_and_confirm_draft_reported_then_cleared_by_retry(
    server: TrytonServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hop = Hop(server.url, trip_on="model.sale.sale.quote")
    url = f"sqlite+aiosqlite:///{tmp_path / 'gatehouse.db'}"
    with live_server(hop.app()) as front:
        async with governed_tryton(server, url, monkeypatch, url=front.url) as services:
            failed = await submit(services, "order.place", PLACE)
            assert failed.action is not None
            hop.back()
            drafts = await sales_marked(services, failed.action.id)
            retried = await services.writes.retry(
                failed.action.id, as_principal(services, "olivia")
            )
            placed = await sales_marked(services, failed.action.id)

    assert failed.status is Status.FAILED, failed
    assert failed.action.error is not None
    assert "unconfirmed sale it created" in failed.action.error
    assert f"gatehouse-{failed.action.id}" in failed.action.error
    assert drafts == ["draft"]  # reported, and still there while Tryton was away
    assert retried.status is Status.APPLIED, retried
    assert placed in (["processing"], ["confirmed"])  # the draft cancelled and deleted first

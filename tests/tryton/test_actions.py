"""The governed actions on the Tryton estate, through the gateway's write path, against a
real Tryton on PostgreSQL (one copy of the seeded database per module, so each test looks
at what it changed relative to before)."""

from __future__ import annotations

import pytest

from gateway.actions.store import Status
from gateway.services import Services
from sources.errors import SourceConflict
from tests.factories import submit

pytestmark = pytest.mark.postgres


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


async def sale_states(services: Services, reference: str | None = None) -> list[str]:
    rpc = services.catalog.source("order.place").rpc  # type: ignore[attr-defined]
    domain = [] if reference is None else [("reference", "=", reference)]
    return [row["state"] for row in await rpc.search_read("sale.sale", domain, ["state"])]


PLACE = {"customer_id": "C-00004", "lines": [{"sku": "SKU-1002", "quantity": 2}]}


async def test_place_order_creates_quotes_and_confirms_a_sale(governed: Services) -> None:
    result = await submit(governed, "order.place", PLACE, key="order-1")

    assert result.status is Status.APPLIED, result
    assert result.action is not None
    assert result.action.result is not None
    number = result.action.result["order_id"]
    assert result.action.result["status"] in ("confirmed", "processing")
    order = await governed.reads.get("Order", number)
    assert order is not None
    assert order.record.data["customer_id"] == "C-00004"
    assert order.record.data["reference"] == f"gatehouse-{result.action.id}"
    assert [(line["sku"], line["quantity"]) for line in order.record.data["lines"]] == [
        ("SKU-1002", 2)
    ]


async def test_place_order_over_credit_limit_invalid_with_tryton_message(
    governed: Services,
) -> None:
    sales = len(await sale_states(governed))
    # Cobalt Cafe may owe 300 EUR; 10 drills are 1290
    over = {"customer_id": "C-00003", "lines": [{"sku": "SKU-1002", "quantity": 10}]}

    result = await submit(governed, "order.place", over)

    assert result.status is Status.INVALID, result
    assert result.action is not None
    (problem,) = result.action.validation
    assert problem["rule"] == "TRYTON_RULE"
    assert problem["message"].startswith("Tryton refused it: ")
    assert "credit" in problem["message"].lower()
    assert len(await sale_states(governed)) == sales  # nothing left behind


async def test_place_order_more_than_in_stock_invalid_with_tryton_message(
    governed: Services,
) -> None:
    # Toolbox Large: none in stock
    short = {"customer_id": "C-00007", "lines": [{"sku": "SKU-1006", "quantity": 3}]}

    result = await submit(governed, "order.place", short)

    assert result.status is Status.INVALID, result
    assert result.action is not None
    message = result.action.validation[0]["message"]
    assert "is lower than its quantity" in message  # Tryton's own words (sale_stock_quantity)


async def test_cancel_placed_order_refused_once_tryton_processes_it(governed: Services) -> None:
    refused = await submit(
        governed, "order.cancel", {"order_id": "SO-00001", "reason": "customer called"}
    )

    assert refused.status is Status.INVALID
    assert refused.action is not None
    assert refused.action.validation[0]["rule"] == "TRYTON_WORKFLOW"


CONTACT = {"customer_id": "C-00005", "email": "new-ap@evergreen.example"}


async def test_update_contact_writes_party_email_in_tryton(governed: Services) -> None:
    result = await submit(governed, "customer.update_contact", CONTACT)

    assert result.status is Status.APPLIED, result
    record = await governed.catalog.source("customer.update_contact").read("Customer", "C-00005")
    assert record is not None
    assert record.data["email"] == "new-ap@evergreen.example"
    assert record.data["phone"] == "+32 2 555 01 05"  # untouched


async def test_update_contact_on_party_changed_since_read_is_tryton_conflict(
    governed: Services,
) -> None:
    action = governed.catalog.get("customer.update_contact")
    source = governed.catalog.source("customer.update_contact")
    assert action is not None
    data = action.Input.model_validate(CONTACT)
    plan = await action.plan(data, source)
    rpc = source.rpc  # type: ignore[attr-defined]
    # someone edits the party in Tryton after the gateway read it
    await rpc.write("party.party", [plan.context["party"]], {"name": "Evergreen Gardens Ltd"})

    with pytest.raises(SourceConflict):
        await action.execute(data, plan, source, action_id="a-1")

"""order.place and order.cancel: stock reserved and released, credit, validation, approval."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import column, delete, select, table

from gateway.actions.store import Status
from gateway.errors import ActionError
from gateway.outcomes import WriteResult
from gateway.services import Services
from tests.factories import as_principal, erp_connector, erp_rows, erp_tables, submit

# ---- the ERP, read directly ------------------------------------------------------------

MUTABLE = ("orders", "order_lines", "reservations", "stock_levels", "payments", "credit_notes")


async def erp_state(services: Services) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the tables a write could change, for 'nothing changed' checks."""
    found = erp_tables(services)
    state: dict[str, list[tuple[Any, ...]]] = {}
    for name in MUTABLE:
        t = found[name]
        state[name] = [
            tuple(r) for r in await erp_rows(services, select(t).order_by(*t.primary_key))
        ]
    return state


@dataclass(frozen=True)
class Level:
    sku: str
    location: str
    on_hand: int
    reserved: int
    unit_price: Decimal

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved


async def levels(services: Services) -> list[Level]:
    """Stock of every active EUR item at every location, by SKU then location."""
    t = erp_tables(services)
    items, stock = t["items"], t["stock_levels"]
    query = (
        select(stock.c.sku, stock.c.location, stock.c.on_hand, stock.c.reserved)
        .add_columns(items.c.unit_price_cents)
        .join(items, items.c.sku == stock.c.sku)
        .where(items.c.active.is_(True), items.c.currency == "EUR")
        .order_by(stock.c.sku, stock.c.location)
    )
    return [
        Level(r.sku, r.location, r.on_hand, r.reserved, Decimal(r.unit_price_cents).scaleb(-2))
        for r in await erp_rows(services, query)
    ]


async def stock_of(services: Services, sku: str) -> dict[str, tuple[int, int]]:
    stock = erp_tables(services)["stock_levels"]
    query = select(stock.c.location, stock.c.on_hand, stock.c.reserved).where(stock.c.sku == sku)
    return {r.location: (r.on_hand, r.reserved) for r in await erp_rows(services, query)}


async def reservations_of(services: Services, order_id: str) -> set[tuple[str, str, int]]:
    held = erp_tables(services)["reservations"]
    query = select(held.c.sku, held.c.location, held.c.quantity).where(held.c.order_id == order_id)
    return {(r.sku, r.location, r.quantity) for r in await erp_rows(services, query)}


async def customers_by_credit(
    services: Services, currency: str = "EUR"
) -> list[tuple[str, Decimal]]:
    """Customers whose account is in `currency` with available credit, most first."""
    balances = table(
        "customer_balances",
        column("customer_id"),
        column("currency"),
        column("available_credit_cents"),
        schema=erp_connector(services).schema,
    )
    query = (
        select(balances.c.customer_id, balances.c.available_credit_cents)
        .where(balances.c.currency == currency, balances.c.available_credit_cents > 0)
        .order_by(balances.c.available_credit_cents.desc(), balances.c.customer_id)
    )
    return [
        (r.customer_id, Decimal(int(r.available_credit_cents)).scaleb(-2))
        for r in await erp_rows(services, query)
    ]


async def order_in_status(services: Services, status: str) -> str:
    orders = erp_tables(services)["orders"]
    query = select(orders.c.id).where(orders.c.status == status).order_by(orders.c.id).limit(1)
    (found,) = await erp_rows(services, query)
    return str(found.id)


async def outcomes(services: Services, action_id: str) -> list[tuple[str, str]]:
    events, _ = await services.audit.query(action_id=action_id, limit=20)
    return [(e.event, e.outcome) for e in events]


def field_names(result: WriteResult) -> list[str | None]:
    return [error.field for error in result.errors]


# ---- order.place ------------------------------------------------------------------------


async def test_place_order_by_storefront_reserves_stock_and_is_applied(
    governed: Services,
) -> None:
    (customer, _), *_ = await customers_by_credit(governed)
    stocked = await levels(governed)
    by_sku: dict[str, list[Level]] = {}
    for level in stocked:
        by_sku.setdefault(level.sku, []).append(level)
    # Line 1 names a location that is not the item's best one; line 2 leaves it to the gateway.
    first_sku, first_levels = next(
        (sku, lv) for sku, lv in by_sku.items() if len({x.available for x in lv}) == 3
    )
    chosen = min(first_levels, key=lambda lv: lv.available)
    assert chosen.available >= 3
    second_sku, second_levels = next(
        (sku, lv) for sku, lv in by_sku.items() if sku != first_sku and lv[0].available >= 2
    )
    best = max(second_levels, key=lambda lv: lv.available)
    expected_total = chosen.unit_price * 3 + best.unit_price * 2
    first_before = await stock_of(governed, first_sku)
    second_before = await stock_of(governed, second_sku)

    result = await submit(
        governed,
        "order.place",
        {
            "customer_id": customer,
            "lines": [
                {"sku": first_sku, "quantity": 3, "location": chosen.location},
                {"sku": second_sku, "quantity": 2},
            ],
        },
        principal="storefront",
    )

    assert result.status is Status.APPLIED, result.errors
    assert result.action is not None
    assert result.action.rule == "STOREFRONT_ORDERS"
    assert result.action.result is not None
    order_id = result.action.result["order_id"]
    order = await erp_connector(governed).read("Order", order_id)
    assert order is not None
    assert order.data["customer_id"] == customer
    assert order.data["status"] == "open"
    assert order.data["currency"] == "EUR"
    assert order.data["total"] == expected_total
    assert [(ln["sku"], ln["quantity"], ln["line_total"]) for ln in order.data["lines"]] == [
        (first_sku, 3, chosen.unit_price * 3),
        (second_sku, 2, best.unit_price * 2),
    ]
    orders = erp_tables(governed)["orders"]
    (stored,) = await erp_rows(
        governed, select(orders.c.total_cents).where(orders.c.id == order_id)
    )
    assert stored.total_cents == int(expected_total * 100)
    assert result.action.diff is not None
    assert result.action.diff["after"]["total"] == str(expected_total)

    assert await reservations_of(governed, order_id) == {
        (first_sku, chosen.location, 3),
        (second_sku, best.location, 2),
    }
    first_after = await stock_of(governed, first_sku)
    second_after = await stock_of(governed, second_sku)
    on_hand, reserved = first_before[chosen.location]
    assert first_after == {**first_before, chosen.location: (on_hand, reserved + 3)}
    on_hand, reserved = second_before[best.location]
    assert second_after == {**second_before, best.location: (on_hand, reserved + 2)}

    events, _ = await governed.audit.query(action_id=result.action.id, limit=10)
    assert [(e.event, e.principal) for e in events] == [("action.applied", "storefront")]
    assert events[0].payload["result"] == {"order_id": order_id}


async def list_price(services: Services, sku: str, currency: str) -> Decimal:
    prices = erp_tables(services)["item_prices"]
    query = select(prices.c.unit_price_cents).where(
        prices.c.sku == sku, prices.c.currency == currency
    )
    (row,) = await erp_rows(services, query)
    return Decimal(row.unit_price_cents).scaleb(-2)


async def test_place_order_for_a_gbp_account_is_priced_from_the_gbp_price_list(
    governed: Services,
) -> None:
    (customer, _), *_ = await customers_by_credit(governed, "GBP")
    level = next(lv for lv in await levels(governed) if lv.available >= 4)
    price = await list_price(governed, level.sku, "GBP")
    assert price == (level.unit_price * Decimal("0.86")).quantize(Decimal("0.01"))
    line = {"sku": level.sku, "quantity": 4, "location": level.location}

    result = await submit(
        governed, "order.place", {"customer_id": customer, "lines": [line]}, principal="storefront"
    )

    assert result.status is Status.APPLIED, result.errors
    assert result.action is not None
    assert result.action.result is not None
    order = await erp_connector(governed).read("Order", result.action.result["order_id"])
    assert order is not None
    assert (order.data["currency"], order.data["total"]) == ("GBP", price * 4)
    assert [ln["unit_price"] for ln in order.data["lines"]] == [price]


async def test_place_order_of_an_item_without_a_price_in_the_account_currency_is_invalid(
    governed: Services,
) -> None:
    (customer, _), *_ = await customers_by_credit(governed, "GBP")
    level = next(lv for lv in await levels(governed) if lv.available >= 1)
    prices = erp_tables(governed)["item_prices"]
    async with erp_connector(governed).transaction() as connection:
        await connection.execute(
            delete(prices).where(prices.c.sku == level.sku, prices.c.currency == "GBP")
        )
    before = await erp_state(governed)
    line = {"sku": level.sku, "quantity": 1}

    result = await submit(
        governed, "order.place", {"customer_id": customer, "lines": [line]}, principal="storefront"
    )

    assert result.status is Status.INVALID
    assert [(e.field, e.message) for e in result.errors] == [
        ("lines.0.sku", f"{level.sku} has no price in GBP, the account's currency")
    ]
    assert result.action is not None
    assert result.action.validation[0]["rule"] == "ACCOUNT_CURRENCY"
    assert await erp_state(governed) == before


@dataclass(frozen=True)
class Facts:
    """What the invalid cases are built from, found in this test's ERP."""

    customer: str
    tight_customer: str
    tight_credit: Decimal
    sku: str
    best_available: int
    inactive_sku: str
    expensive: Level


async def facts(services: Services) -> Facts:
    customers = await customers_by_credit(services)
    stocked = await levels(services)
    level = stocked[0]
    best = max(lv.available for lv in stocked if lv.sku == level.sku)
    items = erp_tables(services)["items"]
    (inactive, *_) = await erp_rows(
        services, select(items.c.sku).where(items.c.active.is_(False)).order_by(items.c.sku)
    )
    tight, credit = customers[-1]
    expensive = max(stocked, key=lambda lv: lv.unit_price * lv.available)
    return Facts(customers[0][0], tight, credit, level.sku, best, inactive.sku, expensive)


def _over_credit(f: Facts) -> dict[str, Any]:
    quantity = int(f.tight_credit / f.expensive.unit_price) + 1
    assert quantity <= f.expensive.available, "the demo has no item that can exceed the credit"
    line = {"sku": f.expensive.sku, "quantity": quantity, "location": f.expensive.location}
    return {"customer_id": f.tight_customer, "lines": [line]}


def _order(*lines: dict[str, Any]) -> Callable[[Facts], dict[str, Any]]:
    return lambda f: {"customer_id": f.customer, "lines": [dict(line) for line in lines]}


INVALID_ORDERS: list[tuple[str, Callable[[Facts], dict[str, Any]], str]] = [
    ("unknown-sku", lambda f: _order({"sku": "SKU-9999", "quantity": 1})(f), "lines.0.sku"),
    ("inactive-sku", lambda f: _order({"sku": f.inactive_sku, "quantity": 1})(f), "lines.0.sku"),
    (
        "not-enough-stock",
        lambda f: _order({"sku": f.sku, "quantity": f.best_available + 1})(f),
        "lines.0.quantity",
    ),
    (
        "unstocked-location",
        lambda f: _order({"sku": f.sku, "quantity": 1, "location": "WH-XXX"})(f),
        "lines.0.location",
    ),
    (
        "second-line-unknown",
        lambda f: _order({"sku": f.sku, "quantity": 1}, {"sku": "SKU-9999", "quantity": 1})(f),
        "lines.1.sku",
    ),
    ("over-available-credit", _over_credit, "lines"),
    (
        "duplicate-sku",
        lambda f: _order({"sku": f.sku, "quantity": 1}, {"sku": f.sku, "quantity": 2})(f),
        "lines",
    ),
    ("empty-lines", lambda f: {"customer_id": f.customer, "lines": []}, "lines"),
    ("quantity-zero", lambda f: _order({"sku": f.sku, "quantity": 0})(f), "lines.0.quantity"),
    (
        "unknown-customer",
        lambda f: {"customer_id": "C-99999", "lines": [{"sku": f.sku, "quantity": 1}]},
        "customerId",
    ),
]


@pytest.mark.parametrize(
    ("build", "field"),
    [pytest.param(build, field, id=name) for name, build, field in INVALID_ORDERS],
)
async def test_place_order_bad_lines_is_invalid_naming_the_field_and_changes_nothing(
    governed: Services, build: Callable[[Facts], dict[str, Any]], field: str
) -> None:
    data = build(await facts(governed))
    before = await erp_state(governed)
    result = await submit(governed, "order.place", data, principal="storefront")
    assert result.status is Status.INVALID
    assert field in field_names(result), result.errors
    assert await erp_state(governed) == before
    assert result.action is not None
    assert await outcomes(governed, result.action.id) == [("action.invalid", "INVALID")]


async def test_place_order_over_credit_names_the_credit_rule(governed: Services) -> None:
    result = await submit(
        governed, "order.place", _over_credit(await facts(governed)), principal="storefront"
    )
    assert result.status is Status.INVALID
    assert result.action is not None
    assert [v["rule"] for v in result.action.validation] == ["CREDIT_LIMIT"]
    assert "exceeds the available credit" in result.errors[0].message


# ---- order.cancel -----------------------------------------------------------------------


async def place(services: Services, quantity: int = 4) -> tuple[str, Level]:
    """Place an order for one line through the pipeline; its id and the level it reserved."""
    (customer, _), *_ = await customers_by_credit(services)
    level = next(lv for lv in await levels(services) if lv.available >= quantity)
    line = {"sku": level.sku, "quantity": quantity, "location": level.location}
    result = await submit(
        services, "order.place", {"customer_id": customer, "lines": [line]}, principal="storefront"
    )
    assert result.status is Status.APPLIED, result.errors
    assert result.action is not None
    assert result.action.result is not None
    return str(result.action.result["order_id"]), level


def cancel(order_id: str) -> dict[str, str]:
    return {"order_id": order_id, "reason": "customer changed their mind"}


async def order_status(services: Services, order_id: str) -> str:
    order = await erp_connector(services).read("Order", order_id)
    assert order is not None
    return str(order.data["status"])


async def test_cancel_open_order_releases_its_reservation_and_is_applied(
    governed: Services,
) -> None:
    order_id, level = await place(governed, quantity=4)
    held = (await stock_of(governed, level.sku))[level.location]
    assert held == (level.on_hand, level.reserved + 4)

    result = await submit(governed, "order.cancel", cancel(order_id))

    assert result.status is Status.APPLIED, result.errors
    assert result.action is not None
    assert result.action.result == {"order_id": order_id, "released": 1}
    assert await order_status(governed, order_id) == "cancelled"
    assert (await stock_of(governed, level.sku))[level.location] == (level.on_hand, level.reserved)
    assert await reservations_of(governed, order_id) == set()
    events, _ = await governed.audit.query(action_id=result.action.id, limit=10)
    assert [e.event for e in events] == ["action.applied"]
    assert events[0].payload["diff"] == {
        "before": {"status": "open"},
        "after": {"status": "cancelled"},
    }


@pytest.mark.parametrize("status", ["delivered", "cancelled", "shipped"])
async def test_cancel_order_not_open_is_invalid_and_changes_nothing(
    governed: Services, status: str
) -> None:
    order_id = await order_in_status(governed, status)
    before = await erp_state(governed)
    result = await submit(governed, "order.cancel", cancel(order_id))
    assert result.status is Status.INVALID
    assert field_names(result) == ["orderId"]
    assert f"is {status}; only open orders" in result.errors[0].message
    assert await erp_state(governed) == before
    assert result.action is not None
    assert await outcomes(governed, result.action.id) == [("action.invalid", "INVALID")]


async def test_cancel_unknown_order_is_invalid_naming_the_order(governed: Services) -> None:
    result = await submit(governed, "order.cancel", cancel("SO-NOPE"))
    assert result.status is Status.INVALID
    assert field_names(result) == ["orderId"]


async def test_cancel_by_support_bot_waits_for_approval_then_applies(governed: Services) -> None:
    order_id, level = await place(governed, quantity=5)
    before = await erp_state(governed)

    pending = await submit(governed, "order.cancel", cancel(order_id), principal="support-bot")

    assert pending.status is Status.PENDING_APPROVAL
    assert pending.action is not None
    assert pending.action.rule == "SUPPORT_CANCEL_REVIEW"
    assert pending.approvers == ("finn", "olivia")  # sam owns support-bot
    assert await erp_state(governed) == before
    with pytest.raises(ActionError, match="owns the agent"):
        await governed.writes.approve(pending.action.id, as_principal(governed, "sam"), "ok")

    approved = await governed.writes.approve(
        pending.action.id, as_principal(governed, "olivia"), "customer asked by phone"
    )

    assert approved.status is Status.APPLIED, approved.errors
    assert await order_status(governed, order_id) == "cancelled"
    assert (await stock_of(governed, level.sku))[level.location] == (level.on_hand, level.reserved)
    assert await reservations_of(governed, order_id) == set()
    assert await outcomes(governed, pending.action.id) == [
        ("action.pending_approval", "PENDING_APPROVAL"),
        ("approval.refused", "PENDING_APPROVAL"),  # sam's attempt, audited with its reason
        ("action.approved", "EXECUTING"),
        ("action.applied", "APPLIED"),
    ]


async def test_cancel_approved_after_order_was_cancelled_is_invalid_at_approval(
    governed: Services,
) -> None:
    order_id, level = await place(governed, quantity=2)
    pending = await submit(governed, "order.cancel", cancel(order_id), principal="support-bot")
    assert pending.status is Status.PENDING_APPROVAL
    assert pending.action is not None
    direct = await submit(governed, "order.cancel", cancel(order_id), principal="finn")
    assert direct.status is Status.APPLIED
    after_direct = await erp_state(governed)

    late = await governed.writes.approve(
        pending.action.id, as_principal(governed, "olivia"), "late"
    )

    assert late.status is Status.INVALID
    assert field_names(late) == ["orderId"]
    assert await erp_state(governed) == after_direct
    # Released once, not twice.
    assert (await stock_of(governed, level.sku))[level.location] == (level.on_hand, level.reserved)


async def test_place_orders_that_together_pass_the_credit_are_refused_even_at_once(
    governed: Services,
) -> None:
    f = await facts(governed)
    # Each order takes a little over half the tight customer's room: either fits alone,
    # both together do not, whether they arrive one after the other or at the same moment.
    quantity = int(f.tight_credit / 2 / f.expensive.unit_price) + 1
    assert 2 * quantity <= f.expensive.available
    assert quantity * f.expensive.unit_price <= f.tight_credit
    line = {"sku": f.expensive.sku, "quantity": quantity, "location": f.expensive.location}
    order = {"customer_id": f.tight_customer, "lines": [line]}
    results = await asyncio.gather(
        *(submit(governed, "order.place", order, principal="storefront") for _ in range(2))
    )
    assert sorted(r.status for r in results) == [Status.APPLIED, Status.INVALID]
    (refused,) = [r for r in results if r.status is Status.INVALID]
    assert refused.action is not None
    assert [v["rule"] for v in refused.action.validation] == ["CREDIT_LIMIT"]
    third = await submit(governed, "order.place", order, principal="storefront")
    assert third.status is Status.INVALID

"""Order actions: place an order (reserving its stock) and cancel one (releasing it)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, column, delete, func, insert, select, table, update
from sqlalchemy.ext.asyncio import AsyncConnection

from sources.actions import Invalid, Plan, Problem
from sources.demo.actions.erp import ErpAction, lock_account, tables, to_cents, utcnow
from sources.ordertocash import (
    CancelOrderContract,
    CancelOrderInput,
    OrderLineInput,
    PlaceOrderContract,
    PlaceOrderInput,
)
from sources.records import Record
from sources.sql import SqlConnector


class PlaceOrder(PlaceOrderContract, ErpAction):
    """order.place: known active SKUs, enough stock, total within available credit."""

    async def plan(self, data: PlaceOrderInput, source: SqlConnector) -> Plan:
        balance = await source.read("Balance", data.customer_id)
        if balance is None:
            return Plan.refused(
                f"unknown customer {data.customer_id}", "customerId", "KNOWN_CUSTOMER"
            )
        skus = [line.sku for line in data.lines]
        items = await source.read_many("InventoryItem", skus)
        currency = balance.data["currency"]
        async with source.transaction() as connection:
            prices = await list_prices(connection, source, skus, currency)
            available = await credit_room(connection, source, data.customer_id)
        problems: list[Problem] = []
        reservations: list[dict[str, Any]] = []
        total = Decimal("0.00")
        for index, line in enumerate(data.lines):
            price = prices.get(line.sku)
            line_problem, reservation = _reserve(index, line, items.get(line.sku), price, currency)
            if line_problem:
                problems.append(line_problem)
                continue
            assert reservation is not None
            assert price is not None
            reservations.append(reservation)
            total += price * line.quantity
        if not problems and total > available:
            problems.append(_over_credit(total, available, currency))
        after = {
            "customer_id": data.customer_id,
            "status": "open",
            "total": str(total),
            "currency": balance.data["currency"],
            "reservations": reservations,
        }
        plan = Plan(None, None, None, after, problems)
        plan.context = {
            "total": total,
            "currency": balance.data["currency"],
            "prices": prices,
            "reservations": reservations,
        }
        return plan

    async def execute(
        self, data: PlaceOrderInput, plan: Plan, source: SqlConnector, *, action_id: str
    ) -> dict[str, Any]:
        erp_tables = tables(source)
        order_id = f"SO-{uuid.uuid4().hex[:10].upper()}"
        now = utcnow()
        prices: Mapping[str, Decimal] = plan.context["prices"]
        async with source.transaction() as connection:
            # Orders for one customer queue on the account, and the credit is checked again
            # inside: two orders that each fit cannot together pass the limit.
            await lock_account(connection, source, data.customer_id)
            available = await credit_room(connection, source, data.customer_id)
            if plan.context["total"] > available:
                raise Invalid(
                    [_over_credit(plan.context["total"], available, plan.context["currency"])]
                )
            await connection.execute(
                insert(erp_tables["orders"]).values(
                    id=order_id,
                    customer_id=data.customer_id,
                    status="open",
                    currency=plan.context["currency"],
                    total_cents=to_cents(plan.context["total"]),
                    placed_at=now,
                    updated_at=now,
                )
            )
            await connection.execute(
                insert(erp_tables["order_lines"]),
                [
                    {
                        "order_id": order_id,
                        "line_no": n,
                        "sku": line.sku,
                        "quantity": line.quantity,
                        "unit_price_cents": to_cents(prices[line.sku]),
                        "line_total_cents": to_cents(prices[line.sku] * line.quantity),
                    }
                    for n, line in enumerate(data.lines, start=1)
                ],
            )
            for reservation in plan.context["reservations"]:
                await _hold(connection, erp_tables, order_id, reservation, now)
            result = {"order_id": order_id}
            await source.record_effect(action_id, result)
        return result


def _over_credit(total: Decimal, available: Decimal, currency: str) -> Problem:
    return Problem(
        f"order total {total} {currency} exceeds the available credit of {available} "
        "(credit limit, less what is owed and what open orders already commit)",
        "lines",
        "CREDIT_LIMIT",
    )


async def list_prices(
    connection: AsyncConnection, source: SqlConnector, skus: list[str], currency: str
) -> dict[str, Decimal]:
    """The price list's unit prices in `currency` of those `skus` that have one."""
    prices = tables(source)["item_prices"]
    rows = await connection.execute(
        select(prices.c.sku, prices.c.unit_price_cents).where(
            prices.c.sku.in_(skus), prices.c.currency == currency
        )
    )
    return {row.sku: Decimal(row.unit_price_cents).scaleb(-2) for row in rows}


async def credit_room(
    connection: AsyncConnection, source: SqlConnector, customer_id: str
) -> Decimal:
    """Credit limit, less what is owed, less open orders not yet invoiced."""
    balances = table(
        "customer_balances",
        column("customer_id"),
        column("available_credit_cents"),
        schema=source.schema,
    )
    orders = tables(source)["orders"]
    available = (
        await connection.execute(
            select(balances.c.available_credit_cents).where(balances.c.customer_id == customer_id)
        )
    ).scalar_one_or_none()
    committed = (
        await connection.execute(
            select(func.coalesce(func.sum(orders.c.total_cents), 0)).where(
                orders.c.customer_id == customer_id, orders.c.status == "open"
            )
        )
    ).scalar_one()
    return Decimal(int(available or 0) - int(committed)).scaleb(-2)


def _reserve(
    index: int, line: OrderLineInput, item: Record | None, price: Decimal | None, currency: str
) -> tuple[Problem | None, dict[str, Any] | None]:
    field = f"lines.{index}"
    if item is None:
        return Problem(f"unknown SKU {line.sku}", f"{field}.sku", "KNOWN_SKU"), None
    if not item.data["active"]:
        return Problem(f"{line.sku} is no longer sold", f"{field}.sku", "ACTIVE_SKU"), None
    if price is None:
        return Problem(
            f"{line.sku} has no price in {currency}, the account's currency",
            f"{field}.sku",
            "ACCOUNT_CURRENCY",
        ), None
    levels = [
        lv for lv in item.data["levels"] if line.location is None or lv["location"] == line.location
    ]
    if line.location is not None and not levels:
        return Problem(
            f"{line.sku} is not stocked at {line.location}", f"{field}.location", "KNOWN_LOCATION"
        ), None
    best = max(levels, key=lambda lv: lv["available"], default=None)
    if best is None or best["available"] < line.quantity:
        have = 0 if best is None else best["available"]
        where = line.location or "any one location"
        return Problem(
            f"only {have} of {line.sku} available at {where}, {line.quantity} ordered",
            f"{field}.quantity",
            "STOCK_AVAILABLE",
        ), None
    return None, {
        "sku": line.sku,
        "location": best["location"],
        "quantity": line.quantity,
        "available_before": best["available"],
        "available_after": best["available"] - line.quantity,
    }


async def _hold(
    connection: Any,
    tables: Mapping[str, Any],
    order_id: str,
    reservation: Mapping[str, Any],
    now: Any,
) -> None:
    levels = tables["stock_levels"]
    quantity = reservation["quantity"]
    held = await connection.execute(
        update(levels)
        .where(
            and_(
                levels.c.sku == reservation["sku"],
                levels.c.location == reservation["location"],
                levels.c.on_hand - levels.c.reserved >= quantity,
            )
        )
        .values(reserved=levels.c.reserved + quantity, updated_at=now)
    )
    if held.rowcount != 1:
        raise Invalid(
            [
                Problem(
                    f"stock of {reservation['sku']} at {reservation['location']} "
                    "changed since validation; not enough is available now",
                    "lines",
                    "STOCK_AVAILABLE",
                )
            ]
        )
    await connection.execute(
        insert(tables["reservations"]).values(
            order_id=order_id,
            sku=reservation["sku"],
            location=reservation["location"],
            quantity=quantity,
        )
    )


class CancelOrder(CancelOrderContract, ErpAction):
    """order.cancel: only open orders; releases the stock they hold."""

    async def plan(self, data: CancelOrderInput, source: SqlConnector) -> Plan:
        order = await source.read("Order", data.order_id)
        if order is None:
            return Plan.refused(f"unknown order {data.order_id}", "orderId", "KNOWN_ORDER")
        status = order.data["status"]
        plan = Plan(order.version, order, {"status": status}, {"status": "cancelled"})
        if status != "open":
            plan.problems.append(
                Problem(
                    f"order {data.order_id} is {status}; only open orders can be cancelled",
                    "orderId",
                    "ORDER_OPEN",
                )
            )
        return plan

    async def execute(
        self, data: CancelOrderInput, plan: Plan, source: SqlConnector, *, action_id: str
    ) -> dict[str, Any]:
        orders, levels = tables(source)["orders"], tables(source)["stock_levels"]
        reservations = tables(source)["reservations"]
        now = utcnow()
        async with source.transaction() as connection:
            cancelled = await connection.execute(
                update(orders)
                .where(and_(orders.c.id == data.order_id, orders.c.status == "open"))
                .values(status="cancelled", updated_at=now)
            )
            if cancelled.rowcount != 1:
                raise Invalid(
                    [Problem(f"order {data.order_id} is no longer open", "orderId", "ORDER_OPEN")]
                )
            held = (
                await connection.execute(
                    select(reservations).where(reservations.c.order_id == data.order_id)
                )
            ).all()
            for row in held:
                await connection.execute(
                    update(levels)
                    .where(and_(levels.c.sku == row.sku, levels.c.location == row.location))
                    .values(reserved=levels.c.reserved - row.quantity, updated_at=now)
                )
            await connection.execute(
                delete(reservations).where(reservations.c.order_id == data.order_id)
            )
            result = {"order_id": data.order_id, "released": len(held)}
            await source.record_effect(action_id, result)
        return result

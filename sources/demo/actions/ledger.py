"""Ledger actions: record a customer's payment, issue a credit note."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import column, func, insert, select, table
from sqlalchemy.ext.asyncio import AsyncConnection

from sources.actions import Invalid, Plan, Problem
from sources.demo.actions.erp import ErpAction, lock_account, money, tables, to_cents, utcnow
from sources.ordertocash import (
    IssueCreditNoteContract,
    IssueCreditNoteInput,
    RecordPaymentContract,
    RecordPaymentInput,
)
from sources.sql import SqlConnector


class RecordPayment(RecordPaymentContract, ErpAction):
    """payment.record: in the account's currency, never above what is outstanding."""

    async def plan(self, data: RecordPaymentInput, source: SqlConnector) -> Plan:
        balance = await source.read("Balance", data.customer_id)
        if balance is None:
            return Plan.refused(
                f"unknown customer {data.customer_id}", "customerId", "KNOWN_CUSTOMER"
            )
        outstanding: Decimal = balance.data["outstanding"]
        before = {"outstanding": str(outstanding), "currency": balance.data["currency"]}
        after = {**before, "outstanding": str(outstanding - data.amount)}
        plan = Plan(balance.version, balance, before, after)
        if data.currency != balance.data["currency"]:
            plan.problems.append(
                Problem(
                    f"the account is kept in {balance.data['currency']}, not {data.currency}",
                    "currency",
                    "ACCOUNT_CURRENCY",
                )
            )
        if data.amount > outstanding:
            plan.problems.append(_above_outstanding(data.amount, outstanding))
        async with source.transaction() as connection:
            if await _reference_used(connection, source, data.reference):
                plan.problems.append(_reference_problem(data.reference))
        return plan

    async def execute(
        self, data: RecordPaymentInput, plan: Plan, source: SqlConnector, *, action_id: str
    ) -> dict[str, Any]:
        payment_id = f"PAY-{uuid.uuid4().hex[:10].upper()}"
        async with source.transaction() as connection:
            # Checked again under the account's lock: two payments validated side by side
            # must not together take the account below zero, nor share a reference.
            await lock_account(connection, source, data.customer_id)
            outstanding = await _outstanding(connection, source, data.customer_id)
            if outstanding is not None and data.amount > outstanding:
                raise Invalid([_above_outstanding(data.amount, outstanding)])
            if await _reference_used(connection, source, data.reference):
                raise Invalid([_reference_problem(data.reference)])
            await connection.execute(
                insert(tables(source)["payments"]).values(
                    id=payment_id,
                    customer_id=data.customer_id,
                    currency=data.currency,
                    amount_cents=to_cents(data.amount),
                    reference=data.reference,
                    received_at=utcnow(),
                )
            )
            result = {"payment_id": payment_id}
            await source.record_effect(action_id, result)
        return result


def _above_outstanding(amount: Decimal, outstanding: Decimal) -> Problem:
    return Problem(
        f"payment of {amount} is above the {outstanding} outstanding",
        "amount",
        "NOT_ABOVE_OUTSTANDING",
    )


def _reference_problem(reference: str) -> Problem:
    return Problem(
        f"a payment with reference {reference} is already recorded",
        "reference",
        "UNIQUE_REFERENCE",
    )


async def _reference_used(
    connection: AsyncConnection, source: SqlConnector, reference: str
) -> bool:
    payments = tables(source)["payments"]
    found = await connection.execute(select(payments.c.id).where(payments.c.reference == reference))
    return found.first() is not None


async def _outstanding(
    connection: AsyncConnection, source: SqlConnector, customer_id: str
) -> Decimal | None:
    """What the customer owes now, as the Balance entity (the customer_balances view) says."""
    balances = table(
        "customer_balances",
        column("customer_id"),
        column("outstanding_cents"),
        schema=source.schema,
    )
    cents = (
        await connection.execute(
            select(balances.c.outstanding_cents).where(balances.c.customer_id == customer_id)
        )
    ).scalar_one_or_none()
    return None if cents is None else money(cents)


class IssueCreditNote(IssueCreditNoteContract, ErpAction):
    """credit_note.issue: against the customer's own order, never beyond what it is worth."""

    async def plan(self, data: IssueCreditNoteInput, source: SqlConnector) -> Plan:
        balance = await source.read("Balance", data.customer_id)
        order = await source.read("Order", data.order_id)
        if balance is None:
            return Plan.refused(
                f"unknown customer {data.customer_id}", "customerId", "KNOWN_CUSTOMER"
            )
        if order is None or order.data["customer_id"] != data.customer_id:
            return Plan.refused(
                f"{data.customer_id} has no order {data.order_id}", "orderId", "CUSTOMERS_ORDER"
            )
        async with source.transaction() as connection:
            credited, ceiling, cancelled = await _credit_room(connection, source, data.order_id)
        outstanding: Decimal = balance.data["outstanding"]
        # The currency too, as a payment's diff has it: the amount is in it, and the record of
        # the action (the ledger, exports) says so without reading the account again.
        before = {
            "outstanding": str(outstanding),
            "credited_on_order": str(credited),
            "currency": balance.data["currency"],
        }
        after = {
            **before,
            "outstanding": str(outstanding - data.amount),
            "credited_on_order": str(credited + data.amount),
        }
        plan = Plan(balance.version, balance, before, after)
        if (problem := _beyond_order(data.amount, credited, ceiling, cancelled)) is not None:
            plan.problems.append(problem)
        plan.context = {"currency": order.data["currency"]}
        return plan

    async def execute(
        self, data: IssueCreditNoteInput, plan: Plan, source: SqlConnector, *, action_id: str
    ) -> dict[str, Any]:
        note_id = f"CN-{uuid.uuid4().hex[:10].upper()}"
        async with source.transaction() as connection:
            # Checked again under the account's lock: two credit notes validated side by
            # side must not together go beyond what the order is worth (or what was paid).
            await lock_account(connection, source, data.customer_id)
            credited, ceiling, cancelled = await _credit_room(connection, source, data.order_id)
            if (problem := _beyond_order(data.amount, credited, ceiling, cancelled)) is not None:
                raise Invalid([problem])
            await connection.execute(
                insert(tables(source)["credit_notes"]).values(
                    id=note_id,
                    customer_id=data.customer_id,
                    order_id=data.order_id,
                    currency=plan.context["currency"],
                    amount_cents=to_cents(data.amount),
                    reason=data.reason,
                    issued_at=utcnow(),
                )
            )
            result = {"credit_note_id": note_id}
            await source.record_effect(action_id, result)
        return result


def _beyond_order(
    amount: Decimal, credited: Decimal, ceiling: Decimal, cancelled: bool
) -> Problem | None:
    if credited + amount <= ceiling:
        return None
    what = "paid on the cancelled order" if cancelled else "the order total"
    return Problem(
        f"credit of {amount} would bring the order's credit to "
        f"{credited + amount}, beyond {ceiling} {what}",
        "amount",
        "CREDIT_WITHIN_ORDER",
    )


async def _credit_room(
    connection: AsyncConnection, source: SqlConnector, order_id: str
) -> tuple[Decimal, Decimal, bool]:
    """Credit already issued on an order, the most it may reach, and whether it is cancelled.

    The most is the order's total; for a cancelled order, what was paid against its invoices.
    """
    orders, notes, invoices, payments = (
        tables(source)[name] for name in ("orders", "credit_notes", "invoices", "payments")
    )
    order = (
        await connection.execute(
            select(orders.c.status, orders.c.total_cents).where(orders.c.id == order_id)
        )
    ).one()
    # Payments reference the invoice they settle as "<invoice id>/<n>".
    paid = (
        select(func.coalesce(func.sum(payments.c.amount_cents), 0))
        .select_from(payments.join(invoices, payments.c.reference.like(invoices.c.id + "/%")))
        .where(invoices.c.order_id == order_id)
    )
    credited = select(func.coalesce(func.sum(notes.c.amount_cents), 0)).where(
        notes.c.order_id == order_id
    )
    credited_cents = (await connection.execute(credited)).scalar_one()
    cancelled = order.status == "cancelled"
    ceiling_cents = (
        (await connection.execute(paid)).scalar_one() if cancelled else order.total_cents
    )
    return money(credited_cents), money(ceiling_cents), cancelled

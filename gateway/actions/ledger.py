"""Ledger actions: record a customer's payment, issue a credit note."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Annotated, Any, ClassVar

from pydantic import Field, StringConstraints
from sqlalchemy import func, insert, select

from gateway.actions.base import ActionInput, Plan, Problem, WriteEnv, to_cents, utcnow

Amount = Annotated[Decimal, Field(gt=0, le=Decimal("1000000000"), decimal_places=2)]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]


class RecordPaymentInput(ActionInput):
    """Money received from a customer."""

    customer_id: str = Field(min_length=1, max_length=32)
    amount: Amount
    currency: Currency
    reference: str = Field(min_length=1, max_length=100, description="The bank reference.")


class RecordPayment:
    """payment.record: in the account's currency, never above what is outstanding."""

    kind: ClassVar[str] = "payment.record"
    mutation: ClassVar[str] = "recordPayment"
    entity: ClassVar[str] = "Balance"
    summary: ClassVar[str] = "Record a payment received from a customer."
    Input: ClassVar[type[ActionInput]] = RecordPaymentInput
    pii_fields: ClassVar[frozenset[str]] = frozenset()
    creates: ClassVar[bool] = False

    def target(self, data: RecordPaymentInput) -> str:
        return data.customer_id

    def policy_input(self, data: RecordPaymentInput) -> dict[str, Any]:
        return {"amount": data.amount, "currency": data.currency}

    def amount(self, data: RecordPaymentInput) -> Decimal | None:
        return data.amount

    async def plan(self, data: RecordPaymentInput, env: WriteEnv) -> Plan:
        balance = await env.erp.read("Balance", data.customer_id)
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
            plan.problems.append(
                Problem(
                    f"payment of {data.amount} is above the {outstanding} outstanding",
                    "amount",
                    "NOT_ABOVE_OUTSTANDING",
                )
            )
        if await _reference_used(env, data.reference):
            plan.problems.append(
                Problem(
                    f"a payment with reference {data.reference} is already recorded",
                    "reference",
                    "UNIQUE_REFERENCE",
                )
            )
        return plan

    async def execute(
        self, data: RecordPaymentInput, plan: Plan, env: WriteEnv, *, idempotency_key: str
    ) -> dict[str, Any]:
        payment_id = f"PAY-{uuid.uuid4().hex[:10].upper()}"
        async with env.erp.transaction() as connection:
            await connection.execute(
                insert(env.erp_tables["payments"]).values(
                    id=payment_id,
                    customer_id=data.customer_id,
                    currency=data.currency,
                    amount_cents=to_cents(data.amount),
                    reference=data.reference,
                    received_at=utcnow(),
                )
            )
        return {"payment_id": payment_id}


async def _reference_used(env: WriteEnv, reference: str) -> bool:
    payments = env.erp_tables["payments"]
    async with env.erp.transaction() as connection:
        found = await connection.execute(
            select(payments.c.id).where(payments.c.reference == reference)
        )
        return found.first() is not None


class IssueCreditNoteInput(ActionInput):
    """Credit a customer against one of their orders."""

    customer_id: str = Field(min_length=1, max_length=32)
    order_id: str = Field(min_length=1, max_length=32)
    amount: Amount
    reason: str = Field(min_length=3, max_length=200)


class IssueCreditNote:
    """credit_note.issue: against the customer's own order, never beyond what it is worth."""

    kind: ClassVar[str] = "credit_note.issue"
    mutation: ClassVar[str] = "issueCreditNote"
    entity: ClassVar[str] = "Balance"
    summary: ClassVar[str] = "Issue a credit note to a customer against one of their orders."
    Input: ClassVar[type[ActionInput]] = IssueCreditNoteInput
    pii_fields: ClassVar[frozenset[str]] = frozenset()
    creates: ClassVar[bool] = False

    def target(self, data: IssueCreditNoteInput) -> str:
        return data.customer_id

    def policy_input(self, data: IssueCreditNoteInput) -> dict[str, Any]:
        return {"amount": data.amount}

    def amount(self, data: IssueCreditNoteInput) -> Decimal | None:
        return data.amount

    async def plan(self, data: IssueCreditNoteInput, env: WriteEnv) -> Plan:
        balance = await env.erp.read("Balance", data.customer_id)
        order = await env.erp.read("Order", data.order_id)
        if balance is None:
            return Plan.refused(
                f"unknown customer {data.customer_id}", "customerId", "KNOWN_CUSTOMER"
            )
        if order is None or order.data["customer_id"] != data.customer_id:
            return Plan.refused(
                f"{data.customer_id} has no order {data.order_id}", "orderId", "CUSTOMERS_ORDER"
            )
        credited, paid = await _credited_and_paid(env, data.order_id)
        ceiling = paid if order.data["status"] == "cancelled" else order.data["total"]
        outstanding: Decimal = balance.data["outstanding"]
        before = {"outstanding": str(outstanding), "credited_on_order": str(credited)}
        after = {
            "outstanding": str(outstanding - data.amount),
            "credited_on_order": str(credited + data.amount),
        }
        plan = Plan(balance.version, balance, before, after)
        if credited + data.amount > ceiling:
            what = (
                "paid on the cancelled order"
                if order.data["status"] == "cancelled"
                else ("the order total")
            )
            plan.problems.append(
                Problem(
                    f"credit of {data.amount} would bring the order's credit to "
                    f"{credited + data.amount}, beyond {ceiling} {what}",
                    "amount",
                    "CREDIT_WITHIN_ORDER",
                )
            )
        plan.context = {"currency": order.data["currency"]}
        return plan

    async def execute(
        self, data: IssueCreditNoteInput, plan: Plan, env: WriteEnv, *, idempotency_key: str
    ) -> dict[str, Any]:
        note_id = f"CN-{uuid.uuid4().hex[:10].upper()}"
        async with env.erp.transaction() as connection:
            await connection.execute(
                insert(env.erp_tables["credit_notes"]).values(
                    id=note_id,
                    customer_id=data.customer_id,
                    order_id=data.order_id,
                    currency=plan.context["currency"],
                    amount_cents=to_cents(data.amount),
                    reason=data.reason,
                    issued_at=utcnow(),
                )
            )
        return {"credit_note_id": note_id}


async def _credited_and_paid(env: WriteEnv, order_id: str) -> tuple[Decimal, Decimal]:
    """Credit notes already issued on an order, and payments against its invoices."""
    notes, invoices, payments = (
        env.erp_tables[name] for name in ("credit_notes", "invoices", "payments")
    )
    # Payments reference the invoice they settle as "<invoice id>/<n>".
    paid = (
        select(func.coalesce(func.sum(payments.c.amount_cents), 0))
        .select_from(payments.join(invoices, payments.c.reference.like(invoices.c.id + "/%")))
        .where(invoices.c.order_id == order_id)
    )
    credited = select(func.coalesce(func.sum(notes.c.amount_cents), 0)).where(
        notes.c.order_id == order_id
    )
    async with env.erp.transaction() as connection:
        credited_cents = (await connection.execute(credited)).scalar_one()
        paid_cents = (await connection.execute(paid)).scalar_one()
    return Decimal(int(credited_cents)).scaleb(-2), Decimal(int(paid_cents)).scaleb(-2)

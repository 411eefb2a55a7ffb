"""payment.record and credit_note.issue: exact money, ledger rules, agents, approvals."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from gateway.actions.store import Status
from gateway.errors import ActionError
from gateway.outcomes import WriteResult
from gateway.services import Services
from tests.factories import as_principal, erp_connector, erp_rows, erp_tables, submit

# ---- the ERP, read directly ------------------------------------------------------------


async def ledger(services: Services) -> dict[str, list[tuple[Any, ...]]]:
    """Every payment and credit note, for 'nothing changed' checks."""
    found = erp_tables(services)
    return {
        name: [
            tuple(r)
            for r in await erp_rows(services, select(found[name]).order_by(found[name].c.id))
        ]
        for name in ("payments", "credit_notes", "invoices")
    }


async def outstanding(services: Services, customer: str) -> Decimal:
    balance = await erp_connector(services).read("Balance", customer)
    assert balance is not None
    value: Decimal = balance.data["outstanding"]
    return value


async def credit_notes_on(services: Services, order_id: str) -> list[tuple[str, str, int]]:
    notes = erp_tables(services)["credit_notes"]
    query = (
        select(notes.c.customer_id, notes.c.currency, notes.c.amount_cents)
        .where(notes.c.order_id == order_id)
        .order_by(notes.c.issued_at)
    )
    return [(r.customer_id, r.currency, r.amount_cents) for r in await erp_rows(services, query)]


async def outcomes(services: Services, action_id: str) -> list[tuple[str, str]]:
    events, _ = await services.audit.query(action_id=action_id, limit=20)
    return [(e.event, e.outcome) for e in events]


def field_names(result: WriteResult) -> list[str | None]:
    return [error.field for error in result.errors]


async def indebted_eur_customer(services: Services) -> str:
    """The EUR customer owing the most (a view, so read through the connector's engine)."""
    accounts = erp_tables(services)["accounts"]
    ids = [r.customer_id for r in await erp_rows(services, select(accounts.c.customer_id))]
    balances = await erp_connector(services).read_many("Balance", ids)
    eur = [b for b in balances.values() if b.data["currency"] == "EUR"]
    return max(eur, key=lambda b: (b.data["outstanding"], b.key)).key


async def order_to_credit(
    services: Services,
    *,
    status: str = "delivered",
    at_least: Decimal = Decimal(0),
    at_most: Decimal = Decimal(10**9),
) -> tuple[str, str, Decimal]:
    """An EUR order in `status` with no credit note yet: id, customer, total."""
    orders, notes = erp_tables(services)["orders"], erp_tables(services)["credit_notes"]
    query = (
        select(orders.c.id, orders.c.customer_id, orders.c.total_cents)
        .where(
            orders.c.status == status,
            orders.c.currency == "EUR",
            orders.c.total_cents >= int(at_least * 100),
            orders.c.total_cents <= int(at_most * 100),
            ~select(notes.c.id).where(notes.c.order_id == orders.c.id).exists(),
        )
        .order_by(orders.c.id)
        .limit(1)
    )
    (found,) = await erp_rows(services, query)
    return str(found.id), str(found.customer_id), Decimal(int(found.total_cents)).scaleb(-2)


# ---- payment.record ---------------------------------------------------------------------


def payment(customer: str, amount: str, reference: str, currency: str = "EUR") -> dict[str, str]:
    return {"customer_id": customer, "amount": amount, "currency": currency, "reference": reference}


async def test_record_payment_of_cents_lowers_outstanding_exactly(governed: Services) -> None:
    customer = await indebted_eur_customer(governed)
    before = await outstanding(governed, customer)
    payments = erp_tables(governed)["payments"]

    first = await submit(governed, "payment.record", payment(customer, "0.10", "BANK-T-1"))
    second = await submit(governed, "payment.record", payment(customer, "0.20", "BANK-T-2"))

    assert first.status is second.status is Status.APPLIED, (first.errors, second.errors)
    assert await outstanding(governed, customer) == before - Decimal("0.30")
    stored = await erp_rows(
        governed,
        select(payments.c.reference, payments.c.customer_id, payments.c.currency)
        .add_columns(payments.c.amount_cents)
        .where(payments.c.reference.in_(["BANK-T-1", "BANK-T-2"]))
        .order_by(payments.c.reference),
    )
    assert [tuple(r) for r in stored] == [
        ("BANK-T-1", customer, "EUR", 10),
        ("BANK-T-2", customer, "EUR", 20),
    ]
    assert second.action is not None
    assert second.action.diff == {
        "before": {"outstanding": str(before - Decimal("0.10")), "currency": "EUR"},
        "after": {"outstanding": str(before - Decimal("0.30")), "currency": "EUR"},
    }
    events, _ = await governed.audit.query(action_id=second.action.id, limit=10)
    assert [(e.event, e.principal) for e in events] == [("action.applied", "olivia")]
    assert events[0].payload["input"]["amount"] == "0.20"
    assert events[0].payload["decision"]["rule"] == "OPS_WRITES"


@pytest.mark.parametrize(
    ("case", "field"),
    [
        ("wrong-currency", "currency"),
        ("lower-case-currency", "currency"),
        ("above-outstanding", "amount"),
        ("reused-reference", "reference"),
        ("three-decimals", "amount"),
        ("negative", "amount"),
        ("zero", "amount"),
        ("unknown-customer", "customerId"),
    ],
)
async def test_record_payment_bad_input_is_invalid_naming_the_field_and_changes_nothing(
    governed: Services, case: str, field: str
) -> None:
    customer = await indebted_eur_customer(governed)
    owed = await outstanding(governed, customer)
    payments = erp_tables(governed)["payments"]
    (used, *_) = await erp_rows(governed, select(payments.c.reference).order_by(payments.c.id))
    data = {
        "wrong-currency": payment(customer, "1.00", "BANK-X", currency="GBP"),
        "lower-case-currency": payment(customer, "1.00", "BANK-X", currency="eur"),
        "above-outstanding": payment(customer, str(owed + Decimal("0.01")), "BANK-X"),
        "reused-reference": payment(customer, "1.00", used.reference),
        "three-decimals": payment(customer, "1.005", "BANK-X"),
        "negative": payment(customer, "-5.00", "BANK-X"),
        "zero": payment(customer, "0.00", "BANK-X"),
        "unknown-customer": payment("C-99999", "1.00", "BANK-X"),
    }[case]
    before = await ledger(governed)

    result = await submit(governed, "payment.record", data)

    assert result.status is Status.INVALID
    assert field_names(result) == [field], result.errors
    assert await ledger(governed) == before
    assert await outstanding(governed, customer) == owed
    assert result.action is not None
    assert await outcomes(governed, result.action.id) == [("action.invalid", "INVALID")]


@pytest.mark.parametrize("agent", ["restock-bot", "support-bot"])
async def test_record_payment_by_agent_is_denied_and_audited(
    governed: Services, agent: str
) -> None:
    customer = await indebted_eur_customer(governed)
    owed = await outstanding(governed, customer)
    before = await ledger(governed)

    result = await submit(
        governed, "payment.record", payment(customer, "10.00", "BANK-AGENT"), principal=agent
    )

    assert result.status is Status.DENIED
    assert result.action is not None
    assert result.action.rule == "AGENT_NO_PAYMENTS"
    assert [e.code for e in result.errors] == ["DENIED"]
    assert "AGENT_NO_PAYMENTS" in result.errors[0].message
    assert await ledger(governed) == before
    assert await outstanding(governed, customer) == owed
    events, _ = await governed.audit.query(action_id=result.action.id, limit=10)
    assert [(e.event, e.outcome, e.principal, e.principal_kind) for e in events] == [
        ("action.denied", "DENIED", agent, "agent")
    ]
    assert events[0].payload["decision"]["rule"] == "AGENT_NO_PAYMENTS"


async def test_record_payment_concurrent_above_outstanding_applies_only_one(
    governed: Services,
) -> None:
    customer = await indebted_eur_customer(governed)
    owed = await outstanding(governed, customer)
    part = (owed * Decimal("0.6")).quantize(Decimal("0.01"))

    results = await asyncio.gather(
        *(
            submit(governed, "payment.record", payment(customer, str(part), f"BANK-RACE-{n}"))
            for n in range(3)
        )
    )

    assert sorted(r.status.value for r in results) == ["APPLIED", "INVALID", "INVALID"]
    for invalid in (r for r in results if r.status is Status.INVALID):
        assert field_names(invalid) == ["amount"]
    assert await outstanding(governed, customer) == owed - part


# ---- credit_note.issue ------------------------------------------------------------------


def credit(customer: str, order_id: str, amount: str) -> dict[str, str]:
    return {
        "customer_id": customer,
        "order_id": order_id,
        "amount": amount,
        "reason": "damaged in transit",
    }


async def test_issue_credit_note_by_support_bot_within_50_is_applied(governed: Services) -> None:
    order_id, customer, _ = await order_to_credit(governed, at_least=Decimal(100))
    owed = await outstanding(governed, customer)

    result = await submit(
        governed, "credit_note.issue", credit(customer, order_id, "40.00"), principal="support-bot"
    )

    assert result.status is Status.APPLIED, result.errors
    assert result.action is not None
    assert result.action.rule == "SUPPORT_SMALL_CREDIT"
    assert await credit_notes_on(governed, order_id) == [(customer, "EUR", 4000)]
    assert await outstanding(governed, customer) == owed - Decimal("40.00")
    events, _ = await governed.audit.query(action_id=result.action.id, limit=10)
    assert [(e.event, e.principal, e.on_behalf_of) for e in events] == [
        ("action.applied", "support-bot", "sam")
    ]


async def test_issue_credit_note_by_support_bot_over_50_waits_for_olivia_or_finn(
    governed: Services,
) -> None:
    order_id, customer, _ = await order_to_credit(governed, at_least=Decimal(100))
    owed = await outstanding(governed, customer)
    before = await ledger(governed)

    pending = await submit(
        governed, "credit_note.issue", credit(customer, order_id, "60.00"), principal="support-bot"
    )

    assert pending.status is Status.PENDING_APPROVAL
    assert pending.action is not None
    assert pending.action.rule == "SUPPORT_CREDIT_REVIEW"
    assert pending.approvers == ("finn", "olivia")  # not sam: he owns support-bot
    assert await ledger(governed) == before
    with pytest.raises(ActionError, match="owns the agent"):
        await governed.writes.approve(pending.action.id, as_principal(governed, "sam"), "mine")

    approved = await governed.writes.approve(
        pending.action.id, as_principal(governed, "olivia"), "photos attached"
    )

    assert approved.status is Status.APPLIED, approved.errors
    assert await credit_notes_on(governed, order_id) == [(customer, "EUR", 6000)]
    assert await outstanding(governed, customer) == owed - Decimal("60.00")
    assert await outcomes(governed, pending.action.id) == [
        ("action.pending_approval", "PENDING_APPROVAL"),
        ("approval.refused", "PENDING_APPROVAL"),  # sam's attempt, audited with its reason
        ("action.approved", "EXECUTING"),
        ("action.applied", "APPLIED"),
    ]


async def test_issue_credit_note_over_5000_by_olivia_stays_pending_after_finn(
    governed: Services,
) -> None:
    # Two distinct approvers are needed, and olivia requested it: finn is the only approver
    # left in the demo, so the action cannot be applied; it waits until it expires.
    order_id, customer, _ = await order_to_credit(governed, at_least=Decimal(8000))
    before = await ledger(governed)

    pending = await submit(governed, "credit_note.issue", credit(customer, order_id, "7000.00"))

    assert pending.status is Status.PENDING_APPROVAL
    assert pending.action is not None
    assert pending.action.rule == "LARGE_CREDIT"
    assert pending.action.approvals_required == 2
    assert pending.approvers == ("finn",)
    assert [e.code for e in pending.errors] == ["NOT_ENOUGH_APPROVERS"]

    once = await governed.writes.approve(
        pending.action.id, as_principal(governed, "finn"), "checked the claim"
    )

    assert once.status is Status.PENDING_APPROVAL
    assert once.approvers == ()
    assert await ledger(governed) == before
    with pytest.raises(ActionError, match="already"):
        await governed.writes.approve(pending.action.id, as_principal(governed, "finn"), "again")
    with pytest.raises(ActionError, match="requested this action"):
        await governed.writes.approve(pending.action.id, as_principal(governed, "olivia"), "me")
    stored = await governed.writes.get(pending.action.id)
    assert stored is not None
    assert stored.status is Status.PENDING_APPROVAL
    assert [a.approver for a in stored.approvals] == ["finn"]
    assert await ledger(governed) == before
    assert await outcomes(governed, pending.action.id) == [
        ("action.pending_approval", "PENDING_APPROVAL"),
        ("action.approval_recorded", "PENDING_APPROVAL"),
        ("approval.refused", "PENDING_APPROVAL"),  # finn again
        ("approval.refused", "PENDING_APPROVAL"),  # olivia, who requested it
    ]


async def test_issue_credit_note_over_5000_by_sam_is_applied_after_two_approvals(
    governed: Services,
) -> None:
    order_id, customer, _ = await order_to_credit(governed, at_least=Decimal(8000))
    owed = await outstanding(governed, customer)
    before = await ledger(governed)

    pending = await submit(
        governed, "credit_note.issue", credit(customer, order_id, "7000.00"), principal="sam"
    )

    assert pending.status is Status.PENDING_APPROVAL
    assert pending.action is not None
    assert pending.action.approvals_required == 2
    assert pending.approvers == ("finn", "olivia")
    once = await governed.writes.approve(pending.action.id, as_principal(governed, "finn"), "ok")
    assert once.status is Status.PENDING_APPROVAL
    assert once.approvers == ("olivia",)
    assert await ledger(governed) == before

    twice = await governed.writes.approve(
        pending.action.id, as_principal(governed, "olivia"), "ok too"
    )

    assert twice.status is Status.APPLIED, twice.errors
    assert await credit_notes_on(governed, order_id) == [(customer, "EUR", 700000)]
    assert await outstanding(governed, customer) == owed - Decimal("7000.00")
    assert await outcomes(governed, pending.action.id) == [
        ("action.pending_approval", "PENDING_APPROVAL"),
        ("action.approval_recorded", "PENDING_APPROVAL"),
        ("action.approved", "EXECUTING"),
        ("action.applied", "APPLIED"),
    ]


async def test_issue_credit_note_beyond_order_total_is_invalid(governed: Services) -> None:
    order_id, customer, total = await order_to_credit(governed, at_least=Decimal(100))
    first = await submit(governed, "credit_note.issue", credit(customer, order_id, "10.00"))
    assert first.status is Status.APPLIED, first.errors
    before = await ledger(governed)

    # What is left is total - 10.00: one cent more is refused, whatever the policy says.
    result = await submit(
        governed,
        "credit_note.issue",
        credit(customer, order_id, str(total - Decimal("10.00") + Decimal("0.01"))),
    )

    assert result.status is Status.INVALID
    assert field_names(result) == ["amount"]
    assert "the order total" in result.errors[0].message
    assert await ledger(governed) == before
    assert result.action is not None
    assert await outcomes(governed, result.action.id) == [("action.invalid", "INVALID")]


async def test_issue_credit_note_concurrent_beyond_order_total_applies_only_one(
    governed: Services,
) -> None:
    # Small enough that olivia's credit notes need no review (up to 1000).
    order_id, customer, total = await order_to_credit(
        governed, at_least=Decimal(100), at_most=Decimal(1500)
    )
    part = (total * Decimal("0.6")).quantize(Decimal("0.01"))

    results = await asyncio.gather(
        *(
            submit(governed, "credit_note.issue", credit(customer, order_id, str(part)))
            for _ in "ab"
        )
    )

    assert sorted(r.status.value for r in results) == ["APPLIED", "INVALID"]
    assert await credit_notes_on(governed, order_id) == [(customer, "EUR", int(part * 100))]


async def test_issue_credit_note_on_unpaid_cancelled_order_is_invalid(governed: Services) -> None:
    order_id, customer, _ = await order_to_credit(governed, status="cancelled")
    before = await ledger(governed)

    result = await submit(governed, "credit_note.issue", credit(customer, order_id, "1.00"))

    assert result.status is Status.INVALID
    assert field_names(result) == ["amount"]
    assert "paid on the cancelled order" in result.errors[0].message
    assert await ledger(governed) == before


async def test_issue_credit_note_on_cancelled_order_up_to_what_was_paid_is_applied(
    governed: Services,
) -> None:
    order_id, customer, total = await order_to_credit(governed, status="cancelled")
    found = erp_tables(governed)
    now = datetime.now(UTC)
    async with erp_connector(
        governed
    ).engine.begin() as connection:  # invoiced and part-paid, then cancelled
        await connection.execute(
            insert(found["invoices"]).values(
                id="INV-T-1",
                customer_id=customer,
                order_id=order_id,
                currency="EUR",
                amount_cents=int(total * 100),
                issued_at=now,
                due_date=now.date(),
                updated_at=now,
            )
        )
        await connection.execute(
            insert(found["payments"]).values(
                id="PAY-T-1",
                customer_id=customer,
                currency="EUR",
                amount_cents=2550,
                reference="INV-T-1/1",
                received_at=now,
            )
        )
    beyond = await submit(governed, "credit_note.issue", credit(customer, order_id, "25.51"))
    assert beyond.status is Status.INVALID
    assert field_names(beyond) == ["amount"]

    refund = await submit(governed, "credit_note.issue", credit(customer, order_id, "25.50"))

    assert refund.status is Status.APPLIED, refund.errors
    assert await credit_notes_on(governed, order_id) == [(customer, "EUR", 2550)]
    again = await submit(governed, "credit_note.issue", credit(customer, order_id, "0.01"))
    assert again.status is Status.INVALID
    notes = found["credit_notes"]
    (count,) = await erp_rows(
        governed, select(func.count()).select_from(notes).where(notes.c.order_id == order_id)
    )
    assert count[0] == 1


async def test_issue_credit_note_on_another_customers_order_is_invalid(governed: Services) -> None:
    order_id, owner, _ = await order_to_credit(governed, at_least=Decimal(100))
    other = await indebted_eur_customer(governed)
    assert other != owner
    before = await ledger(governed)

    result = await submit(governed, "credit_note.issue", credit(other, order_id, "5.00"))

    assert result.status is Status.INVALID
    assert field_names(result) == ["orderId"]
    assert await ledger(governed) == before
    assert result.action is not None
    assert await outcomes(governed, result.action.id) == [("action.invalid", "INVALID")]

"""payment.record and credit_note.issue on the Tryton estate, through the gateway's write
path, against a real Tryton on PostgreSQL. SO-00001 is C-00002's order; its invoice
(509.00) is posted and unpaid in the seed."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from gateway.actions.store import Status
from gateway.services import Services
from sources.tryton_estate.actions.ledger import credit_note_values
from tests.factories import submit

pytestmark = pytest.mark.postgres


async def outstanding(services: Services, customer: str = "C-00002") -> Decimal:
    record = await services.catalog.source("payment.record").read("Balance", customer)
    assert record is not None
    return Decimal(record.data["outstanding"])


async def credited(services: Services) -> Decimal:
    """What SO-00001 has been credited so far, as the action's own plan reads it."""
    action = governed_action(services, "credit_note.issue")
    data = action.Input.model_validate({**CREDIT, "amount": "0.01"})
    plan = await action.plan(data, services.catalog.source("credit_note.issue"))
    assert plan.before is not None
    return Decimal(plan.before["credited_on_order"])


def governed_action(services: Services, kind: str) -> Any:
    action = services.catalog.get(kind)
    assert action is not None
    return action


def rpc(services: Services) -> Any:
    return services.catalog.source("payment.record").rpc  # type: ignore[attr-defined]


def payment(reference: str, amount: str = "40.00") -> dict[str, str]:
    return {"customer_id": "C-00002", "amount": amount, "currency": "EUR", "reference": reference}


async def test_record_payment_pays_the_invoice_in_tryton_once(governed: Services) -> None:
    before = await outstanding(governed)

    result = await submit(governed, "payment.record", payment("BANK-1"), key="pay-1")
    replay = await submit(governed, "payment.record", payment("BANK-1"), key="pay-1")

    assert result.status is Status.APPLIED, result
    assert replay.status is Status.APPLIED
    assert await outstanding(governed) == before - Decimal("40.00")
    assert result.action is not None
    assert result.action.result is not None
    (paid,) = result.action.result["invoices"]
    assert Decimal(paid["amount"]) == Decimal("40.00")
    moves = await rpc(governed).search_read(
        "account.move", [("description", "=", f"BANK-1 gatehouse-{result.action.id}")], ["state"]
    )
    assert [move["state"] for move in moves] == ["posted"]


async def test_record_payment_above_outstanding_invalid_nothing_paid(governed: Services) -> None:
    before = await outstanding(governed)

    result = await submit(governed, "payment.record", payment("BANK-2", str(before + 1)))

    assert result.status is Status.INVALID, result
    assert result.action is not None
    assert [p["rule"] for p in result.action.validation] == ["NOT_ABOVE_OUTSTANDING"]
    assert await outstanding(governed) == before


async def test_record_payment_in_another_currency_invalid(governed: Services) -> None:
    before = await outstanding(governed)

    result = await submit(governed, "payment.record", {**payment("BANK-3"), "currency": "USD"})

    assert result.status is Status.INVALID, result
    assert result.action is not None
    assert [p["rule"] for p in result.action.validation] == ["ACCOUNT_CURRENCY"]
    assert await outstanding(governed) == before


async def test_record_payment_unknown_customer_invalid(governed: Services) -> None:
    result = await submit(governed, "payment.record", {**payment("BANK-4"), "customer_id": "C-9"})

    assert result.status is Status.INVALID, result
    assert result.action is not None
    assert [p["rule"] for p in result.action.validation] == ["KNOWN_CUSTOMER"]


async def test_record_payment_reference_used_before_invalid(governed: Services) -> None:
    first = await submit(governed, "payment.record", payment("BANK-5", "10.00"))
    before = await outstanding(governed)

    again = await submit(governed, "payment.record", payment("BANK-5", "10.00"))

    assert first.status is Status.APPLIED, first
    assert again.status is Status.INVALID, again
    assert again.action is not None
    assert [p["rule"] for p in again.action.validation] == ["UNIQUE_REFERENCE"]
    assert await outstanding(governed) == before


async def test_record_payment_find_effect_after_crash_applied(governed: Services) -> None:
    action = governed_action(governed, "payment.record")
    source = governed.catalog.source("payment.record")
    data = action.Input.model_validate(payment("BANK-6", "5.00"))
    plan = await action.plan(data, source)
    await action.execute(data, plan, source, action_id="crashed-pay")  # then the process died

    effect = await action.find_effect(data, source, action_id="crashed-pay", based_on=None)
    never = await action.find_effect(data, source, action_id="never-ran", based_on=None)

    assert effect is not None
    assert effect.applied
    assert effect.result["payment_id"] == "gatehouse-crashed-pay"
    assert never is not None
    assert not never.applied


CREDIT = {"customer_id": "C-00002", "order_id": "SO-00001", "amount": "25.00", "reason": "damaged"}


async def test_issue_credit_note_posts_it_in_tryton_once(governed: Services) -> None:
    before = await outstanding(governed)

    result = await submit(governed, "credit_note.issue", CREDIT, key="credit-1")
    replay = await submit(governed, "credit_note.issue", CREDIT, key="credit-1")

    assert result.status is Status.APPLIED, result
    assert replay.status is Status.APPLIED
    assert await outstanding(governed) == before - Decimal("25.00")
    assert result.action is not None
    assert result.action.result is not None
    assert result.action.result["status"] == "posted"
    (note,) = await rpc(governed).search_read(
        "account.invoice",
        [("reference", "=", f"gatehouse-{result.action.id}")],
        ["state", "total_amount", "description"],
    )
    assert (note["state"], note["total_amount"], note["description"]) == (
        "posted",
        Decimal("-25.00"),
        "damaged",
    )


async def test_issue_credit_note_beyond_order_total_invalid_nothing_issued(
    governed: Services,
) -> None:
    before, room = await outstanding(governed), Decimal("509.00") - await credited(governed)

    result = await submit(governed, "credit_note.issue", {**CREDIT, "amount": str(room + 1)})

    assert result.status is Status.INVALID, result
    assert result.action is not None
    assert [p["rule"] for p in result.action.validation] == ["CREDIT_WITHIN_ORDER"]
    assert await outstanding(governed) == before


async def test_issue_credit_note_counts_credit_already_given(governed: Services) -> None:
    room = Decimal("509.00") - await credited(governed)
    first = await submit(governed, "credit_note.issue", {**CREDIT, "amount": "20.00"})

    over = await submit(governed, "credit_note.issue", {**CREDIT, "amount": str(room - 19)})

    assert first.status is Status.APPLIED, first
    assert over.status is Status.INVALID, over
    assert await credited(governed) == Decimal("509.00") - room + Decimal("20.00")


async def test_issue_credit_note_on_another_customers_order_invalid(governed: Services) -> None:
    result = await submit(governed, "credit_note.issue", {**CREDIT, "customer_id": "C-00004"})

    assert result.status is Status.INVALID, result
    assert result.action is not None
    assert [p["rule"] for p in result.action.validation] == ["CUSTOMERS_ORDER"]


async def test_issue_credit_note_find_effect_after_crash_applied(governed: Services) -> None:
    action = governed_action(governed, "credit_note.issue")
    source = governed.catalog.source("credit_note.issue")
    data = action.Input.model_validate({**CREDIT, "amount": "3.00"})
    plan = await action.plan(data, source)
    await action.execute(data, plan, source, action_id="crashed-credit")  # then it died

    effect = await action.find_effect(data, source, action_id="crashed-credit", based_on=None)
    never = await action.find_effect(data, source, action_id="never-ran", based_on=None)

    assert effect.applied
    assert effect.result is not None
    assert effect.result["amount"] == "3.00"
    assert not never.applied


async def test_issue_credit_note_find_effect_discards_an_unposted_draft(
    governed: Services,
) -> None:
    action = governed_action(governed, "credit_note.issue")
    source = governed.catalog.source("credit_note.issue")
    data = action.Input.model_validate({**CREDIT, "amount": "4.00"})
    plan = await action.plan(data, source)
    # The process died between creating the credit note and posting it.
    draft = credit_note_values(data, plan.context["invoice"], "gatehouse-half")
    await rpc(governed).create("account.invoice", [draft])

    effect = await action.find_effect(data, source, action_id="half", based_on=None)

    assert not effect.applied
    found = await rpc(governed).search("account.invoice", [("reference", "=", "gatehouse-half")])
    assert found == []

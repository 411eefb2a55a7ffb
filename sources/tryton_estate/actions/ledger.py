"""payment.record and credit_note.issue in Tryton: a payment through Tryton's own pay
wizard on the customer's open invoices, and a customer credit note posted against the
order's invoice, so Tryton's accounting rules apply as well as ours.

    payment   the party's posted customer invoices, oldest first, each paid through the
              account.invoice.pay wizard (partially where the amount does not cover it)
              with the payment method's journal; each payment move's description is
              "<bank reference> <the action's mark>"
              find: the moves bearing that description: all of the amount (applied), none
              (not applied), part of it (in doubt: an operator settles it)
    credit    account.invoice (out) create: one line of quantity -1 at the amount, against
              the revenue account of the order's invoice and with that invoice's line as
              its origin (as Tryton's own credit wizard does), the reason as description,
              the action's mark as reference -> post
              Tryton refuses the post -> the draft is deleted: INVALID with its message
              find: the credit note bearing the mark: posted or paid (applied), or a draft
              a crash left (deleted: not applied)
"""

from __future__ import annotations

import contextlib
from decimal import Decimal
from typing import Any

from sources.actions import Effect, Plan, Problem
from sources.errors import SourceError
from sources.ordertocash import (
    IssueCreditNoteContract,
    IssueCreditNoteInput,
    RecordPaymentContract,
    RecordPaymentInput,
)
from sources.records import Record
from sources.tryton.connector import TrytonConnector
from sources.tryton_estate.actions.tryton import mark, obeying, read_one

_PAY = "wizard.account.invoice.pay"
_ISSUED = ("validated", "posted", "paid")  # credit notes that count as given
_APPLIED = ("posted", "paid")


class RecordPayment(RecordPaymentContract):
    """payment.record: in the company's currency, never above what is outstanding."""

    async def plan(self, data: RecordPaymentInput, source: TrytonConnector) -> Plan:
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
            plan.problems.append(_currency_problem(balance.data["currency"], data.currency))
            return plan
        invoices = await _open_invoices(source, data)
        allocation = _allocation(data.amount, invoices)
        if data.amount > outstanding:
            plan.problems.append(_above(data.amount, outstanding, "outstanding"))
        elif allocation is None:  # the receivable holds more than its invoices
            due = sum((invoice["amount_to_pay"] for invoice in invoices), Decimal(0))
            plan.problems.append(_above(data.amount, due, "due on open invoices"))
        plan.context["allocation"] = allocation
        if await _reference_used(source, data.reference):
            plan.problems.append(_reference_problem(data.reference))
        await _add_payment_method(source, plan)
        return plan

    async def execute(
        self, data: RecordPaymentInput, plan: Plan, source: TrytonConnector, *, action_id: str
    ) -> dict[str, Any]:
        description = _description(data, action_id)
        for invoice in plan.context["allocation"]:
            await obeying(
                _pay(source, invoice, plan.context["payment_method"], description), "amount"
            )
        return await _payment_result(source, description)

    async def find_effect(
        self,
        data: RecordPaymentInput,
        source: TrytonConnector,
        *,
        action_id: str,
        based_on: str | None,
    ) -> Effect | None:
        result = await _payment_result(source, _description(data, action_id))
        paid = sum((Decimal(i["amount"]) for i in result["invoices"]), Decimal(0))
        if paid == 0:
            return Effect(applied=False)
        if paid == data.amount:
            return Effect(applied=True, result=result)
        return None  # some invoices were paid, not all: a person must look


def _currency_problem(kept_in: str, given: str) -> Problem:
    return Problem(f"the account is kept in {kept_in}, not {given}", "currency", "ACCOUNT_CURRENCY")


def _above(amount: Decimal, outstanding: Decimal, what: str) -> Problem:
    return Problem(
        f"payment of {amount} is above the {outstanding} {what}", "amount", "NOT_ABOVE_OUTSTANDING"
    )


def _reference_problem(reference: str) -> Problem:
    return Problem(
        f"a payment with reference {reference} is already recorded",
        "reference",
        "UNIQUE_REFERENCE",
    )


def _description(data: RecordPaymentInput, action_id: str) -> str:
    """What the payment moves say: the bank reference and the action's mark."""
    return f"{data.reference} {mark(action_id)}"


async def _open_invoices(source: TrytonConnector, data: RecordPaymentInput) -> list[dict[str, Any]]:
    """The customer's posted invoices in the payment's currency with something to pay,
    oldest first."""
    invoices = await source.rpc.search_read(
        "account.invoice",
        [
            ("party.code", "=", data.customer_id),
            ("type", "=", "out"),
            ("state", "=", "posted"),
            ("currency.code", "=", data.currency),
        ],
        ["number", "amount_to_pay"],
        order=[("invoice_date", "ASC"), ("id", "ASC")],
    )
    return [invoice for invoice in invoices if invoice["amount_to_pay"] > 0]


def _allocation(amount: Decimal, invoices: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """How much of `amount` goes to which invoice, oldest first; None when they are owed
    less than it."""
    left, allocation = amount, []
    for invoice in invoices:
        if left <= 0:
            break
        paid = min(left, invoice["amount_to_pay"])
        allocation.append({"id": invoice["id"], "number": invoice["number"], "amount": paid})
        left -= paid
    return allocation if left <= 0 else None


async def _reference_used(source: TrytonConnector, reference: str) -> bool:
    """Whether a payment the gateway recorded already carries the bank reference."""
    escaped = reference.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    found = await read_one(
        source, "account.move", [("description", "like", f"{escaped} gatehouse-%")], ["id"]
    )
    return found is not None


async def _add_payment_method(source: TrytonConnector, plan: Plan) -> None:
    """The company's invoice payment method (its journal takes the payment), or a problem."""
    method = await read_one(
        source,
        "account.invoice.payment.method",
        [("company", "=", source.rpc.context.get("company"))],
        ["id"],
    )
    if method is None:
        plan.problems.append(
            Problem("Tryton has no invoice payment method to record payments with", None, "SETUP")
        )
    else:
        plan.context["payment_method"] = method["id"]


async def _pay(
    source: TrytonConnector, invoice: dict[str, Any], method: int, description: str
) -> None:
    """Pay `invoice` its allocated amount through Tryton's pay wizard."""
    context = {"active_model": "account.invoice", "active_id": invoice["id"]}
    context["active_ids"] = [invoice["id"]]
    session, _, _ = await source.rpc.call(f"{_PAY}.create")
    try:
        shown = await source.rpc.call(f"{_PAY}.execute", session, {}, "start", context=context)
        start = {
            **_values(shown["view"]["defaults"]),
            "amount": invoice["amount"],
            "payment_method": method,
            "description": description,
        }
        forms = {"start": start}
        asked = await source.rpc.call(f"{_PAY}.execute", session, forms, "choice", context=context)
        if asked.get("view", {}).get("state") == "ask":  # less than the invoice's due
            ask = {**_values(asked["view"]["defaults"]), "type": "partial"}
            forms = {"start": start, "ask": ask}
            await source.rpc.call(f"{_PAY}.execute", session, forms, "pay", context=context)
    finally:
        await _end_wizard(source, session)


def _values(defaults: dict[str, Any]) -> dict[str, Any]:
    """A wizard form's values without the names Tryton shows beside them."""
    return {k: v for k, v in defaults.items() if not k.endswith(".") and k != "payees"}


async def _end_wizard(source: TrytonConnector, session: int) -> None:
    with contextlib.suppress(SourceError):  # else the session lapses on the server
        await source.rpc.call(f"{_PAY}.delete", session)


async def _payment_result(source: TrytonConnector, description: str) -> dict[str, Any]:
    """The invoices the payment moves with `description` paid, and how much each."""
    moves = await source.rpc.search_read(
        "account.move",
        [("description", "=", description), ("state", "=", "posted")],
        ["origin", "lines.credit"],
        order=[("id", "ASC")],
    )
    invoice_ids = [int(str(move["origin"]).partition(",")[2]) for move in moves]
    numbers = {
        row["id"]: row["number"]
        for row in await source.rpc.read("account.invoice", invoice_ids, ["number"])
    }
    paid = [
        {
            "invoice": numbers.get(invoice_id),
            "amount": str(sum((line["credit"] for line in move["lines."]), Decimal(0))),
        }
        for invoice_id, move in zip(invoice_ids, moves, strict=True)
    ]
    return {"payment_id": description.rpartition(" ")[2], "invoices": paid}


class IssueCreditNote(IssueCreditNoteContract):
    """credit_note.issue: against the customer's own invoiced order, never beyond its total."""

    async def plan(self, data: IssueCreditNoteInput, source: TrytonConnector) -> Plan:
        balance = await source.read("Balance", data.customer_id)
        if balance is None:
            return Plan.refused(
                f"unknown customer {data.customer_id}", "customerId", "KNOWN_CUSTOMER"
            )
        sale = await read_one(
            source,
            "sale.sale",
            [("number", "=", data.order_id), ("party.code", "=", data.customer_id)],
            ["total_amount", "invoices"],
        )
        if sale is None:
            return Plan.refused(
                f"{data.customer_id} has no order {data.order_id}", "orderId", "CUSTOMERS_ORDER"
            )
        invoice = await _order_invoice(source, sale["invoices"])
        if invoice is None:
            return Plan.refused(
                f"order {data.order_id} has no posted invoice to credit",
                "orderId",
                "ORDER_INVOICED",
                balance,
            )
        return await _credit_plan(source, data, balance, sale, invoice)

    async def execute(
        self, data: IssueCreditNoteInput, plan: Plan, source: TrytonConnector, *, action_id: str
    ) -> dict[str, Any]:
        values = credit_note_values(data, plan.context["invoice"], mark(action_id))
        (note_id,) = await obeying(source.rpc.create("account.invoice", [values]), "amount")
        try:
            await obeying(source.rpc.execute("account.invoice", "post", [note_id]), "amount")
        except Exception:
            await _discard(source, note_id)  # nothing half-issued stays behind
            raise
        return await _issued(source, note_id)

    async def find_effect(
        self,
        data: IssueCreditNoteInput,
        source: TrytonConnector,
        *,
        action_id: str,
        based_on: str | None,
    ) -> Effect:
        notes = await source.rpc.search_read(
            "account.invoice", [("reference", "=", mark(action_id))], ["state"]
        )
        for note in notes:
            if note["state"] in _APPLIED:
                return Effect(applied=True, result=await _issued(source, note["id"]))
        for note in notes:
            if note["state"] in ("draft", "validated"):
                await _discard(source, note["id"])  # a crash left it unposted
        return Effect(applied=False)


async def _order_invoice(source: TrytonConnector, invoice_ids: list[int]) -> dict[str, Any] | None:
    """The order's first posted (or paid) customer invoice, with what a credit note copies."""
    rows = await source.rpc.search_read(
        "account.invoice",
        [("id", "in", invoice_ids), ("type", "=", "out"), ("state", "in", list(_APPLIED))],
        ["party", "invoice_address", "journal", "account", "payment_term", "company", "currency"],
        order=[("id", "ASC")],
        limit=1,
    )
    if not rows:
        return None
    lines = await source.rpc.search_read(
        "account.invoice.line",
        [("invoice", "=", rows[0]["id"]), ("type", "=", "line")],
        ["account"],
        order=[("id", "ASC")],
        limit=1,
    )
    return {**rows[0], "line": lines[0]} if lines else None


async def _credit_plan(
    source: TrytonConnector,
    data: IssueCreditNoteInput,
    balance: Record,
    sale: dict[str, Any],
    invoice: dict[str, Any],
) -> Plan:
    credited = await _credited(source, sale["invoices"])
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
    plan = Plan(balance.version, balance, before, after, context={"invoice": invoice})
    total: Decimal = sale["total_amount"]
    if credited + data.amount > total:
        plan.problems.append(
            Problem(
                f"credit of {data.amount} would bring the order's credit to "
                f"{credited + data.amount}, beyond {total} the order total",
                "amount",
                "CREDIT_WITHIN_ORDER",
            )
        )
    return plan


async def _credited(source: TrytonConnector, invoice_ids: list[int]) -> Decimal:
    """Credit already given on an order: the credit notes whose lines credit its invoices'
    lines (Tryton's own credit wizard links them the same way)."""
    lines = await source.rpc.search("account.invoice.line", [("invoice", "in", invoice_ids)])
    if not lines:
        return Decimal(0)
    notes = await source.rpc.search_read(
        "account.invoice",
        [
            ("lines.origin", "in", [f"account.invoice.line,{line}" for line in lines]),
            ("state", "in", list(_ISSUED)),
        ],
        ["total_amount"],
    )
    return -sum((note["total_amount"] for note in notes), Decimal(0))


def credit_note_values(
    data: IssueCreditNoteInput, invoice: dict[str, Any], reference: str
) -> dict[str, Any]:
    """A customer credit note of `data.amount` against `invoice`, marked with `reference`."""
    copied = ("party", "invoice_address", "journal", "account", "payment_term", "company")
    line = {
        "type": "line",
        "account": invoice["line"]["account"],
        "quantity": -1,
        "unit_price": data.amount,
        "description": data.reason,
        "origin": f"account.invoice.line,{invoice['line']['id']}",
    }
    return {
        **{name: invoice[name] for name in copied},
        "currency": invoice["currency"],
        "type": "out",
        "description": data.reason,
        "reference": reference,
        "lines": [["create", [line]]],
    }


async def _issued(source: TrytonConnector, note_id: int) -> dict[str, Any]:
    """What a credit note issued in Tryton came to."""
    (note,) = await source.rpc.read(
        "account.invoice", [note_id], ["number", "state", "total_amount"]
    )
    return {
        "credit_note_id": note["number"],
        "status": note["state"],
        "amount": str(-note["total_amount"]),
    }


async def _discard(source: TrytonConnector, note_id: int) -> None:
    """Delete (or, once validated, cancel) a credit note the gateway did not post."""
    try:
        (note,) = await source.rpc.read("account.invoice", [note_id], ["state"])
        if note["state"] == "draft":
            await source.rpc.delete("account.invoice", [note_id])
        elif note["state"] == "validated":
            await source.rpc.execute("account.invoice", "cancel", [note_id])
    except SourceError:
        pass  # Tryton is down: recovery finds the note by its mark and discards it then

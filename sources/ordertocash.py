"""The order-to-cash actions' logical contracts, which every estate implements alike.

    contract (here)                          implementations
    PlaceOrderContract          order.place          sources/demo/actions (SQL, CRM)
    CancelOrderContract         order.cancel         sources/tryton_estate/actions (Tryton)
    AdjustInventoryContract     inventory.adjust
    UpdateCustomerContactContract customer.update_contact
    RecordPaymentContract       payment.record
    IssueCreditNoteContract     credit_note.issue

A contract is an action's name, input model, the attributes policy sees, its target, its
amount and its headline in words: what agents, apps, approvers and policy rules rely on. An
estate subclasses it and adds `plan`, `execute` and `find_effect` against its own system, so
the same GraphQL mutations, MCP tools and policy rules govern every estate.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Annotated, Any, ClassVar

from pydantic import Field, StringConstraints, field_validator, model_validator

from sources.actions import ActionInput, Multiline, Plan
from sources.words import Names, customer, item, money, order, quantity

Amount = Annotated[Decimal, Field(gt=0, le=Decimal("1000000000"), decimal_places=2)]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
Email = Annotated[
    str, StringConstraints(pattern=r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$", max_length=254)
]
Phone = Annotated[str, StringConstraints(pattern=r"^\+?[0-9][0-9 ()./-]{5,24}$")]


class Contract:
    """What every contract shares: no personal data in its input, nothing created, no
    money at stake, nothing touched besides the target, unless it says so; and a write
    that changes or removes what was there (MCP's destructiveHint), unless it only adds."""

    pii_fields: ClassVar[frozenset[str]] = frozenset()
    creates: ClassVar[bool] = False
    destructive: ClassVar[bool] = True

    def amount(self, data: Any) -> Decimal | None:
        """No money at stake unless the action says so."""
        return None

    def touched(self, data: Any, plan: Plan) -> list[tuple[str, str]]:
        """Nothing besides the target, unless the action says so."""
        return []

    def headline(
        self, data: Mapping[str, Any], names: Names, planned: Mapping[str, Any]
    ) -> str | None:
        """No wording of its own: the gateway says the summary and names the record."""
        return None


# ---- orders -------------------------------------------------------------------------------


class OrderLineInput(ActionInput):
    """One line to order."""

    sku: str = Field(min_length=1, max_length=32, description="The item's SKU.")
    quantity: int = Field(ge=1, le=10_000, description="Units to order.")
    location: str | None = Field(
        default=None, max_length=16, description="Ship from here; default: most available."
    )


class PlaceOrderInput(ActionInput):
    """A new order for a customer."""

    customer_id: str = Field(min_length=1, max_length=32, description="Who orders, e.g. C-00001.")
    lines: list[OrderLineInput] = Field(
        min_length=1, max_length=50, description="One line per SKU; priced by the ERP."
    )

    @field_validator("lines")
    @classmethod
    def _one_line_per_sku(cls, lines: list[OrderLineInput]) -> list[OrderLineInput]:
        skus = [line.sku for line in lines]
        if len(skus) != len(set(skus)):
            raise ValueError("each SKU may appear on one line only")
        return lines


class PlaceOrderContract(Contract):
    """order.place: a new order for a customer."""

    kind: ClassVar[str] = "order.place"
    mutation: ClassVar[str] = "placeOrder"
    entity: ClassVar[str] = "Order"
    summary: ClassVar[str] = "Place an order for a customer, reserving its stock."
    Input: ClassVar[type[ActionInput]] = PlaceOrderInput
    creates: ClassVar[bool] = True
    destructive: ClassVar[bool] = False  # only adds an order (reserving stock)

    def target(self, data: PlaceOrderInput) -> str:
        return f"new order for {data.customer_id}"

    def policy_input(self, data: PlaceOrderInput) -> dict[str, Any]:
        return {"quantity": sum(line.quantity for line in data.lines), "lines": len(data.lines)}

    def amount(self, data: PlaceOrderInput) -> Decimal | None:
        return None  # known only once prices are read; credit is a validation rule

    def touched(self, data: PlaceOrderInput, plan: Plan) -> list[tuple[str, str]]:
        return [
            ("Balance", data.customer_id),
            ("Customer", data.customer_id),
            *(("InventoryItem", line.sku) for line in data.lines),
        ]

    def headline(
        self, data: Mapping[str, Any], names: Names, planned: Mapping[str, Any]
    ) -> str | None:
        lines = [line for line in data["lines"] if isinstance(line, dict)]
        units = sum(int(line.get("quantity") or 0) for line in lines)
        what = (
            f"{units} units of {item(str(lines[0].get('sku')), names)}"
            if len(lines) == 1
            else f"{len(lines)} lines, {units} units"
        )
        return f"New order for {customer(str(data['customer_id']), names)}: {what}"


class CancelOrderInput(ActionInput):
    """Cancel an open order."""

    order_id: str = Field(
        min_length=1, max_length=32, description="The open order, e.g. SO-100001."
    )
    reason: Multiline = Field(min_length=3, max_length=500, description="Why, for the audit trail.")


class CancelOrderContract(Contract):
    """order.cancel: an open order, cancelled."""

    kind: ClassVar[str] = "order.cancel"
    mutation: ClassVar[str] = "cancelOrder"
    entity: ClassVar[str] = "Order"
    summary: ClassVar[str] = "Cancel an open order and release the stock it reserved."
    Input: ClassVar[type[ActionInput]] = CancelOrderInput

    def target(self, data: CancelOrderInput) -> str:
        return data.order_id

    def policy_input(self, data: CancelOrderInput) -> dict[str, Any]:
        return {}

    def touched(self, data: CancelOrderInput, plan: Plan) -> list[tuple[str, str]]:
        order = plan.target_record
        if order is None:
            return []
        customer = order.data["customer_id"]
        lines = order.data.get("lines") or []
        return [
            ("Balance", customer),
            ("Customer", customer),
            *(("InventoryItem", line["sku"]) for line in lines),
        ]

    def headline(
        self, data: Mapping[str, Any], names: Names, planned: Mapping[str, Any]
    ) -> str | None:
        return f"Cancel {order(str(data['order_id']), names)}"


# ---- inventory ----------------------------------------------------------------------------


class AdjustInventoryInput(ActionInput):
    """Move the on-hand stock of one SKU at one location up or down."""

    sku: str = Field(min_length=1, max_length=32, description="The item's SKU.")
    location: str = Field(min_length=1, max_length=16, description="Warehouse code, e.g. WH-BER.")
    delta: int = Field(
        ge=-100_000, le=100_000, description="Units to add (positive) or remove (negative)."
    )
    reason: Multiline = Field(min_length=3, max_length=500, description="Why, for the audit trail.")


class AdjustInventoryContract(Contract):
    """inventory.adjust: one item's stock at one location, up or down."""

    kind: ClassVar[str] = "inventory.adjust"
    mutation: ClassVar[str] = "adjustInventory"
    entity: ClassVar[str] = "InventoryItem"
    summary: ClassVar[str] = "Adjust the on-hand stock of one item at one location."
    Input: ClassVar[type[ActionInput]] = AdjustInventoryInput

    def target(self, data: AdjustInventoryInput) -> str:
        return data.sku

    def policy_input(self, data: AdjustInventoryInput) -> dict[str, Any]:
        return {"quantity": abs(data.delta), "delta": data.delta, "location": data.location}

    def headline(
        self, data: Mapping[str, Any], names: Names, planned: Mapping[str, Any]
    ) -> str | None:
        return f"{quantity(int(data['delta']), str(data['sku']), names)} at {data['location']}"


# ---- customers ----------------------------------------------------------------------------


class ContactInput(ActionInput):
    """A person at the customer."""

    name: str = Field(min_length=1, max_length=120, description="Full name.")
    email: Email = Field(description="E-mail address.")
    role: str = Field(min_length=1, max_length=80, description="E.g. Purchasing.")


class UpdateCustomerContactInput(ActionInput):
    """New contact data for a customer; fields left out stay as they are."""

    customer_id: str = Field(min_length=1, max_length=32, description="E.g. C-00001.")
    email: Email | None = Field(default=None, description="The new main e-mail.")
    phone: Phone | None = Field(default=None, description="The new phone number.")
    contacts: list[ContactInput] | None = Field(
        default=None, max_length=20, description="Replaces the whole list of contacts."
    )

    @model_validator(mode="after")
    def _something_to_change(self) -> UpdateCustomerContactInput:
        if self.email is None and self.phone is None and self.contacts is None:
            raise ValueError("give at least one of email, phone, contacts")
        return self


CHANGEABLE = ("email", "phone", "contacts")


class UpdateCustomerContactContract(Contract):
    """customer.update_contact: a customer's e-mail, phone or contacts, changed."""

    kind: ClassVar[str] = "customer.update_contact"
    mutation: ClassVar[str] = "updateCustomerContact"
    entity: ClassVar[str] = "Customer"
    summary: ClassVar[str] = "Change a customer's e-mail, phone or contacts."
    Input: ClassVar[type[ActionInput]] = UpdateCustomerContactInput
    pii_fields: ClassVar[frozenset[str]] = frozenset({"email", "phone", "contacts"})

    def target(self, data: UpdateCustomerContactInput) -> str:
        return data.customer_id

    def policy_input(self, data: UpdateCustomerContactInput) -> dict[str, Any]:
        return {"fields": [name for name in CHANGEABLE if getattr(data, name) is not None]}

    def headline(
        self, data: Mapping[str, Any], names: Names, planned: Mapping[str, Any]
    ) -> str | None:
        # Which fields change, never their values: those are personal data.
        labels = {"email": "e-mail", "phone": "phone", "contacts": "contacts"}
        changed = [label for name, label in labels.items() if data.get(name) is not None]
        whose = customer(str(data["customer_id"]), names)
        return f"New {' and '.join(changed) or 'contact data'} for {whose}"


# ---- ledger -------------------------------------------------------------------------------


class RecordPaymentInput(ActionInput):
    """Money received from a customer."""

    customer_id: str = Field(min_length=1, max_length=32, description="Who paid, e.g. C-00001.")
    amount: Amount = Field(description="Received, a decimal string in `currency`.")
    currency: Currency = Field(description="ISO 4217 code; must be the account's currency.")
    reference: str = Field(min_length=1, max_length=100, description="The bank reference.")


class RecordPaymentContract(Contract):
    """payment.record: money received from a customer, against what they owe."""

    kind: ClassVar[str] = "payment.record"
    mutation: ClassVar[str] = "recordPayment"
    entity: ClassVar[str] = "Balance"
    summary: ClassVar[str] = "Record a payment received from a customer."
    Input: ClassVar[type[ActionInput]] = RecordPaymentInput

    def target(self, data: RecordPaymentInput) -> str:
        return data.customer_id

    def policy_input(self, data: RecordPaymentInput) -> dict[str, Any]:
        return {"amount": data.amount, "currency": data.currency}

    def amount(self, data: RecordPaymentInput) -> Decimal | None:
        return data.amount

    def touched(self, data: RecordPaymentInput, plan: Plan) -> list[tuple[str, str]]:
        return [("Customer", data.customer_id)]

    def headline(
        self, data: Mapping[str, Any], names: Names, planned: Mapping[str, Any]
    ) -> str | None:
        who = str(data["customer_id"])
        amount = money(data["amount"], data.get("currency") or names.currencies.get(who))
        return f"Payment of {amount} from {customer(who, names)}, reference {data['reference']}"


class IssueCreditNoteInput(ActionInput):
    """Credit a customer against one of their orders."""

    customer_id: str = Field(min_length=1, max_length=32, description="E.g. C-00001.")
    order_id: str = Field(
        min_length=1, max_length=32, description="The customer's order it credits."
    )
    amount: Amount = Field(
        description="A decimal string in the customer's account currency (get_balance's currency)."
    )
    reason: Multiline = Field(min_length=3, max_length=200, description="Why, for the audit trail.")


class IssueCreditNoteContract(Contract):
    """credit_note.issue: a credit to a customer against one of their orders."""

    kind: ClassVar[str] = "credit_note.issue"
    mutation: ClassVar[str] = "issueCreditNote"
    entity: ClassVar[str] = "Balance"
    summary: ClassVar[str] = "Issue a credit note to a customer against one of their orders."
    Input: ClassVar[type[ActionInput]] = IssueCreditNoteInput

    def target(self, data: IssueCreditNoteInput) -> str:
        return data.customer_id

    def policy_input(self, data: IssueCreditNoteInput) -> dict[str, Any]:
        return {"amount": data.amount}

    def amount(self, data: IssueCreditNoteInput) -> Decimal | None:
        return data.amount

    def touched(self, data: IssueCreditNoteInput, plan: Plan) -> list[tuple[str, str]]:
        return [("Customer", data.customer_id), ("Order", data.order_id)]

    def headline(
        self, data: Mapping[str, Any], names: Names, planned: Mapping[str, Any]
    ) -> str | None:
        who = str(data["customer_id"])
        # The currency the plan recorded stands in when the account could not be read.
        currency = names.currencies.get(who) or planned.get("currency")
        amount = money(data["amount"], currency if isinstance(currency, str) else None)
        return f"Credit note of {amount} to {customer(who, names)} on order {data['order_id']}"

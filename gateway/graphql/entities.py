"""The entity types: Customer, InventoryItem, Order, Balance and their sub-records.

Relationships (`Customer.balance`, `Order.customer`, `OrderLine.item`) go through the
request's DataLoaders, so a page of orders costs one round-trip per related entity.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry

from gateway.graphql.context import Info
from gateway.graphql.types import (
    ChildNode,
    Connection,
    EntityNode,
    Money,
    OrderStatus,
    connection,
    data_field,
    freshness_field,
    masked_fields_field,
    money_field,
)
from gateway.pagination import page_size
from gateway.reads import Entry

MaxAge = Annotated[
    float | None,
    strawberry.argument(description="Accept a cached value at most this many seconds old."),
]


async def load(info: Info, entity: str, key: str, max_age: float | None) -> Entry | None:
    """One entry through the request's loader, after the read check."""
    info.context.require_read(entity)
    return await info.context.loader(entity, max_age).load(key)


@strawberry.type
class Contact(ChildNode):
    """A person at the customer."""

    name: str | None = data_field("name")
    email: str | None = data_field("email")
    role: str | None = data_field("role")


@strawberry.type
class Customer(EntityNode):
    """A customer: contact data from the CRM, joined with its ERP balance and orders."""

    id: strawberry.ID = data_field("id")
    name: str | None = data_field("name")
    email: str | None = data_field("email")
    phone: str | None = data_field("phone")
    region: str | None = data_field("region")
    segment: str | None = data_field("segment")
    freshness = freshness_field()
    masked_fields = masked_fields_field()

    @strawberry.field
    def contacts(self) -> list[Contact]:
        """The people to talk to."""
        return [
            Contact(entity_name="Customer", prefix="contacts.", data=c)
            for c in self.data["contacts"]
        ]

    @strawberry.field
    async def balance(self, info: Info, max_age: MaxAge = None) -> Balance | None:
        """The customer's account in the ERP ledger."""
        entry = await load(info, "Balance", self.data["id"], max_age)
        return None if entry is None else Balance(entry=entry)

    @strawberry.field
    async def orders(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        status: OrderStatus | None = None,
    ) -> Connection[Order]:
        """The customer's orders, oldest first."""
        info.context.require_read("Order")
        filters: dict[str, object] = {"customer_id": self.data["id"]}
        if status is not None:
            filters["status"] = status.value
        limits = info.context.services.config.limits
        size = page_size(first, default=limits.default_page_size, maximum=limits.max_page_size)
        page = await info.context.services.reads.page(
            "Order", filters=filters, first=size, after=after
        )
        return connection(page, lambda entry: Order(entry=entry))  # type: ignore[no-any-return]


@strawberry.type
class StockLevel(ChildNode):
    """Stock of one item at one location."""

    location: str = data_field("location")
    on_hand: int | None = data_field("on_hand")
    reserved: int | None = data_field("reserved")
    available: int | None = data_field("available", "On hand less reserved.")
    reorder_point: int | None = data_field("reorder_point")
    below_reorder_point: bool | None = data_field("below_reorder_point")


@strawberry.type
class InventoryItem(EntityNode):
    """A stocked item and its level at each location."""

    sku: strawberry.ID = data_field("sku")
    name: str | None = data_field("name")
    description: str | None = data_field("description")
    active: bool | None = data_field("active")
    freshness = freshness_field()
    masked_fields = masked_fields_field()

    unit_price: Money | None = money_field("unit_price", "List price per unit.")

    @strawberry.field
    def levels(self, location: str | None = None) -> list[StockLevel]:
        """Stock per location, or at one location."""
        rows = self.data["levels"]
        return [
            StockLevel(entity_name="InventoryItem", prefix="levels.", data=row)
            for row in rows
            if location is None or row["location"] == location
        ]


@strawberry.type
class OrderLine(ChildNode):
    """One line of an order."""

    line_no: int = data_field("line_no")
    sku: str = data_field("sku")
    quantity: int | None = data_field("quantity")

    unit_price: Money | None = money_field("unit_price", "Price per unit on this order.")
    line_total: Money | None = money_field("line_total", "Quantity times unit price.")

    @strawberry.field
    async def item(self, info: Info, max_age: MaxAge = None) -> InventoryItem | None:
        """The item ordered, as it is now."""
        entry = await load(info, "InventoryItem", self.data["sku"], max_age)
        return None if entry is None else InventoryItem(entry=entry)


@strawberry.type
class Order(EntityNode):
    """A sales order in the ERP."""

    id: strawberry.ID = data_field("id")
    customer_id: str = data_field("customer_id")
    placed_at: datetime | None = data_field("placed_at")
    freshness = freshness_field()
    masked_fields = masked_fields_field()

    @strawberry.field
    def status(self) -> OrderStatus:
        """Where the order is in its life."""
        return OrderStatus(self.data["status"])

    total: Money | None = money_field("total", "The order total.")

    @strawberry.field
    def lines(self) -> list[OrderLine]:
        """The order's lines, in order."""
        currency = self.data["currency"]
        return [
            OrderLine(entity_name="Order", prefix="lines.", data={**line, "currency": currency})
            for line in self.data["lines"]
        ]

    @strawberry.field
    async def customer(self, info: Info, max_age: MaxAge = None) -> Customer | None:
        """Who placed it, from the CRM."""
        entry = await load(info, "Customer", self.data["customer_id"], max_age)
        return None if entry is None else Customer(entry=entry)


@strawberry.type
class Balance(EntityNode):
    """A customer's account in the ERP ledger."""

    customer_id: strawberry.ID = data_field("customer_id")
    currency: str | None = data_field("currency")
    freshness = freshness_field()
    masked_fields = masked_fields_field()

    credit_limit: Money | None = money_field("credit_limit", "The most the customer may owe.")

    outstanding: Money | None = money_field(
        "outstanding", "Invoiced, less payments and credit notes."
    )

    overdue: Money | None = money_field("overdue", "The part of outstanding past its due date.")

    available_credit: Money | None = money_field(
        "available_credit", "Credit limit less outstanding."
    )

    @strawberry.field
    async def customer(self, info: Info, max_age: MaxAge = None) -> Customer | None:
        """The customer this account belongs to."""
        entry = await load(info, "Customer", self.data["customer_id"], max_age)
        return None if entry is None else Customer(entry=entry)

"""The entity types: Customer, InventoryItem, Order, Balance and their sub-records.

Their plain fields are the record's (see `RecordNode`). Relationships (`Customer.balance`,
`Order.customer`, `OrderLine.item`) and the root fields by key go through `related`: a
cached record is answered at once, without scheduling anything; the misses go through the
request's DataLoaders, so a page of orders costs one round-trip per related entity.
"""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import datetime
from typing import Annotated, TypeAlias, TypeVar

import strawberry

from gateway.graphql.context import Context, Info
from gateway.graphql.types import (
    ChildNode,
    Connection,
    EntityNode,
    Money,
    OrderStatus,
    connection,
    freshness_field,
    masked_fields_field,
)
from gateway.pagination import page_size

MaxAge = Annotated[
    float | None,
    strawberry.argument(description="Accept a cached value at most this many seconds old."),
]


NodeT = TypeVar("NodeT", bound=EntityNode)
Related: TypeAlias = NodeT | Awaitable[NodeT | None] | None


def related(info: Info, node: type[NodeT], key: str, max_age: float | None) -> Related[NodeT]:
    """The record `key` of the node's entity, after the read check: a cache hit young enough
    for `max_age` at once, a miss through the request's loader (one batch per level)."""
    context = info.context
    context.require_read(node.entity)
    hit = context.services.reads.cached(node.entity, key, max_age=max_age)
    if hit is not None:
        return node.of(hit, context)
    return _loaded(context, node, key, max_age)


async def _loaded(
    context: Context, node: type[NodeT], key: str, max_age: float | None
) -> NodeT | None:
    entry = await context.loader(node.entity, max_age).load(key)
    return None if entry is None else node.of(entry, context)


@strawberry.type
class Contact(ChildNode):
    """A person at the customer."""

    entity = "Customer"
    prefix = "contacts."
    name: str | None
    email: str | None
    role: str | None


@strawberry.type
class Customer(EntityNode):
    """A customer: contact data from the CRM, joined with its ERP balance and orders."""

    entity = "Customer"
    id: strawberry.ID
    name: str | None
    email: str | None
    phone: str | None
    region: str | None
    segment: str | None
    freshness = freshness_field()
    masked_fields = masked_fields_field()

    @strawberry.field
    def contacts(self) -> list[Contact]:
        """The people to talk to."""
        return [Contact.of(self.view, contact) for contact in self.data["contacts"]]

    @strawberry.field(graphql_type="Balance | None")
    def balance(self, info: Info, max_age: MaxAge = None) -> Related[Balance]:
        """The customer's account in the ERP ledger."""
        return related(info, Balance, self.data["id"], max_age)

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
        return connection(page, lambda entry: Order.of(entry, info.context))  # type: ignore[no-any-return]


@strawberry.type
class StockLevel(ChildNode):
    """Stock of one item at one location."""

    entity = "InventoryItem"
    prefix = "levels."
    location: str
    on_hand: int | None
    reserved: int | None
    available: int | None = strawberry.field(description="On hand less reserved.")
    reorder_point: int | None
    below_reorder_point: bool | None


@strawberry.type
class InventoryItem(EntityNode):
    """A stocked item and its level at each location."""

    entity = "InventoryItem"
    sku: strawberry.ID
    name: str | None
    description: str | None
    active: bool | None
    freshness = freshness_field()
    masked_fields = masked_fields_field()

    unit_price: Money | None = strawberry.field(description="List price per unit.")

    @strawberry.field
    def levels(self, location: str | None = None) -> list[StockLevel]:
        """Stock per location, or at one location."""
        return [
            StockLevel.of(self.view, row)
            for row in self.data["levels"]
            if location is None or row["location"] == location
        ]


@strawberry.type
class OrderLine(ChildNode):
    """One line of an order."""

    entity = "Order"
    prefix = "lines."
    line_no: int
    sku: str
    quantity: int | None

    unit_price: Money | None = strawberry.field(description="Price per unit on this order.")
    line_total: Money | None = strawberry.field(description="Quantity times unit price.")

    @strawberry.field(graphql_type="InventoryItem | None")
    def item(self, info: Info, max_age: MaxAge = None) -> Related[InventoryItem]:
        """The item ordered, as it is now."""
        return related(info, InventoryItem, self.data["sku"], max_age)


@strawberry.type
class Order(EntityNode):
    """A sales order in the ERP."""

    entity = "Order"
    id: strawberry.ID
    customer_id: str
    placed_at: datetime | None
    freshness = freshness_field()
    masked_fields = masked_fields_field()

    @strawberry.field
    def status(self) -> OrderStatus:
        """Where the order is in its life."""
        return OrderStatus(self.data["status"])

    total: Money | None = strawberry.field(description="The order total.")

    @strawberry.field
    def lines(self) -> list[OrderLine]:
        """The order's lines, in order."""
        currency = self.data["currency"]
        return [
            OrderLine.of(self.view, {**line, "currency": currency}) for line in self.data["lines"]
        ]

    @strawberry.field(graphql_type="Customer | None")
    def customer(self, info: Info, max_age: MaxAge = None) -> Related[Customer]:
        """Who placed it, from the CRM."""
        return related(info, Customer, self.data["customer_id"], max_age)


@strawberry.type
class Balance(EntityNode):
    """A customer's account in the ERP ledger."""

    entity = "Balance"
    customer_id: strawberry.ID
    currency: str | None
    freshness = freshness_field()
    masked_fields = masked_fields_field()

    credit_limit: Money | None = strawberry.field(description="The most the customer may owe.")

    outstanding: Money | None = strawberry.field(
        description="Invoiced, less payments and credit notes."
    )

    overdue: Money | None = strawberry.field(
        description="The part of outstanding past its due date."
    )

    available_credit: Money | None = strawberry.field(description="Credit limit less outstanding.")

    @strawberry.field(graphql_type="Customer | None")
    def customer(self, info: Info, max_age: MaxAge = None) -> Related[Customer]:
        """The customer this account belongs to."""
        return related(info, Customer, self.data["customer_id"], max_age)

"""The root Query: entities by key and by page, contracts, sources, and `me`."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Annotated

import strawberry

from gateway.config import Classification, EntityConfig
from gateway.graphql.context import Info
from gateway.graphql.entities import (
    Balance,
    Customer,
    InventoryItem,
    MaxAge,
    Order,
    Related,
    related,
)
from gateway.graphql.types import Connection, OrderStatus, connection
from gateway.pagination import page_size
from sources.breaker import BreakerState
from sources.connector import Connector
from sources.errors import SourceError

strawberry.enum(Classification)
strawberry.enum(
    BreakerState,
    description="A source's circuit breaker: CLOSED calls it, OPEN fails fast without calling "
    "it (reads serve their last good values), HALF_OPEN lets the next call probe it.",
)

First = Annotated[
    int | None, strawberry.argument(description="Page size, 1 to the gateway's maximum.")
]
After = Annotated[str | None, strawberry.argument(description="A cursor from an earlier page.")]


@strawberry.type
class FieldContract:
    """The data contract of one field."""

    name: str
    system: str
    owner: str
    classification: Classification
    type: str
    description: str
    required: bool = strawberry.field(description="A record without it is a data error.")
    min: Decimal | None = strawberry.field(description="The least value a record may hold.")
    max: Decimal | None = strawberry.field(description="The greatest value a record may hold.")


@strawberry.type
class EntityContract:
    """Which system owns an entity, who answers for it, and how fresh it must be."""

    entity: str
    system: str
    owner: str
    description: str
    warn_after_seconds: float
    error_after_seconds: float
    cache_ttl_seconds: float
    fields: list[FieldContract]


@strawberry.enum
class SourceStatus(Enum):
    """A system of record's health, from its last call (or a live check)."""

    UP = "up"
    DOWN = "down"
    UNKNOWN = "unknown"


@strawberry.type
class SourceHealth:
    """One system of record: health, last error, and its call counters."""

    name: str
    kind: str
    status: SourceStatus
    entities: list[str]
    calls: int
    errors: int
    last_ok_at: datetime | None
    last_error_at: datetime | None
    last_error: str | None = strawberry.field(
        description="What failed; operators also see the system's own words (host, driver)."
    )
    breaker: BreakerState
    refused_calls: int = strawberry.field(
        description="Calls failed fast by the open breaker, never sent to the system."
    )


@strawberry.type
class Me:
    """The authenticated principal."""

    id: strawberry.ID
    kind: str
    display_name: str
    roles: list[str]
    on_behalf_of: str | None
    credential: str


def _size(info: Info, first: int | None) -> int:
    limits = info.context.services.config.limits
    return page_size(first, default=limits.default_page_size, maximum=limits.max_page_size)


@strawberry.type
class Query:
    """Reads from the systems of record, each answer with its freshness."""

    @strawberry.field(
        description="One customer by id; null when there is none.", graphql_type=Customer | None
    )
    def customer(self, info: Info, id: strawberry.ID, max_age: MaxAge = None) -> Related[Customer]:
        return related(info, Customer, str(id), max_age)

    @strawberry.field(description="Customers, optionally matching a search text.")
    async def customers(
        self, info: Info, search: str | None = None, first: First = None, after: After = None
    ) -> Connection[Customer]:
        info.context.require_read("Customer")
        page = await info.context.services.reads.page(
            "Customer", filters={}, search=search, first=_size(info, first), after=after
        )
        return connection(page, lambda entry: Customer.of(entry, info.context))  # type: ignore[no-any-return]

    @strawberry.field(
        description="One item by SKU, with stock per location.", graphql_type=InventoryItem | None
    )
    def inventory_item(
        self, info: Info, sku: strawberry.ID, max_age: MaxAge = None
    ) -> Related[InventoryItem]:
        return related(info, InventoryItem, str(sku), max_age)

    @strawberry.field(
        description="Items, by SKUs and/or stocked at a location; belowReorderPoint: true "
        "keeps those below their reorder point (at that location, when given)."
    )
    async def inventory(
        self,
        info: Info,
        skus: list[strawberry.ID] | None = None,
        location: str | None = None,
        below_reorder_point: bool | None = None,
        first: First = None,
        after: After = None,
    ) -> Connection[InventoryItem]:
        info.context.require_read("InventoryItem")
        filters: dict[str, object] = {}
        if skus is not None:
            filters["sku"] = [str(sku) for sku in skus]
        if location is not None:
            filters["levels.location"] = location
        if below_reorder_point:
            filters["levels.below_reorder_point"] = True
        page = await info.context.services.reads.page(
            "InventoryItem", filters=filters, first=_size(info, first), after=after
        )
        return connection(page, lambda e: InventoryItem.of(e, info.context))  # type: ignore[no-any-return]

    @strawberry.field(description="One order by id, with its lines.", graphql_type=Order | None)
    def order(self, info: Info, id: strawberry.ID, max_age: MaxAge = None) -> Related[Order]:
        return related(info, Order, str(id), max_age)

    @strawberry.field(description="Orders, by customer and/or status, oldest id first.")
    async def orders(
        self,
        info: Info,
        customer_id: strawberry.ID | None = None,
        status: OrderStatus | None = None,
        first: First = None,
        after: After = None,
    ) -> Connection[Order]:
        info.context.require_read("Order")
        filters: dict[str, object] = {}
        if customer_id is not None:
            filters["customer_id"] = str(customer_id)
        if status is not None:
            filters["status"] = status.value
        page = await info.context.services.reads.page(
            "Order", filters=filters, first=_size(info, first), after=after
        )
        return connection(page, lambda entry: Order.of(entry, info.context))  # type: ignore[no-any-return]

    @strawberry.field(
        description="A customer's account in the ERP ledger.", graphql_type=Balance | None
    )
    def balance(
        self, info: Info, customer_id: strawberry.ID, max_age: MaxAge = None
    ) -> Related[Balance]:
        return related(info, Balance, str(customer_id), max_age)

    @strawberry.field(description="The data contracts: system of record, owner, SLA, fields.")
    def contracts(self, info: Info) -> list[EntityContract]:
        entities = info.context.services.config.entities
        return [_contract(name, cfg) for name, cfg in entities.items()]

    @strawberry.field(
        description="Health and last error of each system of record; check: true asks each "
        "one live instead of reporting its last call."
    )
    async def sources(self, info: Info, check: bool = False) -> list[SourceHealth]:
        connectors = info.context.services.connectors
        if check:
            await asyncio.gather(*(_ping(c) for c in connectors.values()))
        policy, principal = info.context.services.policy, info.context.principal
        detailed = policy.decide(principal, "sources", "inspect").allowed
        return [_health(connector, detailed=detailed) for connector in connectors.values()]

    @strawberry.field(description="Who you are authenticated as.")
    def me(self, info: Info) -> Me:
        p = info.context.principal
        return Me(
            id=strawberry.ID(p.id),
            kind=p.kind.value,
            display_name=p.display_name,
            roles=list(p.roles),
            on_behalf_of=p.on_behalf_of,
            credential=p.credential,
        )


def _contract(name: str, cfg: EntityConfig) -> EntityContract:
    fields = [
        FieldContract(
            name=field_name,
            system=f.system or cfg.source,
            owner=f.owner or cfg.owner,
            classification=f.classification,
            type=f.type,
            description=f.description,
            required=f.required,
            min=f.min,
            max=f.max,
        )
        for field_name, f in cfg.all_fields()
    ]
    return EntityContract(
        entity=name,
        system=cfg.source,
        owner=cfg.owner,
        description=cfg.description,
        warn_after_seconds=cfg.warn_after,
        error_after_seconds=cfg.error_after,
        cache_ttl_seconds=cfg.ttl,
        fields=fields,
    )


async def _ping(connector: Connector) -> None:
    # A failure is recorded in the connector's stats, which is what gets reported.
    with contextlib.suppress(SourceError):
        await connector.ping()


def _health(connector: Connector, *, detailed: bool) -> SourceHealth:
    stats = connector.stats
    status = {True: SourceStatus.UP, False: SourceStatus.DOWN, None: SourceStatus.UNKNOWN}
    return SourceHealth(
        name=connector.name,
        kind=connector.kind,
        status=status[stats.healthy],
        entities=list(connector.entities()),
        calls=stats.calls,
        errors=stats.errors,
        last_ok_at=stats.last_ok_at,
        last_error_at=stats.last_error_at,
        last_error=stats.last_error_detail if detailed else stats.last_error,
        breaker=stats.breaker.state,
        refused_calls=stats.breaker.refused,
    )

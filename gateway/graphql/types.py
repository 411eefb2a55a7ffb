"""GraphQL types of the entities, each carrying its freshness.

Entity fields resolve from the record through `data_field`, which masks classified values
the principal is not granted (null, with the path listed in `extensions.masked` and in the
object's `maskedFields`), so a masked value is never confused with a real null.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any, Generic, TypeVar

import strawberry

from gateway import freshness
from gateway.graphql.context import Info
from gateway.reads import Entry, EntryPage

strawberry.enum(freshness.FreshnessStatus)


def _path(info: Info) -> str:
    return ".".join(str(part) for part in info.path.as_list())


def _value(info: Info, entity: str, field: str, data: Mapping[str, Any]) -> Any:
    if not info.context.reveal(entity, field):
        info.context.masked.append(_path(info))
        return None
    return data[field.rpartition(".")[2]]


def data_field(name: str, description: str | None = None) -> Any:
    """A field read from the record, masked when its classification is not granted."""

    def resolve(root: Any, info: Info) -> Any:
        return _value(info, root.entity_name, root.prefix + name, root.data)

    return strawberry.field(resolver=resolve, description=description)


def money_field(name: str, description: str) -> Any:
    """An amount field with the record's currency, classified and masked like any other."""

    def resolve(root: Any, info: Info) -> Money | None:
        amount = _value(info, root.entity_name, root.prefix + name, root.data)
        return None if amount is None else Money(amount=amount, currency=root.data["currency"])

    return strawberry.field(resolver=resolve, description=description)


@strawberry.type
class Freshness:
    """Where this answer came from and how old it is, against its SLA."""

    system: str = strawberry.field(description="The system of record it was read from.")
    fetched_at: datetime = strawberry.field(description="When the gateway read it.")
    source_updated_at: datetime | None = strawberry.field(
        description="The record's own last-modified time in its system, when it keeps one."
    )
    age_seconds: float = strawberry.field(description="Seconds since fetchedAt.")
    version: str = strawberry.field(
        description="Changes whenever the record changes; writes use it as expectedVersion."
    )
    status: freshness.FreshnessStatus
    cached: bool = strawberry.field(description="Served from the gateway's cache.")
    error: str | None = strawberry.field(
        description="Why the source could not be read; the value is the last good one."
    )
    warn_after_seconds: float = strawberry.field(description="SLA: AGING past this age.")
    error_after_seconds: float = strawberry.field(description="SLA: STALE past this age.")

    @classmethod
    def of(cls, value: freshness.Freshness, info: Info) -> Freshness:
        """The GraphQL view of a freshness block at the request's time."""
        now = info.context.now
        return cls(
            system=value.system,
            fetched_at=value.fetched_at,
            source_updated_at=value.source_updated_at,
            age_seconds=round(value.age_seconds(now), 3),
            version=value.version,
            status=value.status(now),
            cached=value.cached,
            error=value.error,
            warn_after_seconds=value.sla.warn_after,
            error_after_seconds=value.sla.error_after,
        )


@strawberry.type
class Money:
    """An exact amount (a decimal string, never a float) and its currency."""

    amount: Decimal
    currency: str


@strawberry.type
class EntityNode:
    """Shared by every entity type: the entry it shows, and its freshness."""

    entry: strawberry.Private[Entry]
    prefix: strawberry.Private[str] = ""

    @property
    def entity_name(self) -> str:
        """The entity whose contract classifies these fields."""
        return self.entry.entity

    @property
    def data(self) -> Mapping[str, Any]:
        """The record's fields."""
        return self.entry.record.data


def freshness_field() -> Any:
    """The `freshness` field of an entity type."""

    def resolve(root: EntityNode, info: Info) -> Freshness:
        return Freshness.of(root.entry.freshness, info)

    return strawberry.field(resolver=resolve, description="Provenance and age of this record.")


def masked_fields_field() -> Any:
    """The `maskedFields` field: which of this record's fields were masked for the caller."""

    def resolve(root: EntityNode, info: Info) -> list[str]:
        contract = info.context.services.config.entities[root.entity_name]
        names = [
            *contract.fields,
            *(f"{c}.{f}" for c, ch in contract.children.items() for f in ch.fields),
        ]
        return [name for name in names if not info.context.visible(root.entity_name, name)]

    return strawberry.field(
        resolver=resolve, description="Fields masked for you by policy (their value is null)."
    )


@strawberry.type
class ChildNode:
    """A sub-record (contact, stock level, order line) classified by its parent's contract."""

    entity_name: strawberry.Private[str]
    prefix: strawberry.Private[str]
    data: strawberry.Private[Mapping[str, Any]]


@strawberry.enum
class OrderStatus(Enum):
    """Where an order is in its life."""

    OPEN = "open"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"


T = TypeVar("T")


@strawberry.type
class PageInfo:
    """Relay page info."""

    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class Edge(Generic[T]):
    """One node and its cursor."""

    node: T
    cursor: str


@strawberry.type
class Connection(Generic[T]):
    """A page of nodes; pass `pageInfo.endCursor` as `after` for the next one."""

    edges: list[Edge[T]]
    page_info: PageInfo


def connection(page: EntryPage, node: Any) -> Any:
    """A Connection of `node(entry)` over a page of entries."""
    edges = [
        Edge(node=node(entry), cursor=c)
        for entry, c in zip(page.entries, page.cursors, strict=True)
    ]
    end = page.cursors[-1] if page.cursors else None
    return Connection(
        edges=edges, page_info=PageInfo(has_next_page=page.has_next_page, end_cursor=end)
    )

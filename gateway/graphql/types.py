"""GraphQL types of the entities, each carrying its freshness.

A record becomes a node once per request (`EntityNode.of`, `ChildNode.of`): its fields are
copied onto the node through the caller's `View` of the entity, classified values the caller
is not granted as null, so graphql-core serves every scalar with its default resolver, and
a record costs one pass rather than a resolver per field. Which masked values a response
holds (`extensions.masked`, the object's `maskedFields`) is worked out from the response
afterwards (gateway/graphql/classified.py), so a masked value is never confused with a real
null.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any, ClassVar, Generic, Self, TypeVar

import strawberry
from strawberry.types.base import StrawberryOptional
from strawberry.types.private import is_private

from gateway import freshness
from gateway.graphql.context import Context, Info, View
from gateway.reads import Entry, EntryPage

strawberry.enum(freshness.FreshnessStatus)


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


class RecordNode:
    """A GraphQL type whose plain fields are a record's fields (a child's: `prefix` + name)."""

    entity: ClassVar[str]  # the entity whose contract classifies the fields
    prefix: ClassVar[str] = ""  # "lines." for an order line, "" for the entity itself

    @classmethod
    def project(cls, view: View, data: Mapping[str, Any]) -> dict[str, Any]:
        """The node's field values from a record: masked ones null, amounts as Money; a field
        the estate's contract does not hold (Tryton's customers have no region) is null."""
        values: dict[str, Any] = {}
        for name, contract_name, money in record_fields(cls):
            value = None if contract_name in view.masked else data.get(name)
            if money and value is not None:
                value = Money(amount=value, currency=data["currency"])
            values[name] = value
        return values


_RECORD_FIELDS: dict[type[RecordNode], tuple[tuple[str, str, bool], ...]] = {}


def record_fields(cls: type[RecordNode]) -> tuple[tuple[str, str, bool], ...]:
    """(attribute, contract field, is an amount) of each field of `cls` served from the record:
    those without a resolver."""
    if cls not in _RECORD_FIELDS:
        fields = cls.__strawberry_definition__.fields  # type: ignore[attr-defined]
        _RECORD_FIELDS[cls] = tuple(
            (f.python_name, cls.prefix + f.python_name, _is_money(f.type))
            for f in fields
            if f.base_resolver is None and not is_private(f.type)
        )
    return _RECORD_FIELDS[cls]


def _is_money(field_type: object) -> bool:
    inner = field_type.of_type if isinstance(field_type, StrawberryOptional) else field_type
    return inner is Money


@strawberry.type
class EntityNode(RecordNode):
    """Shared by every entity type: the entry it shows, and the caller's view of it."""

    entry: strawberry.Private[Entry]
    view: strawberry.Private[View]

    @classmethod
    def of(cls, entry: Entry, context: Context) -> Self:
        """The node of an entry, as the request's principal may see it."""
        view = context.served(context.view(entry.entity))
        return cls(entry=entry, view=view, **cls.project(view, entry.record.data))

    @property
    def data(self) -> Mapping[str, Any]:
        """The record's fields, unmasked: for following links, never for answering."""
        return self.entry.record.data


def freshness_field() -> Any:
    """The `freshness` field of an entity type."""

    def resolve(root: EntityNode, info: Info) -> Freshness:
        return Freshness.of(root.entry.freshness, info)

    return strawberry.field(resolver=resolve, description="Provenance and age of this record.")


def masked_fields_field() -> Any:
    """The `maskedFields` field: which of this record's fields were masked for the caller."""

    def resolve(root: EntityNode) -> list[str]:
        return list(root.view.masked)

    return strawberry.field(
        resolver=resolve, description="Fields masked for you by policy (their value is null)."
    )


@strawberry.type
class ChildNode(RecordNode):
    """A sub-record (contact, stock level, order line) classified by its parent's contract."""

    view: strawberry.Private[View]
    data: strawberry.Private[Mapping[str, Any]]  # unmasked: for following links

    @classmethod
    def of(cls, view: View, data: Mapping[str, Any]) -> Self:
        """The node of a sub-record, through its parent's view."""
        return cls(view=view, data=data, **cls.project(view, data))


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

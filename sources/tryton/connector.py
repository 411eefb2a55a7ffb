"""The `tryton` connector: entities read from Tryton models over JSON-RPC.

    read       search_read(model, [(key, '=', k), *domain], fields)
    read_many  search_read(model, [(key, 'in', keys), *domain], fields)         one call
               + per warehouse, read(model, ids, quantities, {locations: [wh]})  one each
    page       search_read(..., [(key, '>', after)], order key, limit + 1)

A field's `at` is a Tryton field name or a dotted path through relations (`party.code`,
`product.rec_name`): Tryton reads the related records in the same call and nests them
under `<name>.`. A child is a one-to-many field read the same way (`lines`), or a row per
warehouse (`@warehouse`): the model's fields read with that warehouse as the `locations`
of the context, as Tryton computes stock quantities, with `warehouse.<field>` for the
warehouse's own. `@company.<path>` reads the user's company (its currency, say), once;
`a - b` is the difference of two numeric paths (credit limit less credit used), `a | b`
the first of two that is set (`write_date | create_date`: a record never edited has no
write date).
`_timestamp` is Tryton's version of a record: sent back with a write, it makes Tryton
refuse the write when the record changed since (ConcurrencyException).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sources.breaker import Breaker
from sources.connector import Filters, Mapped, Page, SourceStats
from sources.errors import SourceDataError
from sources.records import ChildMapping, ConversionError, FieldMapping, Record, convert
from sources.tryton.rpc import TrytonRpc

WAREHOUSE = "@warehouse"  # a child with one row per warehouse
COMPANY = "@company"  # the user's company, as a relation every row has
_WAREHOUSE_FIELD = "warehouse."
_MINUS = " - "
_OR = " | "
_OPERATORS = re.compile(r" [-|] ")


@dataclass(frozen=True, slots=True)
class TrytonEntity:
    """How one entity is read from a Tryton model."""

    name: str
    model: str
    key: str  # the entity's key field; its `at` is the Tryton field searched by
    fields: tuple[FieldMapping, ...]
    children: tuple[ChildMapping, ...] = ()
    domain: tuple[Any, ...] = ()  # which records of the model are this entity's
    updated_at: str | None = None
    version: str | None = None  # a field holding `_timestamp`
    searchable: tuple[str, ...] = ()

    @property
    def key_at(self) -> str:
        """The Tryton field the key is searched by."""
        return next(f.at for f in self.fields if f.name == self.key)


class TrytonConnector(Mapped[TrytonEntity]):
    """Reads entities from one Tryton database as one (non-privileged) user."""

    kind = "tryton"

    def __init__(
        self,
        name: str,
        *,
        rpc: TrytonRpc,
        entities: Iterable[TrytonEntity],
        breaker: Breaker | None = None,
    ) -> None:
        self.name = name
        self.rpc = rpc
        self.timeout = rpc.timeout
        self.stats = SourceStats(breaker=breaker or Breaker())
        Mapped.__init__(self, entities)
        self._warehouses: list[dict[str, Any]] | None = None
        self._company: dict[str, Any] | None = None

    async def read(self, entity: str, key: str) -> Record | None:
        """One record by key, or None."""
        return (await self.read_many(entity, [key])).get(key)

    async def read_many(self, entity: str, keys: Sequence[str]) -> dict[str, Record]:
        """The records among `keys`, in one search_read (and one read per warehouse)."""
        mapping = self._entities[entity]
        domain = [(mapping.key_at, "in", list(keys)), *mapping.domain]
        async with self.stats.call("read_many", self.name):
            records = self._records(mapping, await self._rows(mapping, domain, limit=None))
        return {record.key: record for record in records}

    async def page(
        self,
        entity: str,
        *,
        filters: Filters,
        search: str | None,
        limit: int,
        after: str | None,
    ) -> Page:
        """A page in key order; positions are keys."""
        mapping = self._entities[entity]
        domain: list[Any] = [*mapping.domain, *self._filters(mapping, filters)]
        if after is not None:
            domain.append((mapping.key_at, ">", after))
        if search:
            terms = [(self._at(mapping, f), "ilike", f"%{search}%") for f in mapping.searchable]
            domain.append(["OR", *terms] if len(terms) > 1 else terms[0])
        async with self.stats.call("page", self.name):
            records = self._records(mapping, await self._rows(mapping, domain, limit=limit + 1))
        page = records[:limit]
        return Page(page, [r.key for r in page], has_more=len(records) > limit)

    async def ping(self) -> None:
        """Log in if needed and read the user's preferences."""
        async with self.stats.call("ping", self.name):
            await self.rpc.ping()

    @asynccontextmanager
    async def unit(self) -> AsyncIterator[TrytonConnector]:
        """A write's unit of work: each Tryton call is its own transaction on the server."""
        yield self

    async def close(self) -> None:
        """Close the RPC client."""
        await self.rpc.close()

    async def warehouses(self) -> list[dict[str, Any]]:
        """The warehouses (id, code, name), read once: stock is reported per warehouse."""
        if self._warehouses is None:
            self._warehouses = await self.rpc.search_read(
                "stock.location",
                [("type", "=", "warehouse")],
                ["code", "name"],
                order=[("code", "ASC")],
            )
        return self._warehouses

    async def company(self, paths: Sequence[str]) -> dict[str, Any]:
        """The user's company with `paths`, read once."""
        if self._company is None:
            if self.rpc.context.get("company") is None:
                await self.rpc.login()
            company = self.rpc.context.get("company")
            if company is None:
                raise SourceDataError(self.name, "the Tryton user has no company")
            (self._company,) = await self.rpc.read("company.company", [company], list(paths))
        return self._company

    # Reading rows and mapping them.

    async def _rows(
        self, mapping: TrytonEntity, domain: Sequence[Any], *, limit: int | None
    ) -> list[dict[str, Any]]:
        order = [(mapping.key_at, "ASC")]
        paths = _paths(mapping)
        rows = await self.rpc.search_read(
            mapping.model,
            domain,
            [p for p in paths if not p.startswith(f"{COMPANY}.")],
            limit=limit,
            order=order,
        )
        company = [p.partition(".")[2] for p in paths if p.startswith(f"{COMPANY}.")]
        if company:
            found = await self.company(company)
            for row in rows:
                row[f"{COMPANY}."] = found
        for child in mapping.children:
            if child.at == WAREHOUSE and rows:
                await self._per_warehouse(mapping, child, rows)
        return rows

    async def _per_warehouse(
        self, mapping: TrytonEntity, child: ChildMapping, rows: list[dict[str, Any]]
    ) -> None:
        own = [f.at for f in child.fields if not f.at.startswith(_WAREHOUSE_FIELD)]
        ids = [row["id"] for row in rows]
        by_id: dict[int, list[dict[str, Any]]] = {row["id"]: [] for row in rows}
        for warehouse in await self.warehouses():
            context = {"locations": [warehouse["id"]]}
            for found in await self.rpc.read(mapping.model, ids, own, context=context):
                by_id[found["id"]].append({**found, "warehouse.": warehouse})
        for row in rows:
            row[WAREHOUSE] = by_id[row["id"]]

    def _records(self, mapping: TrytonEntity, rows: Iterable[Any]) -> list[Record]:
        return [self._record(mapping, row) for row in rows]

    def _record(self, mapping: TrytonEntity, row: Any) -> Record:
        data = self._fields(mapping.name, mapping.fields, row)
        for child in mapping.children:
            data[child.name] = self._children(mapping.name, child, row)
        updated_at = data.get(mapping.updated_at) if mapping.updated_at else None
        version = str(data[mapping.version]) if mapping.version else ""
        return Record(
            key=str(data[mapping.key]), data=data, updated_at=updated_at, stated_version=version
        )

    def _children(self, entity: str, child: ChildMapping, row: dict[str, Any]) -> list[Any]:
        where = f"{entity}.{child.name}"
        found = row.get(child.at if child.at == WAREHOUSE else f"{child.at}.")
        if found is None:
            return []
        if not isinstance(found, list):
            raise SourceDataError(self.name, f"field {where}: expected a list", field=where)
        children = [self._fields(where, child.fields, item) for item in found]
        if child.order_by:
            children.sort(key=lambda c: tuple(_sortable(c.get(n)) for n in child.order_by))
        return children

    def _fields(self, where: str, fields: Iterable[FieldMapping], row: Any) -> dict[str, Any]:
        if not isinstance(row, dict):
            raise SourceDataError(self.name, f"{where}: expected a record")
        data: dict[str, Any] = {}
        for mapping in fields:
            try:
                data[mapping.name] = convert(_value(row, mapping.at), mapping)
            except (ConversionError, _Missing) as exc:
                name = f"{where}.{mapping.name}"
                raise SourceDataError(self.name, f"field {name}: {exc}", field=name) from exc
        return data

    def _filters(self, mapping: TrytonEntity, filters: Filters) -> list[Any]:
        domain: list[Any] = []
        for name, value in filters.items():
            operator = "in" if isinstance(value, list | tuple) else "="
            domain.append((self._at(mapping, name), operator, value))
        return domain

    def _at(self, mapping: TrytonEntity, name: str) -> str:
        """The Tryton path of a field (`child.field` for a child's)."""
        head, _, tail = name.partition(".")
        if tail:
            child = next(c for c in mapping.children if c.name == head)
            return f"{child.at}.{next(f.at for f in child.fields if f.name == tail)}"
        return next(f.at for f in mapping.fields if f.name == name)


class _Missing(Exception):
    """A field the answer does not carry."""


def _paths(mapping: TrytonEntity) -> list[str]:
    """Every Tryton field path one search_read must ask for."""
    paths = [p for f in mapping.fields for p in _OPERATORS.split(f.at)]
    for child in mapping.children:
        if child.at != WAREHOUSE:
            paths.extend(f"{child.at}.{p}" for f in child.fields for p in _OPERATORS.split(f.at))
    return list(dict.fromkeys(paths))


def _value(row: Mapping[str, Any], at: str) -> Any:
    """The value of a field: one path, the difference of two, or the first that is set."""
    if _OR in at:
        first, second = (_at(row, path) for path in at.split(_OR, 1))
        return second if first is None else first
    if _MINUS in at:
        left, right = (_at(row, path) for path in at.split(_MINUS, 1))
        return None if left is None or right is None else left - right
    return _at(row, at)


def _at(row: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path: `party.code` is row["party."]["code"]."""
    head, _, tail = path.partition(".")
    if not tail:
        if head not in row:
            raise _Missing("missing from Tryton's answer")
        return row[head]
    related = row.get(f"{head}.")
    if related is None:
        if head in row or f"{head}." in row:
            return None  # the relation is empty
        raise _Missing("missing from Tryton's answer")
    if not isinstance(related, Mapping):
        raise _Missing("not a record in Tryton's answer")
    return _at(related, tail)


def _sortable(value: Any) -> tuple[bool, Any]:
    return (value is None, value if value is not None else 0)

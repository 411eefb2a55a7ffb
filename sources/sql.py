"""The `sql` connector: any SQLAlchemy database, entities mapped to tables or views.

One statement per call: a record and its children (order lines, stock per location) come
back from one outer join over the parent rows, so a page of orders with their lines is one
round-trip. Every statement runs under a timeout.

A write's unit of work (`unit`) is one transaction that its plan reads and its execution
writes in. The journal (`gatehouse_journal`, a table in the system's own database) records
the id of each governed action inside the transaction of its effect, so that after a crash
`journaled_effect` can say for certain whether the effect committed, and no action's
effect can commit twice.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import json
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    Row,
    Select,
    and_,
    bindparam,
    cast,
    exists,
    func,
    literal,
    or_,
    select,
)
from sqlalchemy import String as SqlString
from sqlalchemy import Table as SqlTable
from sqlalchemy import Text as SqlText
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql import ColumnElement, TableClause, column, table

from sources.breaker import Breaker
from sources.connector import Filters, Mapped, Page, SourceStats
from sources.errors import (
    SourceDataError,
    SourceError,
    SourceRejected,
    SourceTimeout,
    SourceUnavailable,
)
from sources.records import ChildMapping, ConversionError, FieldMapping, Record, convert

JOURNAL = "gatehouse_journal"

# The execution option that marks a connection whose statements each commit on their own.
SINGLE_STATEMENT = "gatehouse_single_statement"


@dataclass(frozen=True, slots=True)
class SqlEntity:
    """How one entity is stored: its table or view, key, fields and at most one child list."""

    name: str
    table: str
    key: str  # the name of the key field
    fields: tuple[FieldMapping, ...]
    children: tuple[ChildMapping, ...] = ()
    updated_at: str | None = None  # the field holding the record's last-modified time
    searchable: tuple[str, ...] = ()
    schema: str | None = None

    def field(self, name: str) -> FieldMapping:
        """The mapping of one field, by name."""
        for mapping in self.fields:
            if mapping.name == name:
                return mapping
        raise ValueError(f"{self.name} has no field '{name}'")


class SqlConnector(Mapped[SqlEntity]):
    """Reads entities from a SQL database through SQLAlchemy's async engine."""

    kind = "sql"

    def __init__(
        self,
        name: str,
        *,
        url: str,
        entities: Iterable[SqlEntity],
        timeout: float = 5.0,
        schema: str | None = None,
        engine: AsyncEngine | None = None,
        breaker: Breaker | None = None,
    ) -> None:
        self.name = name
        self.timeout = timeout
        self.schema = schema
        self.stats = SourceStats(breaker=breaker or Breaker())
        Mapped.__init__(self, entities)
        for entity in self._entities.values():
            if len(entity.children) > 1:
                raise ValueError(f"{entity.name}: a SQL entity maps at most one child list")
        self.engine = engine or create_async_engine(
            url,
            pool_recycle=30 * 60,
            connect_args=_connect_args(url, timeout),
            hide_parameters=True,  # errors are cut short anyway (_short); logs too
        )
        self._read_engine = single_statement_engine(self.engine)
        self._joined: AsyncConnection | None = None  # see `within`

    async def read(self, entity: str, key: str) -> Record | None:
        """One record by key, or None."""
        mapping = self._entities[entity]
        records = await self._fetch(
            "read", _read_one(mapping), lambda rows: self._records(mapping, rows), {"key": key}
        )
        return records[0] if records else None

    async def read_many(self, entity: str, keys: Sequence[str]) -> dict[str, Record]:
        """The records that exist among `keys`, in one statement."""
        mapping = self._entities[entity]
        records = await self._fetch(
            "read_many",
            _read_many(mapping),
            lambda rows: self._records(mapping, rows),
            {"keys": list(keys)},
        )
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
        """A page in key order; positions are the records' keys."""
        mapping = self._entities[entity]
        key = _column(mapping, mapping.key)
        parents = _parent_select(mapping).where(*_conditions(mapping, filters, search))
        if after is not None:
            parents = parents.where(key > after)
        parents = parents.order_by(key).limit(limit + 1)
        records = await self._fetch(
            "page", _with_children(mapping, parents), lambda rows: self._records(mapping, rows)
        )
        page = records[:limit]
        return Page(page, [record.key for record in page], has_more=len(records) > limit)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """One transaction on the database, committed on success, under the call timeout.

        Database failures inside it become SourceErrors; any other exception rolls it back
        and propagates unchanged. Within `within`'s transaction, it is that one, which
        counts, times and translates already.
        """
        if self._joined is not None:
            yield self._joined
            return
        async with (
            self.stats.call("transaction", self.name),
            self._translated_errors(),
            asyncio.timeout(self.timeout),
            self.engine.begin() as connection,
        ):
            yield connection

    def within(self, connection: AsyncConnection) -> SqlConnector:
        """This connector joined to `connection`'s open transaction, for its reads and writes.

        The caller owns the transaction: it commits or rolls back, and nothing here does.
        """
        joined = copy.copy(self)
        joined._joined = connection
        return joined

    @asynccontextmanager
    async def unit(self) -> AsyncIterator[SqlConnector]:
        """A unit of work: this connector joined to a new transaction, committed on success."""
        if self._joined is not None:
            yield self
            return
        async with self.transaction() as connection:
            yield self.within(connection)

    async def record_effect(self, action_id: str, result: Mapping[str, Any]) -> None:
        """Journal the action's effect in the unit's transaction: it commits with the effect.

        The journal's key holds one row per action: an attempt of an action whose effect
        is journaled already fails here, and its transaction with it.
        """
        journal = journal_table(self.schema)
        async with self.transaction() as connection:
            await connection.execute(
                journal.insert().values(
                    action_id=action_id,
                    result=json.dumps(dict(result), default=str),
                    recorded_at=datetime.now(UTC),
                )
            )

    async def journaled_effect(self, action_id: str) -> dict[str, Any] | None:
        """The journaled result of the action's effect, or None when it never committed.

        Asked after the process that ran the action died: its transaction ended with it
        (the database aborts a dead client's transaction), so a missing row is final.
        """
        journal = journal_table(self.schema)
        query = select(journal.c.result).where(journal.c.action_id == action_id)
        async with self.transaction() as connection:
            found = (await connection.execute(query)).scalar_one_or_none()
        return None if found is None else dict(json.loads(found))

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection]:
        """The joined transaction's connection, or one of the pool's for a lone statement."""
        if self._joined is not None:
            yield self._joined
        else:
            async with self._read_engine.connect() as connection:
                yield connection

    async def ping(self) -> None:
        """Run `SELECT 1`."""
        await self._fetch("ping", select(literal(1)))

    async def close(self) -> None:
        """Dispose of the connection pool."""
        await self.engine.dispose()

    async def _fetch(
        self,
        operation: str,
        statement: Select[Any],
        parse: Callable[[list[Row[Any]]], list[Record]] = lambda rows: [],
        params: Mapping[str, Any] | None = None,
    ) -> list[Record]:
        # Rows are converted inside the counted call, so malformed data counts as an error.
        # One statement: it reads one snapshot without an explicit transaction around it.
        async with (
            self.stats.call(operation, self.name),
            self._translated_errors(),
            asyncio.timeout(self.timeout),
            self._connection() as connection,
        ):
            result = await connection.execute(statement, params)
            return parse(list(result.all()))

    @asynccontextmanager
    async def _translated_errors(self) -> AsyncIterator[None]:
        try:
            yield
        except SourceError:
            raise
        except TimeoutError as exc:
            raise SourceTimeout(self.name, f"no answer within {self.timeout:g}s") from exc
        except IntegrityError as exc:
            raise SourceRejected(self.name, _short(exc)) from exc
        except (DBAPIError, OSError) as exc:
            raise SourceUnavailable(self.name, _short(exc)) from exc
        except SQLAlchemyError as exc:
            raise SourceUnavailable(self.name, _short(exc)) from exc

    def _records(self, mapping: SqlEntity, rows: Sequence[Row[Any]]) -> list[Record]:
        records: dict[str, dict[str, Any]] = {}
        child = mapping.children[0] if mapping.children else None
        for row in rows:
            values = row._mapping
            key = str(values[f"p__{mapping.key}"])
            if key not in records:
                records[key] = self._convert_fields(mapping.name, mapping.fields, values, "p__")
                if child is not None:
                    records[key][child.name] = []
            if child is not None and values["c__parent"] is not None:
                prefix = f"{mapping.name}.{child.name}"
                records[key][child.name].append(
                    self._convert_fields(prefix, child.fields, values, "c__")
                )
        return [self._record(mapping, key, data) for key, data in records.items()]

    def _record(self, mapping: SqlEntity, key: str, data: dict[str, Any]) -> Record:
        updated_at = data.get(mapping.updated_at) if mapping.updated_at else None
        return Record(key=key, data=data, updated_at=updated_at)

    def _convert_fields(
        self, where: str, fields: Iterable[FieldMapping], values: Mapping[Any, Any], prefix: str
    ) -> dict[str, Any]:
        converted: dict[str, Any] = {}
        for mapping in fields:
            try:
                converted[mapping.name] = convert(values[prefix + mapping.name], mapping)
            except ConversionError as exc:
                field = f"{where}.{mapping.name}"
                raise SourceDataError(self.name, f"field {field}: {exc}", field=field) from exc
        return converted


@functools.cache
def journal_table(schema: str | None) -> SqlTable:
    """The journal of governed actions' effects, in the system's own database."""
    return SqlTable(
        JOURNAL,
        MetaData(schema=schema),
        Column("action_id", SqlString(64), primary_key=True),
        Column("result", SqlText, nullable=False),  # JSON
        Column("recorded_at", DateTime(timezone=True), nullable=False),
    )


def single_statement_engine(engine: AsyncEngine) -> AsyncEngine:
    """The engine for statements that are each a transaction of their own (autocommit).

    On PostgreSQL a lone statement is its own transaction, so autocommit saves the BEGIN
    and COMMIT round trips. SQLite's driver, as the gateway and the connectors set it up,
    does not BEGIN by itself; SINGLE_STATEMENT tells a `begin` listener that issues BEGIN
    (the gateway's database does) to leave it out. Switching a SQLite connection's mode
    instead would cost a hop to its thread, twice per use.
    """
    if engine.dialect.name == "postgresql":
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    return engine.execution_options(**{SINGLE_STATEMENT: True})


def _connect_args(url: str, timeout: float) -> dict[str, Any]:
    if url.startswith("postgresql+asyncpg"):
        return {"timeout": timeout, "command_timeout": timeout}
    if url.startswith("sqlite"):
        return {"timeout": timeout}
    return {}


@functools.cache
def _table(
    name: str, schema: str | None, fields: tuple[FieldMapping, ...], *extra: str
) -> TableClause:
    # One clause object per table: SQLAlchemy tells tables apart by identity, and two
    # clauses for one table in a statement would put it twice in FROM.
    names = dict.fromkeys([*(mapping.at for mapping in fields), *extra])
    return table(name, *(column(name) for name in names), schema=schema)


@functools.cache
def _read_one(mapping: SqlEntity) -> Select[Any]:
    """The record whose key is the `key` parameter, with its children: built once per entity.

    Not `_read_many` with one key: an expanding IN is rendered anew on every execution.
    """
    key = _column(mapping, mapping.key) == bindparam("key")
    return _with_children(mapping, _parent_select(mapping).where(key))


@functools.cache
def _read_many(mapping: SqlEntity) -> Select[Any]:
    """The records among the `keys` parameter, with their children: built once per entity."""
    keys = _column(mapping, mapping.key).in_(bindparam("keys", expanding=True))
    return _with_children(mapping, _parent_select(mapping).where(keys))


def _parent_table(mapping: SqlEntity) -> TableClause:
    return _table(mapping.table, mapping.schema, mapping.fields)


def _column(mapping: SqlEntity, field: str) -> ColumnElement[Any]:
    return _parent_table(mapping).c[mapping.field(field).at]


def _parent_select(mapping: SqlEntity) -> Select[Any]:
    parent = _parent_table(mapping)
    return select(*(parent.c[f.at].label(f"p__{f.name}") for f in mapping.fields))


def _with_children(mapping: SqlEntity, parents: Select[Any]) -> Select[Any]:
    """Join the child rows onto the selected parents in the same statement."""
    key_label = f"p__{mapping.key}"
    if not mapping.children:
        return parents.order_by(parents.selected_columns[key_label])
    child = mapping.children[0]
    parent_rows = parents.subquery("parent")
    child_table = _table(child.at, mapping.schema, child.fields, child.parent_key)
    columns = [child_table.c[f.at].label(f"c__{f.name}") for f in child.fields]
    columns_of = {f.name: f.at for f in child.fields}
    join = parent_rows.outerjoin(
        child_table, child_table.c[child.parent_key] == parent_rows.c[key_label]
    )
    return (
        select(parent_rows, child_table.c[child.parent_key].label("c__parent"), *columns)
        .select_from(join)
        .order_by(parent_rows.c[key_label], *(child_table.c[columns_of[n]] for n in child.order_by))
    )


def _conditions(
    mapping: SqlEntity, filters: Filters, search: str | None
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    child_filters: dict[str, dict[str, object]] = {}
    for name, value in filters.items():
        if "." in name:
            child, field = name.split(".", 1)
            child_filters.setdefault(child, {})[field] = value
        else:
            conditions.append(_match(_parent_table(mapping), mapping.field(name), value))
    for child_name, by_field in child_filters.items():
        conditions.append(_child_exists(mapping, child_name, by_field))
    if search:
        conditions.append(_search(mapping, search))
    return conditions


def _match(source: TableClause, mapping: FieldMapping, value: object) -> ColumnElement[bool]:
    target = source.c[mapping.at]
    if mapping.type == "bool":
        # Booleans are stored as BOOLEAN or as 0/1 depending on the database; compare as 0/1.
        return cast(target, Integer) == int(bool(value))
    if isinstance(value, list | tuple | set | frozenset):
        return target.in_(list(value))
    return target == value


def _child_exists(
    mapping: SqlEntity, child_name: str, by_field: Mapping[str, object]
) -> ColumnElement[bool]:
    child = next((c for c in mapping.children if c.name == child_name), None)
    if child is None:
        raise ValueError(f"{mapping.name} has no child list '{child_name}'")
    child_table = _table(child.at, mapping.schema, child.fields, child.parent_key)
    fields = {f.name: f for f in child.fields}
    matches = [_match(child_table, fields[name], value) for name, value in by_field.items()]
    parent_key = _column(mapping, mapping.key)
    return exists().where(child_table.c[child.parent_key] == parent_key, and_(*matches))


def _search(mapping: SqlEntity, text: str) -> ColumnElement[bool]:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    pattern = f"%{escaped.lower()}%"
    columns = [_column(mapping, name) for name in mapping.searchable or (mapping.key,)]
    return or_(*(func.lower(c).like(pattern, escape="\\") for c in columns))


def _short(exc: BaseException) -> str:
    # The driver's first line says what went wrong; the rest is SQL and parameters,
    # which may hold customer data and must not travel into errors or logs.
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__

"""The demo ERP: an order-to-cash ledger in any SQLAlchemy database (SQLite or PostgreSQL).

    create_erp(url, estate, schema)
    ├── drop the views, then the tables     so seeding is re-runnable
    ├── create the tables, then the views   stock_positions, customer_balances
    └── insert the estate                   one executemany per table

Money is stored as integer minor units (cents) so it stays exact on SQLite too; times are UTC.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.schema import CreateSchema

from sources.demo.data import Estate, to_cents
from sources.sql import journal_table

VIEWS = ("customer_balances", "stock_positions")

_STOCK_POSITIONS = """
CREATE VIEW {stock_positions} AS
SELECT sku, location, on_hand, reserved, on_hand - reserved AS available, reorder_point,
       CASE WHEN on_hand - reserved < reorder_point THEN 1 ELSE 0 END AS below_reorder_point,
       updated_at
FROM {stock_levels}
"""

# Portable to SQLite and PostgreSQL: SUM(BIGINT) is NUMERIC on PostgreSQL, hence the casts; no
# GREATEST/LEAST (absent on SQLite), hence CASE and MAX over a UNION ALL for the latest change.
# Overdue applies payments and credit notes to the oldest invoices first, then clamps the rest
# to [0, outstanding].
_CUSTOMER_BALANCES = """
CREATE VIEW {customer_balances} AS
SELECT customer_id, currency, credit_limit_cents, outstanding_cents,
       CASE WHEN overdue_gross_cents - settled_cents <= 0 THEN 0
            WHEN overdue_gross_cents - settled_cents > outstanding_cents THEN outstanding_cents
            ELSE overdue_gross_cents - settled_cents END AS overdue_cents,
       credit_limit_cents - outstanding_cents AS available_credit_cents,
       updated_at
FROM (
    SELECT a.customer_id, a.currency, a.credit_limit_cents,
           CAST(COALESCE(inv.total, 0) - COALESCE(pay.total, 0) - COALESCE(cn.total, 0)
                AS BIGINT) AS outstanding_cents,
           CAST(COALESCE(inv.overdue, 0) AS BIGINT) AS overdue_gross_cents,
           CAST(COALESCE(pay.total, 0) + COALESCE(cn.total, 0) AS BIGINT) AS settled_cents,
           latest.updated_at
    FROM {accounts} a
    LEFT JOIN (
        SELECT customer_id, SUM(amount_cents) AS total,
               SUM(CASE WHEN due_date < CURRENT_DATE THEN amount_cents ELSE 0 END) AS overdue
        FROM {invoices} GROUP BY customer_id
    ) inv ON inv.customer_id = a.customer_id
    LEFT JOIN (
        SELECT customer_id, SUM(amount_cents) AS total FROM {payments} GROUP BY customer_id
    ) pay ON pay.customer_id = a.customer_id
    LEFT JOIN (
        SELECT customer_id, SUM(amount_cents) AS total FROM {credit_notes} GROUP BY customer_id
    ) cn ON cn.customer_id = a.customer_id
    LEFT JOIN (
        SELECT customer_id, MAX(changed_at) AS updated_at
        FROM (
            SELECT customer_id, updated_at AS changed_at FROM {accounts}
            UNION ALL SELECT customer_id, updated_at FROM {invoices}
            UNION ALL SELECT customer_id, received_at FROM {payments}
            UNION ALL SELECT customer_id, issued_at FROM {credit_notes}
        ) changes
        GROUP BY customer_id
    ) latest ON latest.customer_id = a.customer_id
) balances
"""


def erp_metadata(schema: str | None = None) -> MetaData:
    """The ERP's tables, optionally inside a PostgreSQL schema; built fresh on each call."""
    metadata = MetaData(schema=schema)
    prefix = f"{schema}." if schema else ""
    _catalogue_tables(metadata, prefix)
    _sales_tables(metadata, prefix)
    _ledger_tables(metadata)
    # Where governed actions record their id with their effect, for crash recovery.
    journal_table(schema).to_metadata(metadata)
    return metadata


async def create_erp(url: str, estate: Estate, *, schema: str | None = None) -> None:
    """Create (or re-create) the ERP at `url` and fill it with the estate."""
    engine = create_async_engine(url)
    metadata = erp_metadata(schema)
    try:
        async with engine.begin() as connection:
            if schema:
                await connection.execute(CreateSchema(schema, if_not_exists=True))
            await _drop(connection, metadata, schema)
            await connection.run_sync(metadata.create_all)
            await _create_views(connection, schema)
            await _insert(connection, metadata, estate)
    finally:
        await engine.dispose()


def _catalogue_tables(metadata: MetaData, prefix: str) -> None:
    Table(
        "locations",
        metadata,
        Column("code", String(16), primary_key=True),
        Column("name", String(100), nullable=False),
    )
    Table(
        "items",
        metadata,
        Column("sku", String(32), primary_key=True),
        Column("name", String(200), nullable=False),
        Column("description", Text, nullable=False),
        Column("unit_price_cents", BigInteger, nullable=False),
        Column("currency", String(3), nullable=False),
        Column("active", Boolean, nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
    )
    Table(
        "item_prices",  # the price list: an order is priced in its account's currency
        metadata,
        Column("sku", String(32), ForeignKey(f"{prefix}items.sku"), primary_key=True),
        Column("currency", String(3), primary_key=True),
        Column("unit_price_cents", BigInteger, nullable=False),
    )
    Table(
        "stock_levels",
        metadata,
        Column("sku", String(32), ForeignKey(f"{prefix}items.sku"), nullable=False),
        Column("location", String(16), ForeignKey(f"{prefix}locations.code"), nullable=False),
        Column("on_hand", Integer, nullable=False),
        Column("reserved", Integer, nullable=False),
        Column("reorder_point", Integer, nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
        PrimaryKeyConstraint("sku", "location"),
        CheckConstraint("on_hand >= 0", name="ck_stock_levels_on_hand_not_negative"),
        CheckConstraint("reserved >= 0", name="ck_stock_levels_reserved_not_negative"),
        CheckConstraint("reserved <= on_hand", name="ck_stock_levels_reserved_within_on_hand"),
    )


def _sales_tables(metadata: MetaData, prefix: str) -> None:
    Table(
        "accounts",
        metadata,
        Column("customer_id", String(32), primary_key=True),
        Column("currency", String(3), nullable=False),
        Column("credit_limit_cents", BigInteger, nullable=False),
        Column("payment_terms_days", Integer, nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
    )
    orders = Table(
        "orders",
        metadata,
        Column("id", String(32), primary_key=True),
        Column("customer_id", String(32), nullable=False),
        Column("status", String(16), nullable=False),
        Column("currency", String(3), nullable=False),
        Column("total_cents", BigInteger, nullable=False),
        Column("placed_at", DateTime(timezone=True), nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
    )
    Index("ix_orders_customer_id", orders.c.customer_id)
    Index("ix_orders_status", orders.c.status)
    Table(
        "order_lines",
        metadata,
        Column("order_id", String(32), ForeignKey(f"{prefix}orders.id"), nullable=False),
        Column("line_no", Integer, nullable=False),
        Column("sku", String(32), ForeignKey(f"{prefix}items.sku"), nullable=False),
        Column("quantity", Integer, nullable=False),
        Column("unit_price_cents", BigInteger, nullable=False),
        Column("line_total_cents", BigInteger, nullable=False),
        PrimaryKeyConstraint("order_id", "line_no"),
    )
    # Where an order's stock is held, so a cancellation releases it at the right location.
    Table(
        "reservations",
        metadata,
        Column("order_id", String(32), ForeignKey(f"{prefix}orders.id"), nullable=False),
        Column("sku", String(32), ForeignKey(f"{prefix}items.sku"), nullable=False),
        Column("location", String(16), ForeignKey(f"{prefix}locations.code"), nullable=False),
        Column("quantity", Integer, nullable=False),
        PrimaryKeyConstraint("order_id", "sku", "location"),
        CheckConstraint("quantity > 0", name="ck_reservations_quantity_positive"),
    )


def _ledger_tables(metadata: MetaData) -> None:
    invoices = Table(
        "invoices",
        metadata,
        Column("id", String(32), primary_key=True),
        Column("customer_id", String(32), nullable=False),
        Column("order_id", String(32), nullable=False),
        Column("currency", String(3), nullable=False),
        Column("amount_cents", BigInteger, nullable=False),
        Column("issued_at", DateTime(timezone=True), nullable=False),
        Column("due_date", Date, nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
    )
    payments = Table(
        "payments",
        metadata,
        Column("id", String(32), primary_key=True),
        Column("customer_id", String(32), nullable=False),
        Column("currency", String(3), nullable=False),
        Column("amount_cents", BigInteger, nullable=False),
        Column("reference", String(100), nullable=False, unique=True),
        Column("received_at", DateTime(timezone=True), nullable=False),
    )
    credit_notes = Table(
        "credit_notes",
        metadata,
        Column("id", String(32), primary_key=True),
        Column("customer_id", String(32), nullable=False),
        Column("order_id", String(32), nullable=True),
        Column("currency", String(3), nullable=False),
        Column("amount_cents", BigInteger, nullable=False),
        Column("reason", String(200), nullable=False),
        Column("issued_at", DateTime(timezone=True), nullable=False),
    )
    for table in (invoices, payments, credit_notes):
        Index(f"ix_{table.name}_customer_id", table.c.customer_id)


async def _drop(connection: AsyncConnection, metadata: MetaData, schema: str | None) -> None:
    # Views first: PostgreSQL refuses to drop a table that a view still depends on.
    for view in VIEWS:
        name = _qualified(connection.dialect, schema, view)
        await connection.execute(text(f"DROP VIEW IF EXISTS {name}"))
    await connection.run_sync(metadata.drop_all)


async def _create_views(connection: AsyncConnection, schema: str | None) -> None:
    names = {
        name: _qualified(connection.dialect, schema, name)
        for name in (*VIEWS, "stock_levels", "accounts", "invoices", "payments", "credit_notes")
    }
    for ddl in (_STOCK_POSITIONS, _CUSTOMER_BALANCES):
        await connection.execute(text(ddl.format(**names)))


def _qualified(dialect: Dialect, schema: str | None, name: str) -> str:
    """A quoted, schema-qualified name for hand-written DDL."""
    preparer = dialect.identifier_preparer
    quoted = preparer.quote(name)
    return f"{preparer.quote_schema(schema)}.{quoted}" if schema else quoted


async def _insert(connection: AsyncConnection, metadata: MetaData, estate: Estate) -> None:
    for name, rows in _rows(estate).items():
        if rows:
            await connection.execute(_table(metadata, name).insert(), rows)


def _table(metadata: MetaData, name: str) -> Table:
    key = f"{metadata.schema}.{name}" if metadata.schema else name
    return metadata.tables[key]


def _rows(estate: Estate) -> dict[str, list[dict[str, Any]]]:
    """Insert parameters per table, in foreign-key order."""
    tables: dict[str, Sequence[object]] = {
        "locations": estate.locations,
        "accounts": estate.accounts,
        "items": estate.items,
        "item_prices": estate.prices,
        "stock_levels": estate.stock_levels,
        "orders": estate.orders,
        "order_lines": [line for order in estate.orders for line in order.lines],
        "invoices": estate.invoices,
        "payments": estate.payments,
        "credit_notes": estate.credit_notes,
    }
    return {name: [_row(record) for record in records] for name, records in tables.items()}


def _row(record: object) -> dict[str, Any]:
    """A record's columns: each Decimal field `x` becomes integer cents in `x_cents`."""
    row: dict[str, Any] = {}
    for field, value in vars(record).items():
        if isinstance(value, Decimal):
            row[f"{field}_cents"] = to_cents(value)
        elif not isinstance(value, tuple):  # nested records (an order's lines) have own tables
            row[field] = value
    return row

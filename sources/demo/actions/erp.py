"""What the demo's ERP actions share: its tables, the account lock, the effect journal."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import MetaData, Table, update
from sqlalchemy.ext.asyncio import AsyncConnection

from sources.actions import Effect
from sources.demo.erp import erp_metadata
from sources.sql import SqlConnector


def tables(erp: SqlConnector) -> Mapping[str, Table]:
    """The ERP's tables, as they are laid out in its schema."""
    return _tables(erp.schema)


@functools.cache
def _tables(schema: str | None) -> Mapping[str, Table]:
    metadata: MetaData = erp_metadata(schema)
    prefix = f"{schema}." if schema else ""
    return {name.removeprefix(prefix): table for name, table in metadata.tables.items()}


async def lock_account(connection: AsyncConnection, erp: SqlConnector, customer_id: str) -> None:
    """Hold the customer's account until the transaction ends: its ledger writes queue up.

    A no-op UPDATE, because it locks on every database: the row on PostgreSQL, the file on
    SQLite (which ignores FOR UPDATE); whoever waited then reads what the other wrote.
    """
    accounts = tables(erp)["accounts"]
    await connection.execute(
        update(accounts)
        .where(accounts.c.customer_id == customer_id)
        .values(customer_id=accounts.c.customer_id)
    )


def utcnow() -> datetime:
    """Now, in UTC."""
    return datetime.now(UTC)


def to_cents(amount: Decimal) -> int:
    """An exact two-decimal amount as integer minor units."""
    return int((amount * 100).to_integral_value())


def money(cents: Any) -> Decimal:
    """Integer minor units as an exact two-decimal amount."""
    return Decimal(int(cents)).scaleb(-2)


class ErpAction:
    """What every demo ERP action shares: its effect is journaled with the action's id."""

    async def find_effect(
        self, data: Any, source: SqlConnector, *, action_id: str, based_on: str | None
    ) -> Effect:
        """The journal tells for certain: the effect's row committed with it, or not."""
        result = await source.journaled_effect(action_id)
        return Effect(applied=result is not None, result=result)

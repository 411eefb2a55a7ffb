"""What every action kind provides, and what it is given to do it."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict
from sqlalchemy import MetaData, Table, update
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.errors import GatehouseError
from sources.demo.erp import erp_metadata
from sources.http import HttpConnector
from sources.records import Record
from sources.sql import SqlConnector


class ActionInput(BaseModel):
    """Every action's input: unknown fields are mistakes, and inputs never change."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


@dataclass(frozen=True, slots=True)
class Problem:
    """One reason an input cannot be applied: the field, the message, the rule."""

    message: str
    field: str | None = None
    rule: str = "SHAPE"

    def as_dict(self) -> dict[str, str | None]:
        """The JSON form stored, audited and returned."""
        return {"field": self.field, "message": self.message, "rule": self.rule}


class Invalid(GatehouseError):
    """Business rules refused the input; raised inside execution to roll back."""

    code = "INVALID"
    status = 422

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(p.message for p in problems))
        self.problems = problems


@dataclass(slots=True)
class Plan:
    """The state a write was validated against, and what it would change."""

    target_version: str | None
    target_record: Record | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    problems: list[Problem] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)  # what execute() needs from plan()

    @classmethod
    def refused(
        cls, message: str, field: str | None, rule: str, record: Record | None = None
    ) -> Plan:
        """A plan that cannot go ahead, for one reason."""
        version = None if record is None else record.version
        return cls(version, record, None, None, [Problem(message, field, rule)])


@dataclass(frozen=True)
class WriteEnv:
    """The systems of record an action may read and write."""

    erp: SqlConnector
    crm: HttpConnector

    @property
    def erp_tables(self) -> Mapping[str, Table]:
        """The ERP's tables, as they are laid out in its schema."""
        return _erp_tables(self.erp.schema)

    @asynccontextmanager
    async def unit(self, entity: str, *, writes: bool) -> AsyncIterator[WriteEnv]:
        """Where a write to `entity` plans and executes.

        When it goes on to write to the ERP, one ERP transaction holds its reads and its
        writes (what was validated is what is written, and one connection does it all);
        the transaction commits when the block ends without an exception. Otherwise
        reads are statements of their own, as on the read path.
        """
        if not writes or entity not in self.erp.entities():
            yield self
            return
        async with self.erp.transaction() as connection:
            yield replace(self, erp=self.erp.within(connection))


@functools.cache
def _erp_tables(schema: str | None) -> Mapping[str, Table]:
    metadata: MetaData = erp_metadata(schema)
    prefix = f"{schema}." if schema else ""
    return {name.removeprefix(prefix): table for name, table in metadata.tables.items()}


async def lock_account(connection: AsyncConnection, env: WriteEnv, customer_id: str) -> None:
    """Hold the customer's account until the transaction ends: its ledger writes queue up.

    A no-op UPDATE, because it locks on every database: the row on PostgreSQL, the file on
    SQLite (which ignores FOR UPDATE); whoever waited then reads what the other wrote.
    """
    accounts = env.erp_tables["accounts"]
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


class ActionKind(Protocol):
    """One kind of governed write."""

    kind: ClassVar[str]  # e.g. "inventory.adjust": the object policy rules name
    mutation: ClassVar[str]  # the GraphQL mutation and MCP tool it is exposed as
    entity: ClassVar[str]  # the entity it changes
    summary: ClassVar[str]
    Input: ClassVar[type[ActionInput]]
    pii_fields: ClassVar[frozenset[str]]
    creates: ClassVar[bool]  # True when the write makes a new record (no expectedVersion)

    def target(self, data: Any) -> str:
        """The key of the record it changes (or, for a new record, what it hangs off)."""
        ...

    def policy_input(self, data: Any) -> dict[str, Any]:
        """What policy conditions see as r.inp.*."""
        ...

    def amount(self, data: Any) -> Decimal | None:
        """The money at stake, which an approver's limit must cover; None for no money."""
        ...

    async def plan(self, data: Any, env: WriteEnv) -> Plan:
        """Read fresh state, check the rules, and work out the diff."""
        ...

    async def execute(
        self, data: Any, plan: Plan, env: WriteEnv, *, idempotency_key: str
    ) -> dict[str, Any]:
        """Apply the write on the system of record; raise Invalid to roll back."""
        ...

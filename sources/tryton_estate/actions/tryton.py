"""What the Tryton estate's actions share: Tryton's refusals as validation problems, the
mark each action leaves on what it creates, and looking records up by their codes.

Tryton answers a business rule it enforces (a credit limit, stock for a quotation, a
workflow step) with a UserError; the action reports it as INVALID, naming Tryton, with
Tryton's own message. A stale `_timestamp` is a ConcurrencyException: CONFLICT.
"""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import date
from typing import Any, TypeVar

from sources.actions import Invalid, Problem
from sources.errors import SourceRefused
from sources.tryton.connector import TrytonConnector

TRYTON_RULE = "TRYTON_RULE"
T = TypeVar("T")


async def obeying(call: Awaitable[T], field: str | None = None) -> T:
    """`call`'s answer; a rule Tryton enforces refusing it is an Invalid naming Tryton."""
    try:
        return await call
    except SourceRefused as refused:
        problem = Problem(f"Tryton refused it: {refused.detail}", field, TRYTON_RULE)
        raise Invalid([problem]) from refused


def mark(action_id: str) -> str:
    """What an action writes on the record it creates, so that it can find it again."""
    return f"gatehouse-{action_id}"


async def record_id(source: TrytonConnector, model: str, domain: list[Any]) -> int | None:
    """The id of the one record of `model` matching `domain`, or None."""
    ids = await source.rpc.search(model, domain, limit=1)
    return ids[0] if ids else None


async def read_one(
    source: TrytonConnector, model: str, domain: list[Any], fields: list[str]
) -> dict[str, Any] | None:
    """The first record of `model` matching `domain`, with `fields`, or None."""
    rows = await source.rpc.search_read(model, domain, fields, limit=1)
    return rows[0] if rows else None


def today() -> date:
    """Today's date, as Tryton dates moves and sales."""
    return date.today()  # noqa: DTZ011 - Tryton's dates are the company's calendar days

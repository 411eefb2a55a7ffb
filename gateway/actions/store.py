"""Actions as the gateway's database holds them; every state change is compare-and-set.

A change names the status (and revision) it expects to move from, so two processes racing
to approve, expire or retry one action cannot both win.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.audit import Prelude
from gateway.database import actions, approvals


class Status(StrEnum):
    """Where an action is in its life; the write result statuses are the public ones."""

    RECEIVED = "RECEIVED"  # claimed, being decided
    EXECUTING = "EXECUTING"
    APPLIED = "APPLIED"
    PENDING_APPROVAL = "PENDING_APPROVAL"
    DENIED = "DENIED"
    INVALID = "INVALID"
    FAILED = "FAILED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"
    CONFLICT = "CONFLICT"
    DRY_RUN = "DRY_RUN"
    IN_DOUBT = "IN_DOUBT"  # after a crash, nothing could tell whether it applied: a person says


FINAL = frozenset(
    {
        Status.APPLIED,
        Status.DENIED,
        Status.INVALID,
        Status.FAILED,
        Status.REJECTED,
        Status.EXPIRED,
        Status.CONFLICT,
        Status.DRY_RUN,
    }
)
SETTLED = FINAL | {Status.PENDING_APPROVAL, Status.IN_DOUBT}  # what a replay may return
IN_FLIGHT = frozenset({Status.RECEIVED, Status.EXECUTING})  # held by a process's lease


@dataclass(frozen=True)
class Approval:
    """One approver's verdict, bound to the input digest and policy version it saw."""

    approver: str
    verdict: str
    comment: str
    input_digest: str
    policy_version: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Action:
    """One governed write and everything decided about it."""

    id: str
    kind: str
    status: Status
    principal: str
    on_behalf_of: str | None
    channel: str
    input: dict[str, Any]
    input_digest: str
    target: str
    expected_version: str | None
    decision: str
    rule: str
    reason: str
    policy_version: str
    approvals_required: int
    validation: list[dict[str, Any]]
    diff: dict[str, Any] | None
    result: dict[str, Any] | None
    error: str | None
    idempotency_key: str | None
    trace_id: str
    revision: int
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None
    key_held_until: datetime | None = None  # see idempotency.py
    request_digest: str | None = None
    lease_until: datetime | None = None  # see leases.py
    based_on: str | None = None  # the target's version its plan was made against
    approvals: tuple[Approval, ...] = field(default=())


_JSON_COLUMNS = ("input", "validation", "diff", "result")
_COLUMNS = tuple(c.name for c in actions.columns)

# Each statement is built once; the values travel as execute parameters, so a call pays
# neither for building the statement nor for working out its cache key. Every column's
# value is a named parameter, so the statements also run inside a larger one (audit.Prelude).
# (Prefixed: SQLAlchemy keeps bound names equal to column names for itself.)
_VALUES = {c.name: bindparam(f"set_{c.name}", type_=c.type) for c in actions.columns}
INSERT = actions.insert().values(_VALUES)
_GET = select(actions).where(actions.c.id == bindparam("action_id"))
_GET_LOCKED = _GET.with_for_update()
_APPROVALS = (
    select(approvals)
    .where(approvals.c.action_id == bindparam("action_id"))
    .order_by(approvals.c.at)
)
# Compare-and-set: the WHERE names the revision the change moves from.
# What a change may alter; everything else is fixed when the action is first stored.
CHANGING = (
    "status",
    "decision",
    "rule",
    "reason",
    "policy_version",
    "approvals_required",
    "validation",
    "diff",
    "result",
    "error",
    "revision",
    "updated_at",
    "expires_at",
    "lease_until",
    "based_on",
)
SAVE = (
    update(actions)
    .where(
        and_(
            actions.c.id == bindparam("before_id"),
            actions.c.revision == bindparam("before_revision"),
        )
    )
    .values({name: _VALUES[name] for name in CHANGING})
)
_ADD_APPROVAL = approvals.insert()


def row(action: Action, names: Sequence[str] = _COLUMNS) -> dict[str, Any]:
    """The action as the values of its row (of the columns `names`)."""
    values = {name: getattr(action, name) for name in names}
    for name in _JSON_COLUMNS:
        if values.get(name) is not None:
            values[name] = json.dumps(values[name], default=str)
    if "status" in values:
        values["status"] = action.status.value
    return values


def _action(row: Any, approval_rows: list[Any]) -> Action:
    values = dict(row._mapping)
    for name in _JSON_COLUMNS:
        values[name] = None if values[name] is None else json.loads(values[name])
    values["status"] = Status(values["status"])
    found = tuple(
        Approval(r.approver, r.verdict, r.comment, r.input_digest, r.policy_version, r.at)
        for r in approval_rows
    )
    return Action(**values, approvals=found)


async def get(connection: AsyncConnection, action_id: str, *, lock: bool = False) -> Action | None:
    """One action with its approvals; `lock` holds its row until the transaction ends."""
    params = {"action_id": action_id}
    row = (await connection.execute(_GET_LOCKED if lock else _GET, params)).first()
    if row is None:
        return None
    verdicts = await connection.execute(_APPROVALS, params)
    return _action(row, list(verdicts))


def inserting(action: Action) -> Prelude:
    """Storing a new action, as the change its first audit event records."""
    return Prelude(INSERT, _prefixed(row(action)))


def saving(before: Action, after: Action) -> Prelude:
    """Moving `before` to `after`, its next revision, if nobody changed it in between.

    Else no row changes.
    """
    if after.revision != before.revision + 1:
        raise ValueError(f"revision {after.revision} does not follow {before.revision}")
    values = _prefixed(row(after, CHANGING))
    values["before_id"], values["before_revision"] = before.id, before.revision
    return Prelude(SAVE, values)


def _prefixed(values: dict[str, Any]) -> dict[str, Any]:
    return {f"set_{name}": value for name, value in values.items()}


async def add_approval(connection: AsyncConnection, action_id: str, approval: Approval) -> None:
    """Record one approver's verdict (once per approver: the key refuses a second)."""
    await connection.execute(_ADD_APPROVAL, {"action_id": action_id, **vars(approval)})


async def page(
    connection: AsyncConnection,
    *,
    status: Status | None,
    principal: str | None,
    visible_to: str | None,
    limit: int,
    after: tuple[datetime, str] | None,
) -> tuple[list[Action], bool]:
    """Actions newest first; `visible_to` keeps those requested by or for one principal."""
    query = select(actions)
    if status is not None:
        query = query.where(actions.c.status == status.value)
    if principal is not None:
        query = query.where(actions.c.principal == principal)
    if visible_to is not None:
        query = query.where(
            (actions.c.principal == visible_to) | (actions.c.on_behalf_of == visible_to)
        )
    if after is not None:
        created, action_id = after
        query = query.where(
            (actions.c.created_at < created)
            | and_(actions.c.created_at == created, actions.c.id < action_id)
        )
    query = query.order_by(actions.c.created_at.desc(), actions.c.id.desc()).limit(limit + 1)
    rows = list(await connection.execute(query))
    found = [_action(row, []) for row in rows[:limit]]
    return found, len(rows) > limit


async def pending(connection: AsyncConnection, *, limit: int) -> list[Action]:
    """Up to `limit` pending actions with their approvals, the nearest approval deadline
    first (the approvers' queue: counts, filters and sorting work on the whole of it)."""
    query = (
        select(actions)
        .where(actions.c.status == Status.PENDING_APPROVAL.value)
        .order_by(actions.c.expires_at, actions.c.id)
        .limit(limit)
    )
    rows = list(await connection.execute(query))
    verdicts: dict[str, list[Any]] = {r.id: [] for r in rows}
    if verdicts:
        found = select(approvals).where(approvals.c.action_id.in_(list(verdicts)))
        for verdict in await connection.execute(found.order_by(approvals.c.at)):
            verdicts[verdict.action_id].append(verdict)
    return [_action(r, verdicts[r.id]) for r in rows]


async def due_for_expiry(connection: AsyncConnection, now: datetime) -> list[str]:
    """Pending actions past their expiry."""
    query = select(actions.c.id).where(
        and_(actions.c.status == Status.PENDING_APPROVAL.value, actions.c.expires_at < now)
    )
    return [row.id for row in await connection.execute(query)]


async def due_for_recovery(connection: AsyncConnection, now: datetime) -> list[str]:
    """In-flight actions whose process stopped renewing its lease, and those in doubt."""
    lapsed = and_(actions.c.status.in_([s.value for s in IN_FLIGHT]), actions.c.lease_until < now)
    in_doubt = actions.c.status == Status.IN_DOUBT.value
    query = select(actions.c.id).where(lapsed | in_doubt).order_by(actions.c.created_at)
    return [row.id for row in await connection.execute(query)]


async def count_by_status(connection: AsyncConnection) -> dict[str, int]:
    """How many actions are in each status."""
    query = select(actions.c.status, func.count()).group_by(actions.c.status)
    return {row[0]: int(row[1]) for row in await connection.execute(query)}


async def changed_since(connection: AsyncConnection, since: datetime) -> list[tuple[str, datetime]]:
    """(id, updated_at) of the actions changed at or after `since`, oldest change first."""
    query = (
        select(actions.c.id, actions.c.updated_at)
        .where(actions.c.updated_at >= since)
        .order_by(actions.c.updated_at)
    )
    return [(row.id, row.updated_at) for row in await connection.execute(query)]

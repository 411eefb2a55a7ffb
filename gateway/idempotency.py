"""Idempotency keys: the same key and input replay the first result; never two executions.

The key lives on the action that holds it. A request claims its key by storing its action
as holding it, in one statement: a unique index on (principal, key) over the actions that
hold a key lets exactly one request win, on any number of gateway processes, and the
winner's action row is there from that moment (RECEIVED, then EXECUTING, then its outcome).
Keys are held for a configurable period (default 7 days), because agents retry hours
later; after that the key is released from the old action and claimed afresh.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Coroutine
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.actions.store import Action
from gateway.database import HELD_KEY, actions
from gateway.errors import GatehouseError, IdempotencyKeyReused


@dataclass(frozen=True, slots=True)
class Claim:
    """Who holds a key: this request (`won`), or an earlier action to replay."""

    action_id: str
    won: bool


# Built once; the values travel as execute parameters. The claim is one insert that does
# nothing on a conflict: the holder is read only when the key was taken.
_HOLDER = and_(
    actions.c.principal == bindparam("held_principal"),
    actions.c.idempotency_key == bindparam("held_key"),
    HELD_KEY,
)
_CLAIM = {
    "postgresql": pg_insert(actions).on_conflict_do_nothing(),
    "sqlite": sqlite_insert(actions).on_conflict_do_nothing(),
}
_HELD = select(actions.c.id, actions.c.request_digest, actions.c.key_held_until).where(_HOLDER)
# The statement carries the expiry condition itself: only an expired key is released.
_RELEASE_EXPIRED = (
    update(actions)
    .where(and_(_HOLDER, actions.c.key_held_until < bindparam("now")))
    .values(key_held_until=None)
)
_RETRIES = 3  # claims of an expired key raced by other claims, before settling for the holder


async def claim(connection: AsyncConnection, row: dict[str, Any], *, now: datetime) -> Claim:
    """Store the action `row` holding its key, or say which action holds the key already.

    `row` holds `idempotency_key`, `key_held_until` and `request_digest`. Each statement
    may commit on its own: the claim needs no transaction around it. A row without a key
    is simply stored: it is the in-flight marker of an unkeyed write.
    """
    insert = _CLAIM["postgresql" if connection.dialect.name == "postgresql" else "sqlite"]
    if row["idempotency_key"] is None:
        await connection.execute(insert, row)
        return Claim(row["id"], won=True)
    which = {"held_principal": row["principal"], "held_key": row["idempotency_key"]}
    for attempt in itertools.count():
        if (await connection.execute(insert, row)).rowcount == 1:
            return Claim(row["id"], won=True)
        held = (await connection.execute(_HELD, which)).one_or_none()
        if held is None:  # released as expired by another claim since: try again
            continue
        if _expired(held.key_held_until, now) and attempt < _RETRIES:
            await connection.execute(_RELEASE_EXPIRED, {**which, "now": now})
            continue
        if held.request_digest != row["request_digest"]:
            raise IdempotencyKeyReused(
                f"idempotency key '{row['idempotency_key']}' was used before with a different "
                "input; use a new key for a new request"
            )
        return Claim(held.id, won=False)
    raise AssertionError("unreachable")


def _expired(held_until: datetime, now: datetime) -> bool:
    # SQLite hands back the naive wall time it stored, and compares stored times as such.
    return held_until < (now if held_until.tzinfo is not None else now.replace(tzinfo=None))


class KeyHeld(Exception):
    """The request's idempotency key is held by an earlier action, whose result it gets."""

    def __init__(self, action_id: str) -> None:
        super().__init__(action_id)
        self.action_id = action_id


class ClaimFailed(Exception):
    """The claim itself failed, in the gateway's database.

    Raised as this through the ERP transaction it unwinds, so that the ERP's connector
    does not count it as a failure of its own system; `submit` raises the original.
    """


class Claiming:
    """A request's claim being made while its write decides and reads.

    The claim stores the action as its first revision (with its key, if it has one, and
    its lease); `held` waits for it, and is where the write learns whether it is its own.
    """

    def __init__(self, claim: Coroutine[Any, Any, tuple[Claim, Action]] | None):
        self._task = None if claim is None else asyncio.ensure_future(claim)

    async def held(self, action: Action) -> Action:
        """`action` as its won claim stored it; KeyHeld when an earlier action holds the key."""
        if self._task is None:
            return action
        try:
            claim, stored = await self._task
        except GatehouseError:
            raise  # a verdict on the request (a key reused), not a failure
        except Exception as exc:
            raise ClaimFailed from exc
        if not claim.won:
            raise KeyHeld(claim.action_id)
        if action.revision == stored.revision:  # held already: before execution, now saving
            return action
        return replace(
            action,
            revision=stored.revision,
            request_digest=stored.request_digest,
            key_held_until=stored.key_held_until,
            lease_until=stored.lease_until,
        )

    async def settled(self) -> None:
        """Wait for the claim to end, whatever became of the write; its error is the write's."""
        if self._task is not None:
            if not self._task.done():
                await asyncio.wait([self._task])
            if not self._task.cancelled():
                self._task.exception()  # seen, when the write failed before it asked


UNCLAIMED = Claiming(None)  # a write that is not stored before its outcome: dry runs, moves

"""Idempotency keys: the same key and input replay the first result; never two executions.

A key is claimed by inserting it; the primary key (principal, key) lets exactly one
request win, on any number of gateway processes. Keys are kept for a configurable period
(default 7 days), because agents retry hours later.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, bindparam, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.database import idempotency_keys
from gateway.errors import GatehouseError


class IdempotencyKeyReused(GatehouseError):
    """The key was used before with a different input."""

    code = "IDEMPOTENCY_KEY_REUSED"
    status = 422


@dataclass(frozen=True, slots=True)
class Claim:
    """Who holds a key: this request (`won`), or an earlier action to replay."""

    action_id: str
    won: bool


# Built once; the values travel as execute parameters. The claim is one upsert: the
# key row is read only when the insert found it taken.
_KEY = and_(
    idempotency_keys.c.principal == bindparam("held_principal"),
    idempotency_keys.c.key == bindparam("held_key"),
)
_CLAIM = {
    "postgresql": pg_insert(idempotency_keys).on_conflict_do_nothing(),
    "sqlite": sqlite_insert(idempotency_keys).on_conflict_do_nothing(),
}
_HELD = select(
    idempotency_keys.c.request_digest, idempotency_keys.c.action_id, idempotency_keys.c.expires_at
).where(_KEY)
_RETRIES = 3  # claims of an expired key raced by other claims, before settling for the holder
_DELETE_EXPIRED = delete(idempotency_keys).where(
    and_(_KEY, idempotency_keys.c.expires_at < bindparam("now"))
)


async def claim(
    connection: AsyncConnection,
    *,
    principal: str,
    key: str,
    digest: str,
    action_id: str,
    now: datetime,
    keep_for: timedelta,
) -> Claim:
    """Take the key for `action_id`, or say which action already holds it.

    An expired key is deleted and claimed afresh.
    """
    insert = _CLAIM["postgresql" if connection.dialect.name == "postgresql" else "sqlite"]
    row = {
        "principal": principal,
        "key": key,
        "request_digest": digest,
        "action_id": action_id,
        "created_at": now,
        "expires_at": now + keep_for,
    }
    which = {"held_principal": principal, "held_key": key}
    for attempt in itertools.count():
        if (await connection.execute(insert, row)).rowcount == 1:
            return Claim(action_id, won=True)
        held = (await connection.execute(_HELD, which)).one_or_none()
        if held is None:  # deleted as expired by another claim since: try again
            continue
        if _expired(held.expires_at, now) and attempt < _RETRIES:
            # The statement carries the same condition: only an expired key goes.
            await connection.execute(_DELETE_EXPIRED, {**which, "now": now})
            continue
        if held.request_digest != digest:
            raise IdempotencyKeyReused(
                f"idempotency key '{key}' was used before with a different input; "
                "use a new key for a new request"
            )
        return Claim(held.action_id, won=False)
    raise AssertionError("unreachable")


def _expired(expires_at: datetime, now: datetime) -> bool:
    # SQLite hands back the naive wall time it stored, and compares stored times as such.
    return expires_at < (now if expires_at.tzinfo is not None else now.replace(tzinfo=None))

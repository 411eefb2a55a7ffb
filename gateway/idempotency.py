"""Idempotency keys: the same key and input replay the first result; never two executions.

A key is claimed by inserting it; the primary key (principal, key) lets exactly one
request win, on any number of gateway processes. Keys are kept for a configurable period
(default 7 days), because agents retry hours later.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, select
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
    """Take the key for `action_id`, or say which action already holds it."""
    await connection.execute(
        delete(idempotency_keys).where(
            and_(
                idempotency_keys.c.principal == principal,
                idempotency_keys.c.key == key,
                idempotency_keys.c.expires_at < now,
            )
        )
    )
    insert = pg_insert if connection.dialect.name == "postgresql" else sqlite_insert
    inserted = await connection.execute(
        insert(idempotency_keys)
        .values(
            principal=principal,
            key=key,
            request_digest=digest,
            action_id=action_id,
            created_at=now,
            expires_at=now + keep_for,
        )
        .on_conflict_do_nothing()
    )
    if inserted.rowcount == 1:
        return Claim(action_id, won=True)
    held = (
        await connection.execute(
            select(idempotency_keys).where(
                and_(idempotency_keys.c.principal == principal, idempotency_keys.c.key == key)
            )
        )
    ).one()
    if held.request_digest != digest:
        raise IdempotencyKeyReused(
            f"idempotency key '{key}' was used before with a different input; "
            "use a new key for a new request"
        )
    return Claim(held.action_id, won=False)

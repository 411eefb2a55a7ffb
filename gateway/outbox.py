"""The outbox: notifications owed, in the gateway's database, until they are delivered.

    PENDING --claim (a sender, lease)--> SENDING --sent--> DELIVERED
       ^                                    |--failed, attempts left--> PENDING (later)
       |                                    |--failed, none left, or 410--> FAILED
       +------- lease lapsed (the sender died mid-send) ------+
    FAILED --requeue (an operator)--> PENDING

Rows are written by whoever causes them, inside the caller's transaction (`owe`), so a
committed cause always has its notifications and a rolled-back one has none; the same
cause for the same recipient and channel is owed once (`dedupe` is unique), whichever
replica writes it. Senders on any number of replicas claim due rows with FOR UPDATE SKIP
LOCKED (on SQLite, BEGIN IMMEDIATE serializes them): a row is sent by one at a time. A
sender that dies after sending and before recording it leaves the row to be sent again
once its lease lapses; the webhook-id / Message-ID stays the notification's id, so a
receiver can drop the repeat (at least once, never silently lost).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Row, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.database import notifications
from gateway.messages import Message


class NotificationStatus(StrEnum):
    """Where a notification is."""

    PENDING = "PENDING"
    SENDING = "SENDING"
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"


@dataclass(frozen=True, slots=True)
class Owed:
    """A notification to write: a message for one recipient on one channel."""

    dedupe: str
    channel: str
    address: str | None
    recipient: str
    message: Message
    action_id: str | None = None
    alert_id: str | None = None


@dataclass(frozen=True, slots=True)
class Notification:
    """One stored notification."""

    id: str
    topic: str
    channel: str
    address: str | None
    recipient: str
    subject: str
    message: Message
    action_id: str | None
    alert_id: str | None
    status: NotificationStatus
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    lease_until: datetime | None  # while SENDING: the claim's token, as well as its end

    @classmethod
    def of(cls, row: Row[Any]) -> Notification:
        """From a row of the table."""
        return cls(
            id=row.id,
            topic=row.topic,
            channel=row.channel,
            address=row.address,
            recipient=row.recipient,
            subject=row.subject,
            message=Message.from_json(row.document),
            action_id=row.action_id,
            alert_id=row.alert_id,
            status=NotificationStatus(row.status),
            attempts=row.attempts,
            next_attempt_at=row.next_attempt_at,
            last_error=row.last_error,
            created_at=row.created_at,
            delivered_at=row.delivered_at,
            lease_until=row.lease_until,
        )


async def owe(connection: AsyncConnection, owed: Sequence[Owed], now: datetime) -> int:
    """Write notifications inside the caller's transaction; ones already owed are skipped.

    Returns how many were new.
    """
    if not owed:
        return 0
    rows = [
        {
            "id": str(uuid.uuid4()),
            "dedupe": item.dedupe,
            "topic": item.message.topic,
            "channel": item.channel,
            "address": item.address,
            "recipient": item.recipient,
            "subject": item.message.subject,
            "document": item.message.to_json(),
            "action_id": item.action_id,
            "alert_id": item.alert_id,
            "status": NotificationStatus.PENDING.value,
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }
        for item in owed
    ]
    insert = (postgresql if connection.dialect.name == "postgresql" else sqlite).insert
    statement = insert(notifications).on_conflict_do_nothing(index_elements=["dedupe"])
    result = await connection.execute(statement.returning(notifications.c.id), rows)
    return len(result.all())


def _due(now: datetime) -> Any:
    """PENDING whose time has come, or SENDING whose sender's lease lapsed."""
    return or_(
        (notifications.c.status == NotificationStatus.PENDING.value)
        & (notifications.c.next_attempt_at <= now),
        (notifications.c.status == NotificationStatus.SENDING.value)
        & (notifications.c.lease_until < now),
    )


async def any_due(connection: AsyncConnection, now: datetime) -> bool:
    """Whether a claim would find work: a read, so an idle sender takes no write lock."""
    found = await connection.execute(select(notifications.c.id).where(_due(now)).limit(1))
    return found.first() is not None


async def claim(
    connection: AsyncConnection, now: datetime, *, lease: float, limit: int
) -> list[Notification]:
    """Take up to `limit` due notifications for this sender, each held for `lease` seconds.

    Due: PENDING whose time has come, or SENDING whose sender's lease lapsed. Call inside
    a transaction; commit at once, so the claim is seen before anything is sent.
    """
    due = (
        select(notifications.c.id)
        .where(_due(now))
        .order_by(notifications.c.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    claimed = await connection.execute(
        update(notifications)
        .where(notifications.c.id.in_(due.scalar_subquery()))
        .values(
            status=NotificationStatus.SENDING.value,
            lease_until=now + timedelta(seconds=lease),
            attempts=notifications.c.attempts + 1,
        )
        .returning(*notifications.c)
    )
    return sorted((Notification.of(row) for row in claimed), key=lambda n: n.next_attempt_at)


async def hold(
    connection: AsyncConnection, notification: Notification, until: datetime
) -> Notification | None:
    """Renew the claim just before sending, so a long batch never outlives its lease; None
    when another sender took the notification over meanwhile (then it is theirs)."""
    renewed = await connection.execute(
        update(notifications)
        .where(
            notifications.c.id == notification.id,
            notifications.c.status == NotificationStatus.SENDING.value,
            notifications.c.lease_until == notification.lease_until,
        )
        .values(lease_until=until)
    )
    return replace(notification, lease_until=until) if renewed.rowcount == 1 else None


async def delivered(connection: AsyncConnection, notification: Notification, now: datetime) -> None:
    """It landed."""
    await _settle(
        connection,
        notification,
        status=NotificationStatus.DELIVERED.value,
        delivered_at=now,
        last_error=None,
    )


async def later(
    connection: AsyncConnection, notification: Notification, at: datetime, error: str | None
) -> None:
    """Try again at `at`: after a failure (`error`), or paced by the channel's rate."""
    values: dict[str, Any] = {"status": NotificationStatus.PENDING.value, "next_attempt_at": at}
    if error is None:  # not tried: paced, so the attempt does not count
        values["attempts"] = notifications.c.attempts - 1
    else:
        values["last_error"] = error
    await _settle(connection, notification, **values)


async def failed(connection: AsyncConnection, notification: Notification, error: str) -> None:
    """No more attempts: shown as FAILED until an operator requeues it."""
    await _settle(
        connection, notification, status=NotificationStatus.FAILED.value, last_error=error
    )


async def _settle(connection: AsyncConnection, notification: Notification, **values: Any) -> None:
    # Only the holder of the claim records the outcome: a sender whose lease lapsed and
    # was taken over changes nothing.
    await connection.execute(
        update(notifications)
        .where(
            notifications.c.id == notification.id,
            notifications.c.status == NotificationStatus.SENDING.value,
            notifications.c.lease_until == notification.lease_until,
        )
        .values(lease_until=None, **values)
    )


async def requeue(connection: AsyncConnection, now: datetime, *, channel: str | None) -> int:
    """FAILED notifications (of one channel, or all) are tried again from now."""
    statement = (
        update(notifications)
        .where(notifications.c.status == NotificationStatus.FAILED.value)
        .values(status=NotificationStatus.PENDING.value, attempts=0, next_attempt_at=now)
    )
    if channel is not None:
        statement = statement.where(notifications.c.channel == channel)
    return (await connection.execute(statement)).rowcount


async def listed(
    connection: AsyncConnection,
    *,
    status: NotificationStatus | None,
    limit: int,
    action_id: str | None = None,
    channel: str | None = None,
) -> list[Notification]:
    """The newest notifications, of one status, action or channel if given."""
    query = select(notifications).order_by(notifications.c.created_at.desc()).limit(limit)
    if status is not None:
        query = query.where(notifications.c.status == status.value)
    if action_id is not None:
        query = query.where(notifications.c.action_id == action_id)
    if channel is not None:
        query = query.where(notifications.c.channel == channel)
    return [Notification.of(row) for row in await connection.execute(query)]


async def counts(connection: AsyncConnection) -> dict[tuple[str, str], int]:
    """How many notifications each channel has in each status."""
    query = select(notifications.c.channel, notifications.c.status, func.count()).group_by(
        notifications.c.channel, notifications.c.status
    )
    return {(channel, status): n for channel, status, n in await connection.execute(query)}

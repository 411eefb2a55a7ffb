"""Owners in the loop, as GraphQL: `alerts(status)` and `notifications(status)`.

Operators see them (policy: `alerts`, `inspect`); anyone else is refused with FORBIDDEN.
Notifications carry no personal data (messages.py), so nothing here is masked.
"""

from __future__ import annotations

import json
from datetime import datetime
from enum import Enum

import strawberry
from strawberry.scalars import JSON

from gateway import alerts, outbox
from gateway.errors import Forbidden
from gateway.graphql.context import Info
from gateway.pagination import page_size


@strawberry.enum
class AlertStatus(Enum):
    """Whether the incident lasts."""

    OPEN = "OPEN"
    RESOLVED = "RESOLVED"


@strawberry.enum
class NotificationStatus(Enum):
    """Where a notification is: PENDING to send (again), SENDING now, DELIVERED, or FAILED
    after its attempts (or a 410 from its receiver): a person must look."""

    PENDING = "PENDING"
    SENDING = "SENDING"
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"


@strawberry.type
class Alert:
    """An incident told to the owner of what it concerns."""

    id: strawberry.ID
    kind: str = strawberry.field(
        description="source.down, entity.stale, actions.failed, actions.in_doubt, "
        "channel.failing or drift"
    )
    subject: str
    owner: str
    status: AlertStatus
    summary: str
    evidence: JSON
    opened_at: datetime
    reminded_at: datetime
    resolved_at: datetime | None


@strawberry.type
class Notification:
    """One message owed to a person or a system, and how its delivery went."""

    id: strawberry.ID
    topic: str
    channel: str
    recipient: str
    subject: str
    link: str
    action_id: str | None
    alert_id: str | None
    status: NotificationStatus
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


@strawberry.type
class OwnerQueries:
    """Alerts and the notifications outbox."""

    @strawberry.field(description="Owner alerts, newest first (open ones by default).")
    async def alerts(
        self, info: Info, status: AlertStatus | None = AlertStatus.OPEN, first: int | None = None
    ) -> list[Alert]:
        _inspect(info)
        wanted = None if status is None else alerts.AlertStatus(status.value)
        async with info.context.services.engine.connect() as connection:
            found = await alerts.listed(connection, status=wanted, limit=_size(info, first))
        return [
            Alert(
                id=strawberry.ID(a.id),
                kind=a.kind,
                subject=a.subject,
                owner=a.owner,
                status=AlertStatus(a.status.value),
                summary=a.summary,
                evidence=json.loads(json.dumps(a.evidence, default=str)),
                opened_at=a.opened_at,
                reminded_at=a.reminded_at,
                resolved_at=a.resolved_at,
            )
            for a in found
        ]

    @strawberry.field(description="Notifications, newest first; FAILED ones need a person.")
    async def notifications(
        self,
        info: Info,
        status: NotificationStatus | None = None,
        action_id: str | None = None,
        first: int | None = None,
    ) -> list[Notification]:
        _inspect(info)
        wanted = None if status is None else outbox.NotificationStatus(status.value)
        async with info.context.services.engine.connect() as connection:
            found = await outbox.listed(
                connection, status=wanted, limit=_size(info, first), action_id=action_id
            )
        return [
            Notification(
                id=strawberry.ID(n.id),
                topic=n.topic,
                channel=n.channel,
                recipient=n.recipient,
                subject=n.subject,
                link=n.message.link,
                action_id=n.action_id,
                alert_id=n.alert_id,
                status=NotificationStatus(n.status.value),
                attempts=n.attempts,
                next_attempt_at=n.next_attempt_at,
                last_error=n.last_error,
                created_at=n.created_at,
                delivered_at=n.delivered_at,
            )
            for n in found
        ]


def _inspect(info: Info) -> None:
    decision = info.context.services.policy.decide(info.context.principal, "alerts", "inspect")
    if not decision.allowed:
        raise Forbidden(f"{decision.rule}: alerts and notifications are for operators")


def _size(info: Info, first: int | None) -> int:
    limits = info.context.services.config.limits
    return page_size(first, default=limits.default_page_size, maximum=limits.max_page_size)

"""Notices about actions: who hears of what the write path did, read off the audit trail.

The audit trail is the write path's record of every change to an action, appended in the
very statement or transaction that makes the change. Notices read it in order from a
cursor and, in one transaction, write the notifications each event owes to the outbox and
move the cursor past it: an event committed is told, once, even if the gateway dies right
after the write (the next round, here or on another replica, picks it up), and the write
path pays nothing for it.

    action.pending_approval                 -> approval.requested  to whoever could approve
    action.applied|rejected|expired|failed|in_doubt, of an action that awaited approval
                                            -> action.decided      to the requester, and the
                                                                   human an agent acts for
    action.<outcome> of a subscribed kind   -> action.event        to the subscription's webhook
    a pending action close to its expiry    -> approval.expiring   to whoever could approve
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Row, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway import headlines
from gateway.actions import store
from gateway.actions.store import Action, Status
from gateway.audience import Audience, Route, grouped
from gateway.catalog import Catalog
from gateway.config import GatewayConfig
from gateway.database import actions, audit_events, audit_head, cursors
from gateway.headlines import names_for
from gateway.messages import (
    ACTION_DECIDED,
    ACTION_EVENT,
    APPROVAL_EXPIRING,
    APPROVAL_REQUESTED,
    Message,
)
from gateway.outbox import Owed, owe
from gateway.reads import Reads
from sources.words import Names, money

CURSOR = "notices"
BATCH = 500  # audit events read per round
DECIDED = frozenset(
    {"action.applied", "action.rejected", "action.expired", "action.failed", "action.in_doubt"}
)
# Events that settle an action after a crash or by an operator: their outcome is the news.
SETTLED = frozenset({"action.recovered", "action.resolved"})
_STATUS_WORDS = {
    "APPLIED": "applied",
    "REJECTED": "rejected",
    "EXPIRED": "expired unapproved",
    "FAILED": "failed in the system of record",
    "IN_DOUBT": "left in doubt",
    "PENDING_APPROVAL": "waiting for approval",
    "DENIED": "denied by policy",
    "INVALID": "refused as invalid",
    "CONFLICT": "refused: the record had changed",
}


class Notices:
    """Turns audit events and approaching expiries into notifications in the outbox."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        config: GatewayConfig,
        catalog: Catalog,
        approvers_for: Callable[[Action], list[str]],
        reads: Reads,
        clock: Callable[[], datetime],
    ) -> None:
        self._engine = engine
        self._reads = reads
        self._config = config
        self._catalog = catalog
        self._approvers_for = approvers_for
        self._clock = clock
        self._audience = Audience(config)

    async def start(self) -> None:
        """A new database starts reading at the trail's head: no notices for the past."""
        async with self._engine.begin() as connection:
            head = (await connection.execute(select(audit_head.c.seq))).scalar_one()
            insert = (postgresql if connection.dialect.name == "postgresql" else sqlite).insert
            await connection.execute(
                insert(cursors).values(name=CURSOR, seq=head).on_conflict_do_nothing()
            )

    async def fan_out(self) -> int:
        """Owe the notifications of the events since the cursor; how many were new.

        Worked out first, outside any transaction (naming items and customers may read
        their systems), then written with the cursor's move in one short transaction that
        holds the cursor: if another replica moved it meanwhile, this round gives way.
        """
        async with self._engine.connect() as connection:
            position = await _position(connection)
            events = (
                await connection.execute(
                    select(audit_events)
                    .where(audit_events.c.seq > position)
                    .order_by(audit_events.c.seq)
                    .limit(BATCH)
                )
            ).all()
            if not events:
                return 0
            found = await _actions(connection, {e.action_id for e in events if e.action_id})
        names = await names_for(found.values(), self._reads)
        owed = [o for e in events for o in self._owed_for(e, found.get(e.action_id), names)]
        async with self._engine.begin() as connection:
            if await _take_cursor(connection) != position:  # another replica got there
                return 0
            added = await owe(connection, owed, self._clock())
            await connection.execute(
                update(cursors).where(cursors.c.name == CURSOR).values(seq=events[-1].seq)
            )
        return added

    async def warn_expiring(self) -> int:
        """Owe approvers a word about pending actions whose window is about to close."""
        now = self._clock()
        soon = now + timedelta(seconds=self._config.notify.expiring_within)
        async with self._engine.connect() as connection:
            ids = (
                await connection.execute(
                    select(actions.c.id).where(
                        actions.c.status == Status.PENDING_APPROVAL.value,
                        actions.c.expires_at > now,
                        actions.c.expires_at <= soon,
                    )
                )
            ).scalars()
            found = await _actions(connection, set(ids))
        names = await names_for(found.values(), self._reads)
        owed = [
            o
            for action in found.values()
            for o in self._to_approvers(action, APPROVAL_EXPIRING, f"expiring:{action.id}", names)
        ]
        async with self._engine.begin() as connection:
            return await owe(connection, owed, now)

    def _owed_for(self, event: Row[Any], action: Action | None, names: Names) -> list[Owed]:
        if action is None or not event.event.startswith("action."):
            return []
        owed = self._to_subscribers(action, event, names)
        if event.event == "action.pending_approval" and action.status is Status.PENDING_APPROVAL:
            owed += self._to_approvers(action, APPROVAL_REQUESTED, event.id, names)
        elif _decided(event) and action.decision == "review":
            owed += self._to_requester(action, event, names)
        return owed

    def _to_approvers(self, action: Action, topic: str, cause: str, names: Names) -> list[Owed]:
        approvers = self._approvers_for(action)
        audience = {name: self._audience.principal(name) for name in approvers}
        message = self._about(action, topic, names)
        return _owed(message, grouped(audience), cause, action_id=action.id)

    def _to_requester(self, action: Action, event: Row[Any], names: Names) -> list[Owed]:
        audience = {action.principal: self._audience.principal(action.principal)}
        if action.on_behalf_of:
            audience[action.on_behalf_of] = self._audience.principal(action.on_behalf_of)
        message = self._about(action, ACTION_DECIDED, names, outcome=event.outcome)
        return _owed(message, grouped(audience), event.id, action_id=action.id)

    def _to_subscribers(self, action: Action, event: Row[Any], names: Names) -> list[Owed]:
        kind = self._catalog.get(action.kind)
        mutation = kind.mutation if kind else action.kind
        owed = []
        for name, subscription in self._config.subscriptions.items():
            if mutation not in subscription.actions:
                continue
            if event.outcome not in subscription.outcomes or not _tells_outcome(event):
                continue
            message = self._about(action, ACTION_EVENT, names, outcome=event.outcome, event=event)
            route = Route(subscription.channel)
            owed.append(
                Owed(
                    dedupe=f"{event.id}:{route.key}",
                    channel=route.channel,
                    address=None,
                    recipient=f"subscription:{name}",
                    message=message,
                    action_id=action.id,
                )
            )
        return owed

    def _about(
        self,
        action: Action,
        topic: str,
        names: Names,
        *,
        outcome: str | None = None,
        event: Row[Any] | None = None,
    ) -> Message:
        """The message about an action: its headline, the facts an approver needs, a link."""
        kind = self._catalog.get(action.kind)
        title = _words(kind.mutation) if kind else action.kind
        amount, currency = self._amount(action)
        status = outcome or action.status.value
        key = headlines.subject(action, self._catalog, names)  # an item by name, not a key
        subject = {
            APPROVAL_REQUESTED: f"Approval needed: {title} {key}",
            APPROVAL_EXPIRING: f"Approval closing soon: {title} {key}",
            ACTION_DECIDED: f"{title} {key}: {_STATUS_WORDS.get(status, status)}",
            ACTION_EVENT: f"{title} {key}: {_STATUS_WORDS.get(status, status)}",
        }[topic]
        requester = self._principal_words(action.principal)
        if action.on_behalf_of:
            requester += f" on behalf of {self._principal_words(action.on_behalf_of)}"
        facts = [("What", headlines.headline(action, self._catalog, names)), ("Target", key)]
        if amount is not None:
            facts.append(("Amount", money(amount, currency)))
        facts += [
            ("Requested by", requester),
            ("Rule", f"{action.rule}: {action.reason}" if action.reason else action.rule),
            ("Status", _STATUS_WORDS.get(status, status)),
        ]
        if action.expires_at is not None and status == Status.PENDING_APPROVAL.value:
            facts.append(("Decide by", action.expires_at.strftime("%Y-%m-%d %H:%M UTC")))
        if action.error and status in ("FAILED", "IN_DOUBT"):
            facts.append(("Error", action.error))
        data = {
            "action": {
                "id": action.id,
                "kind": action.kind,
                "mutation": kind.mutation if kind else None,
                "target": action.target,
                "status": status,
                "amount": None if amount is None else str(amount),
                "currency": currency or None,
                "decision": action.decision,
                "rule": action.rule,
                "requested_by": action.principal,
                "on_behalf_of": action.on_behalf_of,
                "approvers": [a.approver for a in action.approvals],
                "expires_at": action.expires_at,
                "result": action.result if status == Status.APPLIED.value else None,
                "trace_id": action.trace_id,
            },
        }
        if event is not None:
            data["event"] = {"id": event.id, "seq": event.seq, "name": event.event}
        summary = _summary(topic, title, key, requester, status)
        link = f"{self._config.notify.console_url.rstrip('/')}/actions/{action.id}"
        return Message(topic, subject, summary, link, facts, data)

    def _amount(self, action: Action) -> tuple[Decimal | None, str]:
        kind = self._catalog.get(action.kind)
        if kind is None:
            return None, ""
        try:
            amount = kind.amount(kind.Input.model_validate(action.input))
        except ValidationError:
            return None, ""
        sides = [action.input, *((action.diff or {}).get(k) or {} for k in ("before", "after"))]
        currency = next((str(s["currency"]) for s in sides if s.get("currency")), "")
        return amount, currency

    def _principal_words(self, principal_id: str) -> str:
        found = self._config.principals.get(principal_id)
        if found is None:
            return principal_id
        return f"{found.display_name} ({principal_id}, {found.kind.value})"


def _tells_outcome(event: Row[Any]) -> bool:
    """Whether the event is the action reaching its outcome (not an approval on the way)."""
    return event.event == f"action.{event.outcome.lower()}" or event.event in SETTLED


def _decided(event: Row[Any]) -> bool:
    return event.event in DECIDED or (
        event.event in SETTLED and f"action.{event.outcome.lower()}" in DECIDED
    )


def _owed(message: Message, routes: dict[Route, list[str]], cause: str, **ids: Any) -> list[Owed]:
    return [
        Owed(
            dedupe=f"{cause}:{route.key}",
            channel=route.channel,
            address=route.address,
            recipient=", ".join(recipients),
            message=message,
            **ids,
        )
        for route, recipients in routes.items()
    ]


def _summary(topic: str, title: str, target: str, requester: str, status: str) -> str:
    if topic == APPROVAL_REQUESTED:
        return f"{requester} asks to {title.lower()} {target}. It waits for your decision."
    if topic == APPROVAL_EXPIRING:
        return f"{title} {target}, asked by {requester}, expires soon unless someone decides."
    return f"{title} {target}, asked by {requester}, is {_STATUS_WORDS.get(status, status)}."


def _words(mutation: str) -> str:
    """`adjustInventory` -> `Adjust inventory`."""
    spaced = "".join(f" {c.lower()}" if c.isupper() else c for c in mutation)
    return spaced[:1].upper() + spaced[1:]


async def _position(connection: AsyncConnection) -> int:
    found = await connection.execute(select(cursors.c.seq).where(cursors.c.name == CURSOR))
    return int(found.scalar_one())


async def _actions(connection: AsyncConnection, ids: set[str]) -> dict[str, Action]:
    found = {}
    for action_id in sorted(ids):
        if (action := await store.get(connection, action_id)) is not None:
            found[action_id] = action
    return found


async def _take_cursor(connection: AsyncConnection) -> int | None:
    """The cursor's position, held until the commit; None when another replica holds it."""
    found = await connection.execute(
        select(cursors.c.seq).where(cursors.c.name == CURSOR).with_for_update(skip_locked=True)
    )
    return found.scalar_one_or_none()

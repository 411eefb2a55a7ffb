"""Owner alerts: incidents that open and resolve on their own, told to whoever owns them.

Each round the conditions below are looked at; what holds now is an incident, named by a
fingerprint (kind and subject). Against the open alerts, in one transaction:

    incident, no open alert      -> open it          alert.opened   to its owner
    incident, open alert         -> keep it; once `reminder_after` has passed since it
                                    was opened or last repeated       alert.reminder
    open alert, no incident      -> resolve it       alert.resolved

so one incident is one alert, told once, reminded at a pace, and closed with a word. The
notifications are written to the outbox in the same transaction. Conditions:

    source.down      a system of record does not answer, or its circuit is open
    entity.stale     reads of an entity are served from last good values older than its
                     error_after, because its system fails
    actions.failed   actions of a kind FAILED in the last day, waiting for a retry
    actions.in_doubt actions of a kind IN_DOUBT, waiting for a person
    channel.failing  a notification channel failed deliveries, or was turned off (410)
    drift            copies of a field in another system differ from it (drift.py's condition)

Some conditions are a process's own view (its circuit breakers, its reads): one replica
at a time, the holder of a PostgreSQL advisory lock, evaluates them all, so two replicas
never open and resolve the same alert in turn. On SQLite there is one process.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.actions.store import Status
from gateway.audience import Audience, Route, grouped
from gateway.catalog import Catalog
from gateway.config import GatewayConfig
from gateway.database import OPEN_ALERT, actions, alerts, channel_states
from gateway.messages import ALERT_OPENED, ALERT_REMINDER, ALERT_RESOLVED, Message
from gateway.outbox import Owed, owe
from gateway.reads import Reads
from sources.breaker import BreakerState
from sources.connector import Connector
from sources.errors import SourceError

# One replica evaluates alerts: the holder of this PostgreSQL advisory lock.
LEADER_LOCK = 0x6761_7465_616C_7274  # "gatealrt"
PROBE_TIMEOUT = 2.0
FAILED_WINDOW = timedelta(days=1)  # FAILED actions older than this no longer keep it open


class AlertStatus(StrEnum):
    """Whether the incident lasts."""

    OPEN = "OPEN"
    RESOLVED = "RESOLVED"


@dataclass(frozen=True, slots=True)
class Incident:
    """A condition that holds now, with its owner and the evidence."""

    kind: str
    subject: str
    owner: str
    routes: list[Route]
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)
    # The condition cannot be told now (what it looks at is unreadable): an open alert stays
    # open, untouched, and none is opened on its strength.
    held: bool = False

    @property
    def fingerprint(self) -> str:
        """What makes two observations one incident."""
        return f"{self.kind}:{self.subject}"


@dataclass(frozen=True, slots=True)
class Alert:
    """One stored alert."""

    id: str
    kind: str
    subject: str
    owner: str
    status: AlertStatus
    summary: str
    evidence: dict[str, Any]
    opened_at: datetime
    reminded_at: datetime
    resolved_at: datetime | None

    @classmethod
    def of(cls, row: Any) -> Alert:
        """From a row of the table."""
        return cls(
            id=row.id,
            kind=row.kind,
            subject=row.subject,
            owner=row.owner,
            status=AlertStatus(row.status),
            summary=row.summary,
            evidence=json.loads(row.evidence),
            opened_at=row.opened_at,
            reminded_at=row.reminded_at,
            resolved_at=row.resolved_at,
        )


# A condition of another module: the incidents it sees now, with routes from the audience.
Condition = Callable[[AsyncConnection, Audience], Awaitable[list[Incident]]]


class Alerts:
    """Looks at the conditions and keeps the alerts table, and the owners, up to date."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        config: GatewayConfig,
        catalog: Catalog,
        reads: Reads,
        connectors: dict[str, Connector],
        clock: Callable[[], datetime],
        conditions: list[Condition] | None = None,
    ) -> None:
        self._engine = engine
        self._config = config
        self._catalog = catalog
        self._reads = reads
        self._connectors = connectors
        self._clock = clock
        self._audience = Audience(config)
        self._conditions = conditions or []  # more, from elsewhere (drift checks)
        self._leader: AsyncConnection | None = None  # holds the advisory lock, on PostgreSQL

    async def round(self) -> int:
        """Evaluate and reconcile once, if this replica leads; how many alerts changed."""
        if not await self.leads():
            return 0
        incidents = await self.incidents()
        async with self._engine.begin() as connection:
            return await self._reconcile(connection, incidents)

    async def close(self) -> None:
        """Give up the lead, so another replica takes it at once."""
        if self._leader is not None:
            await self._leader.close()
            self._leader = None

    async def leads(self) -> bool:
        """Whether this replica leads: it holds the lock on a live connection, or took it now.

        The lock lives as long as the session that took it. A session PostgreSQL ended
        (a restart, a terminated backend, an idle timeout) took the lock with it, and another
        replica may lead by now, so the held connection is checked before every round.
        """
        if self._engine.dialect.name != "postgresql":
            return True
        if self._leader is not None and not await _alive(self._leader):
            await self._leader.invalidate()
            await self._leader.close()
            self._leader = None
        if self._leader is None:
            connection = await self._engine.connect()
            got = await connection.scalar(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": LEADER_LOCK}
            )
            await connection.commit()
            if not got:
                await connection.close()
                return False
            self._leader = connection
        return True

    async def incidents(self) -> list[Incident]:
        """Every condition that holds now."""
        found = await self._sources_down()
        found += self._stale_entities()
        async with self._engine.connect() as connection:
            found += await self._waiting_actions(connection)
            found += await self._failing_channels(connection)
            for condition in self._conditions:
                found += await condition(connection, self._audience)
        return found

    async def _sources_down(self) -> list[Incident]:
        names = list(self._connectors)
        problems = await asyncio.gather(*(_probe(self._connectors[n]) for n in names))
        found = []
        for name, problem in zip(names, problems, strict=True):
            if problem is None:
                continue
            entities = [e for e, c in self._config.entities.items() if c.source == name]
            owners, routes = self._owners(entities)
            found.append(
                Incident(
                    "source.down",
                    name,
                    owners,
                    routes,
                    f"The system of record '{name}' is not answering: {problem}. Reads of "
                    f"{', '.join(entities) or 'no entity'} are served from last good values.",
                    {"error": problem, "entities": entities},
                )
            )
        return found

    def _stale_entities(self) -> list[Incident]:
        now = self._clock()
        found = []
        for entity, stale in list(self._reads.stale.items()):
            contract = self._config.entities[entity]
            age = (now - stale.oldest).total_seconds()
            if age < contract.error_after:
                continue
            owner, routes = self._audience.owner(entity)
            found.append(
                Incident(
                    "entity.stale",
                    entity,
                    owner,
                    routes,
                    f"{entity} is served from values up to {int(age // 60)} min old, past "
                    f"its {int(contract.error_after // 60)} min limit: {stale.error}.",
                    {
                        "since": stale.since.isoformat(),
                        "error": stale.error,
                        "records_served_stale": stale.records,
                        "oldest_read_at": stale.oldest.isoformat(),
                    },
                )
            )
        return found

    async def _waiting_actions(self, connection: AsyncConnection) -> list[Incident]:
        since = self._clock() - FAILED_WINDOW
        waiting = ((actions.c.status == Status.FAILED.value) & (actions.c.updated_at >= since)) | (
            actions.c.status == Status.IN_DOUBT.value
        )
        rows = await connection.execute(
            select(
                actions.c.status,
                actions.c.kind,
                func.count(),
                func.min(actions.c.updated_at),
                func.max(actions.c.error),
            )
            .where(waiting)
            .group_by(actions.c.status, actions.c.kind)
        )
        found = []
        for status, kind, count, oldest, error in rows:
            bound = self._catalog.get(kind)
            entity = bound.entity if bound else ""
            owner, routes = self._audience.owner(entity)
            if not routes:
                owner, routes = owner or "operators", self._audience.operators()
            words = "failed in the system of record" if status == "FAILED" else "are in doubt"
            found.append(
                Incident(
                    f"actions.{status.lower()}",
                    kind,
                    owner,
                    routes,
                    f"{count} {kind} action(s) {words} and wait for a person.",
                    {"actions": count, "since": oldest, "last_error": error},
                )
            )
        return found

    async def _failing_channels(self, connection: AsyncConnection) -> list[Incident]:
        rows = await connection.execute(
            select(channel_states).where(
                channel_states.c.failing_since.is_not(None)
                | channel_states.c.disabled_at.is_not(None)
            )
        )
        found = []
        for row in rows:
            # Never told only through the channel that fails.
            routes = [r for r in self._audience.operators() if r.channel != row.channel]
            state = "was turned off (410 Gone)" if row.disabled_at else "fails deliveries"
            found.append(
                Incident(
                    "channel.failing",
                    row.channel,
                    "operators",
                    routes,
                    f"Notification channel '{row.channel}' {state}: {row.last_error}.",
                    {
                        "since": row.failing_since,
                        "error": row.last_error,
                        "disabled": bool(row.disabled_at),
                    },
                )
            )
        return found

    def _owners(self, entities: list[str]) -> tuple[str, list[Route]]:
        owners: dict[str, list[Route]] = {}
        for entity in entities:
            owner, routes = self._audience.owner(entity)
            owners[owner] = routes
        if not any(owners.values()):
            return ", ".join(owners) or "operators", self._audience.operators()
        return ", ".join(owners), [r for routes in owners.values() for r in routes]

    async def _reconcile(self, connection: AsyncConnection, incidents: list[Incident]) -> int:
        now = self._clock()
        open_rows = (await connection.execute(select(alerts).where(OPEN_ALERT))).all()
        opened = {row.fingerprint: row for row in open_rows}
        current = {incident.fingerprint: incident for incident in incidents}
        owed: list[Owed] = []
        changed = 0
        for fingerprint, incident in current.items():
            row = opened.get(fingerprint)
            if incident.held:
                continue
            if row is None:
                alert_id = str(uuid.uuid4())
                await connection.execute(alerts.insert().values(_new_row(alert_id, incident, now)))
                owed += self._tell(alert_id, incident, ALERT_OPENED, f"{alert_id}:opened")
                changed += 1
            else:
                evidence = _json(incident.evidence)
                values: dict[str, Any] = {"evidence": evidence, "summary": incident.summary}
                due = _aware(row.reminded_at) + timedelta(
                    seconds=self._config.notify.reminder_after
                )
                if now >= due:
                    values["reminded_at"] = now
                    owed += self._tell(
                        row.id, incident, ALERT_REMINDER, f"{row.id}:reminder:{now.isoformat()}"
                    )
                await connection.execute(update(alerts).where(alerts.c.id == row.id).values(values))
        for fingerprint, row in opened.items():
            if fingerprint in current:
                continue
            await connection.execute(
                update(alerts)
                .where(alerts.c.id == row.id)
                .values(status=AlertStatus.RESOLVED.value, resolved_at=now)
            )
            incident = Incident(row.kind, row.subject, row.owner, self._routes_of(row), row.summary)
            owed += self._tell(row.id, incident, ALERT_RESOLVED, f"{row.id}:resolved")
            changed += 1
        await owe(connection, owed, now)
        return changed

    def _routes_of(self, row: Any) -> list[Route]:
        """Where a resolved alert's owner hears, worked out again from its subject."""
        if row.kind in ("entity.stale", "drift"):  # subject: Entity, or Entity.field in copy
            routes = self._audience.owner(row.subject.split(".", 1)[0])[1]
            return routes or self._audience.operators()
        if row.kind == "source.down":
            entities = [e for e, c in self._config.entities.items() if c.source == row.subject]
            return self._owners(entities)[1]
        if row.kind.startswith("actions."):
            bound = self._catalog.get(row.subject)
            routes = self._audience.owner(bound.entity if bound else "")[1]
            return routes or self._audience.operators()
        return [r for r in self._audience.operators() if r.channel != row.subject]

    def _tell(self, alert_id: str, incident: Incident, topic: str, cause: str) -> list[Owed]:
        word = {ALERT_OPENED: "Alert", ALERT_REMINDER: "Still open", ALERT_RESOLVED: "Resolved"}
        summary = incident.summary if topic != ALERT_RESOLVED else f"Cleared: {incident.summary}"
        message = Message(
            topic,
            f"{word[topic]}: {incident.kind} {incident.subject}",
            summary,
            f"{self._config.notify.console_url.rstrip('/')}/alerts#{alert_id}",
            [("Kind", incident.kind), ("Subject", incident.subject), ("Owner", incident.owner)]
            + [(k.replace("_", " ").capitalize(), str(v)) for k, v in incident.evidence.items()],
            {
                "alert": {
                    "id": alert_id,
                    "kind": incident.kind,
                    "subject": incident.subject,
                    "owner": incident.owner,
                    "evidence": incident.evidence,
                }
            },
        )
        return [
            Owed(
                f"{cause}:{route.key}",
                route.channel,
                route.address,
                ", ".join(names),
                message,
                alert_id=alert_id,
            )
            for route, names in grouped({incident.owner: incident.routes}).items()
        ]


async def listed(
    connection: AsyncConnection, *, status: AlertStatus | None, limit: int
) -> list[Alert]:
    """The newest alerts, of one status if given."""
    query = select(alerts).order_by(alerts.c.opened_at.desc()).limit(limit)
    if status is not None:
        query = query.where(alerts.c.status == status.value)
    return [Alert.of(row) for row in await connection.execute(query)]


async def _probe(connector: Connector) -> str | None:
    """Why a system of record is down now, or None when it answers."""
    if connector.stats.breaker.state is BreakerState.OPEN:
        return "its circuit is open after repeated failures"
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            await connector.ping()
    except SourceError as exc:
        return exc.public
    except TimeoutError:
        return f"no answer in {PROBE_TIMEOUT:g} s"
    return None


def _new_row(alert_id: str, incident: Incident, now: datetime) -> dict[str, Any]:
    return {
        "id": alert_id,
        "fingerprint": incident.fingerprint,
        "kind": incident.kind,
        "subject": incident.subject,
        "owner": incident.owner,
        "status": AlertStatus.OPEN.value,
        "summary": incident.summary,
        "evidence": _json(incident.evidence),
        "opened_at": now,
        "reminded_at": now,
    }


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _aware(moment: datetime) -> datetime:
    # SQLite hands back the naive UTC wall time that was stored.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


async def _alive(connection: AsyncConnection) -> bool:
    """Whether the session behind `connection` still answers."""
    try:
        await connection.scalar(text("SELECT 1"))
        await connection.commit()
    except DBAPIError:
        return False
    return True

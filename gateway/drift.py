"""Drift: copies of contract fields held in other systems, compared with their system of record.

    sweep(services)                                   `gatehouse drift`, and the periodic chore
    └── for each declared copy, on its own (one copy's failure leaves the others checked):
        ├── read both sides whole, in pages, at once:    the copy through its source's connector
        │                                                (gateway/copies.py), the record through
        │                                                the entity's: timeouts, breakers, counters
        ├── compare per key:   equal, or within `tolerance`           -> in sync (row deleted)
        │                      differs, the copy had `delay` to catch up -> DRIFT
        │                      differs, still within `delay`            -> LAGGING
        ├── either side unreadable -> the copy and its findings are UNKNOWN, never DRIFT
        └── store: drift_findings (the latest state per record), drift_copies (per copy)

The system of record is authoritative: Gatehouse never writes a copy on its own; a person turns a
finding into a governed action (the demo's syncStorefrontStock), audited like any write.

A `pii` field's values are held in memory for the comparison only: findings store neither
value (`masked`), so no listing, alert or log shows them; whoever may see the value reads the
record itself, masked or not by policy, as any read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.alerts import Incident
from gateway.audience import Audience
from gateway.config import Classification, CopyConfig, EntityConfig, GatewayConfig
from gateway.copies import copy_entity, record_entity
from gateway.database import drift_copies, drift_findings, drift_sweeps
from sources.connector import Connector
from sources.errors import SourceError
from sources.records import Record

if TYPE_CHECKING:
    from gateway.services import Services

log = logging.getLogger("gatehouse.drift")

# A copy held in SQL is read this many rows per statement; one held by an http source as its
# config says. The system of record is read in pages of the gateway's own maximum page size
# ([limits] max_page_size), what its APIs are known to answer.
COPY_PAGE = 1000
MASKED = "masked (pii)"


class DriftStatus(StrEnum):
    """Where one record's copy stands, or one copy as a whole."""

    IN_SYNC = "IN_SYNC"
    LAGGING = "LAGGING"  # differs, for less than the copy's tolerated delay
    DRIFT = "DRIFT"
    UNKNOWN = "UNKNOWN"  # a side could not be read: nothing is claimed


@dataclass(frozen=True, slots=True)
class Side:
    """One side's value for a key and when that side last changed, if it says."""

    value: Any
    updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class Finding:
    """A record whose copy is not in sync (or could not be checked)."""

    entity: str
    copy: str
    key: str
    field: str
    status: DriftStatus
    record_value: str | None  # None when masked, or when the system of record has no value
    copy_value: str | None
    masked: bool
    record_updated_at: datetime | None
    copy_updated_at: datetime | None
    first_seen: datetime
    checked_at: datetime
    error: str | None = None

    def age(self, which: datetime | None) -> timedelta | None:
        """How old a side's value was when checked."""
        return None if which is None else self.checked_at - which


@dataclass(frozen=True, slots=True)
class CopyReport:
    """One copy at one sweep: how many records were compared and what differs."""

    entity: str
    copy: str
    field: str
    authority: str  # the system of record's source
    holder: str  # the source holding the copy
    status: DriftStatus
    checked: int
    findings: tuple[Finding, ...]
    seconds: float
    error: str | None = None

    def count(self, status: DriftStatus) -> int:
        """Findings in `status`."""
        return sum(1 for finding in self.findings if finding.status is status)


@dataclass(frozen=True, slots=True)
class SweepReport:
    """Every copy's report from one sweep."""

    copies: tuple[CopyReport, ...]
    started_at: datetime
    seconds: float

    @property
    def drifting(self) -> bool:
        """Whether any copy drifts from its system of record."""
        return any(report.status is DriftStatus.DRIFT for report in self.copies)


@dataclass(frozen=True, slots=True)
class DriftIncident:
    """One drifting field's copy: what an owner alert is about (no pii in `sample`)."""

    entity: str
    field: str
    copy: str
    owner: str
    records: int
    since: datetime
    sample: str


@dataclass(frozen=True, slots=True)
class UnknownCopy:
    """A copy the last sweep could not read, and why."""

    entity: str
    field: str
    copy: str
    owner: str
    since: datetime
    error: str


async def sweep(services: Services) -> SweepReport:
    """Compare every declared copy with its system of record and store the findings."""
    return await sweep_estate(
        config=services.config, connectors=services.connectors, engine=services.engine
    )


async def sweep_estate(
    *,
    config: GatewayConfig,
    connectors: Mapping[str, Connector],
    engine: AsyncEngine,
    now: datetime | None = None,
    only: Collection[str] | None = None,
) -> SweepReport:
    """`sweep` from its parts, of `only` these entities' copies if given; `now` stands in
    for the clock in tests."""
    started, clock = time.perf_counter(), now or datetime.now(UTC)
    reports = []
    for entity_name, entity in config.entities.items():
        if only is not None and entity_name not in only:
            continue
        for name, copy in entity.copies.items():
            checker = _Checker(entity_name, entity, name, copy, connectors, clock)
            checker.record_page = config.limits.max_page_size
            reports.append(await checker.run(engine))
    report = SweepReport(tuple(reports), clock, time.perf_counter() - started)
    log.info(
        "drift sweep",
        extra={
            "copies": len(reports),
            "drifting": sum(r.count(DriftStatus.DRIFT) for r in reports),
            "unknown": sum(1 for r in reports if r.status is DriftStatus.UNKNOWN),
            "seconds": round(report.seconds, 3),
        },
    )
    return report


class _Checker:
    """One copy at one sweep: read, compare, store."""

    def __init__(
        self,
        entity_name: str,
        entity: EntityConfig,
        name: str,
        copy: CopyConfig,
        connectors: Mapping[str, Connector],
        now: datetime,
    ) -> None:
        self.entity_name, self.entity, self.name, self.copy = entity_name, entity, name, copy
        self.connectors, self.now = connectors, now
        self.record_page = 500
        self.child, _, self.leaf = copy.field.rpartition(".")
        field = dict(entity.all_fields())[copy.field]
        self.masked = field.classification is Classification.PII
        self.numeric = field.type in ("int", "decimal")

    async def run(self, engine: AsyncEngine) -> CopyReport:
        started = time.perf_counter()
        try:
            records, copies = await asyncio.gather(self._records(), self._copies())
        except SourceError as exc:
            return await self._unknown(engine, exc.public, time.perf_counter() - started)
        except Exception as exc:
            # One copy's fault must not stop the others; its type only is logged, since a
            # message may quote values.
            log.error("drift: copy not compared", extra={"error": type(exc).__name__})
            error = f"could not be compared ({type(exc).__name__})"
            return await self._unknown(engine, error, time.perf_counter() - started)
        async with engine.begin() as connection:
            earlier = await _earlier(connection, self.entity_name, self.name)
            findings = self._compare(records, copies, earlier)
            report = self._report(findings, len(records.keys() | copies.keys()), started)
            await _store(connection, report, self.entity.owner)
        return report

    def _report(self, findings: list[Finding], checked: int, started: float) -> CopyReport:
        drifting = any(finding.status is DriftStatus.DRIFT for finding in findings)
        return CopyReport(
            entity=self.entity_name,
            copy=self.name,
            field=self.copy.field,
            authority=self.entity.source,
            holder=self.copy.source,
            status=DriftStatus.DRIFT if drifting else DriftStatus.IN_SYNC,
            checked=checked,
            findings=tuple(findings),
            seconds=time.perf_counter() - started,
        )

    async def _unknown(self, engine: AsyncEngine, error: str, seconds: float) -> CopyReport:
        log.warning(
            "drift: copy not checked",
            extra={"entity": self.entity_name, "copy": self.name, "error": error},
        )
        report = CopyReport(
            entity=self.entity_name,
            copy=self.name,
            field=self.copy.field,
            authority=self.entity.source,
            holder=self.copy.source,
            status=DriftStatus.UNKNOWN,
            checked=0,
            findings=(),
            seconds=seconds,
            error=error,
        )
        async with engine.begin() as connection:
            # What was found before stays, marked as no longer known: neither drift nor in sync.
            await connection.execute(
                update(drift_findings)
                .where(_of_copy(drift_findings, self.entity_name, self.name))
                .values(status=DriftStatus.UNKNOWN.value, error=error, checked_at=self.now)
            )
            await _store_copy(connection, report, self.entity.owner, self.now)
        return report

    async def _records(self) -> dict[str, Side]:
        connector = self.connectors[self.entity.source]
        # The entity narrowed to the fields compared, where its connector maps that.
        narrow = record_entity(self.entity_name, self.name)
        mapped = narrow in getattr(connector, "copies", list)()
        sides: dict[str, Side] = {}
        async for record in _all(
            connector, narrow if mapped else self.entity_name, self.record_page
        ):
            sides[record.key] = self._record_side(record)
        return sides

    async def _copies(self) -> dict[str, Side]:
        connector = self.connectors[self.copy.source]
        size = self.copy.http.page_size if self.copy.http else COPY_PAGE
        sides: dict[str, Side] = {}
        async for record in _all(connector, copy_entity(self.entity_name, self.name), size):
            sides[record.key] = Side(record.data["value"], record.data.get("updated_at"))
        return sides

    def _record_side(self, record: Record) -> Side:
        data: Mapping[str, Any] | None = record.data
        if self.child:
            data = next((row for row in record.data[self.child] if self._picked(row)), None)
        value = None if data is None else data.get(self.leaf)
        return Side(value, self._changed(record, data))

    def _picked(self, row: Mapping[str, Any]) -> bool:
        return all(row.get(name) == wanted for name, wanted in self.copy.where.items())

    def _changed(self, record: Record, row: Mapping[str, Any] | None) -> datetime | None:
        stamp = self.copy.record_updated_at
        if stamp is None:
            return None if self.child else record.updated_at
        child, _, name = stamp.rpartition(".")
        source = row if child else record.data
        found = None if source is None else source.get(name)
        return found if isinstance(found, datetime) else None

    def _compare(
        self, records: dict[str, Side], copies: dict[str, Side], earlier: dict[str, _Earlier]
    ) -> list[Finding]:
        findings = []
        missing = Side(None, None)
        for key in sorted(records.keys() | copies.keys()):
            record, copy = records.get(key, missing), copies.get(key, missing)
            if not self._differs(record.value, copy.value):
                continue
            findings.append(self._finding(key, record, copy, earlier.get(key)))
        return findings

    def _differs(self, record: Any, copy: Any) -> bool:
        if record is None or copy is None:
            return not (record is None and copy is None)
        if self.numeric:
            return abs(Decimal(record) - Decimal(copy)) > self.copy.tolerance
        return bool(record != copy)

    def _finding(self, key: str, record: Side, copy: Side, earlier: _Earlier | None) -> Finding:
        shown = _shown(record.value, self.masked)
        # The difference is the same one while the record's value stands: a record that
        # changed again restarts the copy's allowance to catch up.
        same = earlier is not None and (self.masked or earlier.record_value == shown)
        first_seen = earlier.first_seen if same and earlier is not None else self.now
        start = record.updated_at or first_seen
        lagging = (self.now - start).total_seconds() < self.copy.delay
        return Finding(
            entity=self.entity_name,
            copy=self.name,
            key=key,
            field=self.copy.field,
            status=DriftStatus.LAGGING if lagging else DriftStatus.DRIFT,
            record_value=shown,
            copy_value=_shown(copy.value, self.masked),
            masked=self.masked,
            record_updated_at=record.updated_at,
            copy_updated_at=copy.updated_at,
            first_seen=first_seen,
            checked_at=self.now,
        )


@dataclass(frozen=True, slots=True)
class _Earlier:
    record_value: str | None
    first_seen: datetime


async def _all(connector: Connector, entity: str, size: int) -> AsyncIterator[Record]:
    after: str | None = None
    while True:
        page = await connector.page(entity, filters={}, search=None, limit=size, after=after)
        for record in page.records:
            yield record
        if not page.has_more or not page.records:
            return
        after = page.positions[-1]


def _shown(value: Any, masked: bool) -> str | None:
    if masked or value is None:
        return None
    return str(value)


def _of_copy(table: Any, entity: str, copy: str) -> Any:
    return and_(table.c.entity == entity, table.c.copy == copy)


async def _earlier(connection: AsyncConnection, entity: str, copy: str) -> dict[str, _Earlier]:
    rows = await connection.execute(
        select(
            drift_findings.c.key, drift_findings.c.record_value, drift_findings.c.first_seen
        ).where(_of_copy(drift_findings, entity, copy))
    )
    return {row.key: _Earlier(row.record_value, _utc(row.first_seen)) for row in rows}


async def _store(connection: AsyncConnection, report: CopyReport, owner: str) -> None:
    """Replace the copy's findings with this sweep's; records back in sync leave the table."""
    await connection.execute(
        delete(drift_findings).where(_of_copy(drift_findings, report.entity, report.copy))
    )
    if report.findings:
        await connection.execute(
            drift_findings.insert(), [_finding_row(finding) for finding in report.findings]
        )
    now = report.findings[0].checked_at if report.findings else datetime.now(UTC)
    await _store_copy(connection, report, owner, now)


def _finding_row(finding: Finding) -> dict[str, Any]:
    return {
        "entity": finding.entity,
        "copy": finding.copy,
        "key": finding.key,
        "field": finding.field,
        "status": finding.status.value,
        "record_value": finding.record_value,
        "copy_value": finding.copy_value,
        "masked": finding.masked,
        "record_updated_at": finding.record_updated_at,
        "copy_updated_at": finding.copy_updated_at,
        "first_seen": finding.first_seen,
        "checked_at": finding.checked_at,
        "error": finding.error,
    }


async def _store_copy(
    connection: AsyncConnection, report: CopyReport, owner: str, now: datetime
) -> None:
    where = _of_copy(drift_copies, report.entity, report.copy)
    before = (
        await connection.execute(select(drift_copies.c.status, drift_copies.c.since).where(where))
    ).first()
    since = _utc(before.since) if before and before.status == report.status.value else now
    await connection.execute(delete(drift_copies).where(where))
    await connection.execute(
        drift_copies.insert().values(
            entity=report.entity,
            copy=report.copy,
            field=report.field,
            owner=owner,
            authority=report.authority,
            holder=report.holder,
            status=report.status.value,
            checked=report.checked,
            drifting=report.count(DriftStatus.DRIFT),
            lagging=report.count(DriftStatus.LAGGING),
            checked_at=now,
            since=since,
            seconds=report.seconds,
            error=report.error,
        )
    )


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; every time stored here is UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


async def drifting(connection: AsyncConnection) -> list[DriftIncident]:
    """One incident per drifting copy of a field, with how many records and since when."""
    rows = await connection.execute(
        select(drift_findings, drift_copies.c.owner)
        .join(
            drift_copies,
            and_(
                drift_copies.c.entity == drift_findings.c.entity,
                drift_copies.c.copy == drift_findings.c.copy,
            ),
        )
        .where(drift_findings.c.status == DriftStatus.DRIFT.value)
        .order_by(drift_findings.c.entity, drift_findings.c.copy, drift_findings.c.key)
    )
    incidents: dict[tuple[str, str], DriftIncident] = {}
    for row in rows:
        found = incidents.get((row.entity, row.copy))
        first_seen = _utc(row.first_seen)
        if found is None:
            incidents[(row.entity, row.copy)] = DriftIncident(
                entity=row.entity,
                field=row.field,
                copy=row.copy,
                owner=row.owner,
                records=1,
                since=first_seen,
                sample=sample(row.key, row.record_value, row.copy_value, row.masked),
            )
        else:
            incidents[(row.entity, row.copy)] = _more(found, first_seen)
    return list(incidents.values())


async def drift_alerts(connection: AsyncConnection, audience: Audience) -> list[Incident]:
    """The owner alerts' condition (alerts.py): one incident per drifting copy of a field,
    to the owner of its entity. A copy that could not be read is no drift, and no sign that
    one is over either: its alert, if open, is held as it is (its source's own alert,
    source.down, tells of the failure)."""
    incidents = [
        Incident("drift", f"{u.entity}.{u.field} in {u.copy}", u.owner, [], "", held=True)
        for u in await unknown(connection)
    ]
    for found in await drifting(connection):
        owner, routes = audience.owner(found.entity)
        incidents.append(
            Incident(
                "drift",
                f"{found.entity}.{found.field} in {found.copy}",
                owner or found.owner,
                routes or audience.operators(),
                f"{found.records} record(s) of {found.entity} differ in {found.copy}'s copy of "
                f"{found.field} beyond what it tolerates; the system of record is "
                f"authoritative. For example {found.sample}.",
                {
                    "records": found.records,
                    "since": found.since.isoformat(),
                    "sample": found.sample,
                },
            )
        )
    return incidents


def _more(incident: DriftIncident, first_seen: datetime) -> DriftIncident:
    return DriftIncident(
        entity=incident.entity,
        field=incident.field,
        copy=incident.copy,
        owner=incident.owner,
        records=incident.records + 1,
        since=min(incident.since, first_seen),
        sample=incident.sample,
    )


def sample(key: str, record: str | None, copy: str | None, masked: bool) -> str:
    """One line about one finding, without pii."""
    if masked:
        return f"{key}: the values differ ({MASKED})"
    return f"{key}: record {_or_absent(record)}, copy {_or_absent(copy)}"


def _or_absent(value: str | None) -> str:
    return "absent" if value is None else value


async def unknown(connection: AsyncConnection) -> list[UnknownCopy]:
    """The copies the last sweep could not read."""
    rows = await connection.execute(
        select(drift_copies).where(drift_copies.c.status == DriftStatus.UNKNOWN.value)
    )
    return [
        UnknownCopy(row.entity, row.field, row.copy, row.owner, _utc(row.since), row.error or "")
        for row in rows
    ]


async def findings(
    connection: AsyncConnection,
    *,
    entities: Sequence[str],
    status: DriftStatus | None = None,
    limit: int = 500,
) -> list[Finding]:
    """Stored findings of these entities, in one status or all, drifting first."""
    query = select(drift_findings).where(drift_findings.c.entity.in_(list(entities)))
    if status is not None:
        query = query.where(drift_findings.c.status == status.value)
    query = query.order_by(
        drift_findings.c.entity, drift_findings.c.copy, drift_findings.c.key
    ).limit(limit)
    return [_finding(row) for row in await connection.execute(query)]


def _finding(row: Any) -> Finding:
    return Finding(
        entity=row.entity,
        copy=row.copy,
        key=row.key,
        field=row.field,
        status=DriftStatus(row.status),
        record_value=row.record_value,
        copy_value=row.copy_value,
        masked=bool(row.masked),
        record_updated_at=_maybe_utc(row.record_updated_at),
        copy_updated_at=_maybe_utc(row.copy_updated_at),
        first_seen=_utc(row.first_seen),
        checked_at=_utc(row.checked_at),
        error=row.error,
    )


def _maybe_utc(value: datetime | None) -> datetime | None:
    return None if value is None else _utc(value)


@dataclass(frozen=True, slots=True)
class CopyState:
    """A copy as its last sweep left it."""

    entity: str
    copy: str
    field: str
    owner: str
    authority: str
    holder: str
    status: DriftStatus
    checked: int
    drifting: int
    lagging: int
    checked_at: datetime
    since: datetime
    seconds: float
    error: str | None


async def copy_states(connection: AsyncConnection, *, entities: Sequence[str]) -> list[CopyState]:
    """Each copy of these entities as its last sweep left it."""
    rows = await connection.execute(
        select(drift_copies)
        .where(drift_copies.c.entity.in_(list(entities)))
        .order_by(drift_copies.c.entity, drift_copies.c.copy)
    )
    return [
        CopyState(
            **{
                **row._asdict(),
                "status": DriftStatus(row.status),
                "checked_at": _utc(row.checked_at),
                "since": _utc(row.since),
            }
        )
        for row in rows
    ]


async def sweep_if_due(services: Services, *, every: float) -> SweepReport | None:
    """The periodic sweep: run it when due, on whichever replica takes the lease first."""
    now = datetime.now(UTC)
    if not await _take_lease(services.engine, now, lease=max(every, 600.0)):
        return None
    try:
        return await sweep(services)
    finally:
        async with services.engine.begin() as connection:
            await connection.execute(
                update(drift_sweeps)
                .where(drift_sweeps.c.id == 1)
                .values(due_at=datetime.now(UTC) + timedelta(seconds=every), lease_until=None)
            )


async def _take_lease(engine: AsyncEngine, now: datetime, *, lease: float) -> bool:
    # One row says when the next sweep is due and who holds it: the conditional UPDATE is
    # atomic, so of several replicas at most one sees a row changed. A holder that dies
    # leaves a lease that runs out.
    with contextlib.suppress(IntegrityError):  # another replica made the row first
        async with engine.begin() as connection:
            exists = (await connection.execute(select(drift_sweeps.c.id))).first()
            if exists is None:
                await connection.execute(drift_sweeps.insert().values(id=1, due_at=now))
    async with engine.begin() as connection:
        taken = await connection.execute(
            update(drift_sweeps)
            .where(
                drift_sweeps.c.id == 1,
                drift_sweeps.c.due_at <= now,
                (drift_sweeps.c.lease_until.is_(None)) | (drift_sweeps.c.lease_until < now),
            )
            .values(lease_until=now + timedelta(seconds=lease))
        )
    return taken.rowcount == 1

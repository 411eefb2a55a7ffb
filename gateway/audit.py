"""The audit trail: an append-only, hash-chained record of what the gateway decided and did.

    audit_head (id=1): seq=N, hash=H(N)    <- every append locks this row, then moves it on

    seq=1                 seq=2                       seq=N
    prev_hash=GENESIS     prev_hash=H(1)     ...      prev_hash=H(N-1)
    hash=H(1) ----------> hash=H(2) -------> ... ---> hash=H(N)

    H(n) = sha256(H(n-1) + canonical_json({seq, id, at, trace_id, event, principal,
                  principal_kind, on_behalf_of, channel, action_id, action_kind, target,
                  outcome, payload}))
    canonical_json(v) = json.dumps(v, sort_keys=True, separators=(",", ":"),
                        ensure_ascii=False), Decimal -> str, datetime -> isoformat;
                        `at` is UTC, ISO 8601 with microseconds; GENESIS = "0" * 64

An edited row no longer matches its hash; a deleted row leaves a gap in the seqs (or, at the
end, a head that names an event that is not there); a moved or swapped row breaks the
prev_hash links. `verify` streams the chain in seq order and names the first bad event.
The chain is evidence against edits in place, not against someone who rewrites every later
hash and the head as well: exported files (which carry seq, prev_hash and hash) anchor it.

Appends lock the head row (SELECT ... FOR UPDATE; on SQLite, BEGIN IMMEDIATE already
serializes writers), so any number of gateway processes extend one gap-free chain, at a cost
that does not grow with the trail: one primary-key read, one insert, one update. On
PostgreSQL those three, and the change the event records (a Prelude: an action's new
state), are one statement, and the database computes the hash (see `_append_statement`).
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, TextIO

from sqlalchemy import (
    ColumnElement,
    Row,
    Text,
    Update,
    bindparam,
    cast,
    literal_column,
    select,
    true,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import ReturningInsert, UpdateBase
from sqlalchemy.sql.functions import GenericFunction
from sqlalchemy.sql.selectable import FromClause

from gateway.database import GENESIS_HASH, SQLITE_SHA256, audit_events, audit_head
from sources.sql import single_statement_engine

if TYPE_CHECKING:  # the action store builds on Prelude here: types only, no import cycle
    from gateway.actions.store import Action, Approval
    from gateway.principals import Principal as Actor

ExportFormat = Literal["jsonl", "csv"]

# What one export line or CSV row holds, in this order: every column of the event.
EXPORT_COLUMNS = (
    "seq",
    "id",
    "at",
    "trace_id",
    "event",
    "principal",
    "principal_kind",
    "on_behalf_of",
    "channel",
    "action_id",
    "action_kind",
    "target",
    "outcome",
    "payload",
    "prev_hash",
    "hash",
)
_BATCH = 5000  # events read per query by verify and export
_HEAD = select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)
# What the hash covers besides seq and prev_hash, which only the head can tell.
_EVENT_FIELDS = tuple(name for name in EXPORT_COLUMNS if name not in ("seq", "prev_hash", "hash"))
_CHAIN_BEFORE = bindparam("chain_before", type_=Text)
_CHAIN_AFTER = bindparam("chain_after", type_=Text)


@dataclass(frozen=True)
class Prelude:
    """A change an event records, made together with its append: both happen, or neither.

    `statement` is an INSERT or UPDATE of one row, its values all bound parameters. When
    it changes no row (a compare-and-set that lost), the event is not appended either.
    """

    statement: UpdateBase
    params: Mapping[str, Any]


class chain_sha256(GenericFunction[str]):
    """The hex sha256 of a text's UTF-8 bytes, computed in the database."""

    type = Text()
    inherit_cache = True


@compiles(chain_sha256, "postgresql")
def _sha256_postgresql(element: chain_sha256, compiler: SQLCompiler, **kw: Any) -> str:
    return f"encode(sha256(convert_to({compiler.process(element.clauses, **kw)}, 'UTF8')), 'hex')"


@compiles(chain_sha256, "sqlite")
def _sha256_sqlite(element: chain_sha256, compiler: SQLCompiler, **kw: Any) -> str:
    return f"{SQLITE_SHA256}({compiler.process(element.clauses, **kw)})"  # database.py


def _next_after(head: FromClause) -> ReturningInsert[tuple[int, str, str]]:
    """The event as the link after `head` (its columns seq and prev_hash), hashed there.

    The hash is the one `chain_hash` computes: the event's canonical JSON, cut where its
    seq goes (StoredEvent.hash_parts), so the database needs to know nothing of JSON.
    """
    chained = head.c.prev_hash + _CHAIN_BEFORE + cast(head.c.seq, Text) + _CHAIN_AFTER
    fields = [bindparam(f"event_{name}", type_=audit_events.c[name].type) for name in _EVENT_FIELDS]
    return (
        audit_events.insert()
        .from_select(
            ["seq", *_EVENT_FIELDS, "prev_hash", "hash"],
            select(head.c.seq, *fields, head.c.prev_hash, chain_sha256(chained)),
        )
        .returning(audit_events.c.seq, audit_events.c.prev_hash, audit_events.c.hash)
    )


# The head as the next event sees it; built once, like the statements below.
_NEXT = select((audit_head.c.seq + 1).label("seq"), audit_head.c.hash.label("prev_hash")).where(
    audit_head.c.id == 1
)
# SQLite: BEGIN IMMEDIATE already holds every other writer off.
_INSERT_NEXT = _next_after(_NEXT.subquery("head"))
_MOVE_HEAD = audit_head.update().where(audit_head.c.id == 1)


@functools.cache
def _append_statement(prelude: UpdateBase | None) -> Update:
    """PostgreSQL's append, in one statement, after `prelude`'s change if there is one.

        WITH changed AS (<prelude> RETURNING 1),                  -- if any
             head AS (SELECT seq + 1, hash FROM audit_head, changed
                      WHERE id = 1 FOR UPDATE OF audit_head),
             event AS (INSERT INTO audit_events SELECT head.seq, <event>, head.hash,
                       sha256(head.hash || <json before seq> || head.seq || <json after>)
                       FROM head RETURNING seq, prev_hash, hash)
        UPDATE audit_head SET seq = event.seq, hash = event.hash FROM event
        WHERE id = 1 AND audit_head.seq < event.seq
        RETURNING event.seq, event.prev_hash, event.hash

    One round trip and a transaction of its own. Waiting on the head's lock, READ
    COMMITTED hands the head as the previous append left it.
    """
    head = _NEXT
    if prelude is not None:
        changed = prelude.returning(literal_column("1")).cte("changed")
        head = head.select_from(audit_head.join(changed, true()))
    event = _next_after(head.with_for_update(of=audit_head).cte("head")).cte("event")
    return (
        update(audit_head)
        .where(audit_head.c.id == 1, audit_head.c.seq < event.c.seq)  # it only moves on
        .values(seq=event.c.seq, hash=event.c.hash)
        .returning(event.c.seq, event.c.prev_hash, event.c.hash)
    )


def canonical_json(value: Any) -> str:
    """The one JSON text for a value: sorted keys, no spaces, Decimal and datetime as text."""
    return json.dumps(
        value,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
        default=_json_default,
    )


def _json_default(value: object) -> str:
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable in an audit event")


def chain_hash(prev_hash: str, document: Mapping[str, Any]) -> str:
    """The hash of an event: sha256 of the previous hash and the event's canonical JSON."""
    return hashlib.sha256((prev_hash + canonical_json(document)).encode("utf-8")).hexdigest()


def _utc(value: datetime) -> datetime:
    # SQLite hands back the naive UTC wall time we stored; PostgreSQL an aware datetime.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _aware(value: datetime | None, name: str) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware")
    return None if value is None else value.astimezone(UTC)


@dataclass(frozen=True)
class AuditEvent:
    """One thing to record; the payload's classified values are already masked."""

    event: str  # action.applied, action.denied, policy.reloaded, read.classified ...
    principal: str
    principal_kind: str
    on_behalf_of: str | None
    channel: str  # graphql | mcp | console | cli | system
    outcome: str
    trace_id: str
    action_id: str | None = None
    action_kind: str | None = None
    target: str | None = None
    payload: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as the trail holds it: its place in the chain and its hash."""

    seq: int
    id: str
    at: datetime
    trace_id: str
    event: str
    principal: str
    principal_kind: str
    on_behalf_of: str | None
    channel: str
    action_id: str | None
    action_kind: str | None
    target: str | None
    outcome: str
    payload: dict[str, Any]
    prev_hash: str
    hash: str

    @classmethod
    def seal(
        cls, event: AuditEvent, *, seq: int, prev_hash: str, id: str, at: datetime
    ) -> StoredEvent:
        """The event chained after `prev_hash` at position `seq`, with its hash."""
        return cls.unchained(event, id=id, at=at).chained(seq, prev_hash)

    @classmethod
    def unchained(cls, event: AuditEvent, *, id: str, at: datetime) -> StoredEvent:
        """The event before it has a place in the chain (seq 0, no hashes)."""
        if at.tzinfo is None:
            raise ValueError("an audit event's time must be timezone-aware")
        fields = {**vars(event), "payload": json.loads(canonical_json(dict(event.payload)))}
        return cls(seq=0, id=id, at=_utc(at), prev_hash="", hash="", **fields)

    def chained(self, seq: int, prev_hash: str) -> StoredEvent:
        """This event at position `seq` after `prev_hash`, with its hash."""
        placed = replace(self, seq=seq, prev_hash=prev_hash)
        return replace(placed, hash=placed.computed_hash())

    def hash_parts(self, payload_json: str) -> tuple[str, str]:
        """The canonical JSON the hash covers, before and after the seq's digits.

        `payload_json` is the payload's canonical JSON, which the caller has made already:
        spliced in where the payload goes, it reads as if the whole were serialized.
        """
        marker = f'"{uuid.uuid4().hex}"'  # cannot occur in the event: it is new
        document = {**self.document(), "payload": marker[1:-1], "seq": marker[1:-1]}
        # Keys are sorted: the payload's marker comes first, the seq's last.
        head, found, after = canonical_json(document).rpartition(marker)
        before = head.replace(marker, payload_json, 1)
        if not found or before == head:
            raise AssertionError("a marker vanished from the canonical JSON")
        return before, after

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> StoredEvent:
        """An event from an exported JSONL object (see `record`)."""
        values = {name: record[name] for name in EXPORT_COLUMNS}
        return cls(**{**values, "at": _utc(datetime.fromisoformat(record["at"]))})

    def document(self) -> dict[str, Any]:
        """The fields the hash covers, as JSON values."""
        record = self.record()
        del record["prev_hash"], record["hash"]
        return record

    def record(self) -> dict[str, Any]:
        """Every field as JSON values: what an export line holds."""
        values = {name: getattr(self, name) for name in EXPORT_COLUMNS}
        return {**values, "at": self.at.astimezone(UTC).isoformat(timespec="microseconds")}

    def computed_hash(self) -> str:
        """The hash this event's fields and prev_hash call for."""
        return chain_hash(self.prev_hash, self.document())

    def as_row(self, payload_json: str | None = None) -> dict[str, Any]:
        """The `audit_events` row for this event (`payload_json`: its payload's, if made)."""
        values = {name: getattr(self, name) for name in EXPORT_COLUMNS}
        return {**values, "payload": payload_json or canonical_json(self.payload)}


@dataclass(frozen=True)
class Verification:
    """What `verify` found: intact, or the first bad event and what is wrong with it."""

    ok: bool
    events: int  # events checked (up to, not including, the first bad one)
    first_bad_seq: int | None = None
    problem: str | None = None  # "event seq=S id=I: what is wrong"


class AuditTrail:
    """Appends to, verifies, queries and exports the gateway's audit trail."""

    def __init__(
        self, engine: AsyncEngine, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._engine = engine
        self._single_statements = single_statement_engine(engine)
        self._clock = clock

    async def append(
        self,
        event: AuditEvent,
        *,
        connection: AsyncConnection | None = None,
        prelude: Prelude | None = None,
    ) -> StoredEvent | None:
        """Chain one event, with `prelude`'s change; None when the prelude changed no row.

        With a connection, inside the caller's transaction: the caller commits, and holds
        the chain's head lock until it does, so append as the last step before the commit.
        Without one, on PostgreSQL the append is one statement, its own transaction.
        """
        if connection is not None:
            return await self._append(connection, event, prelude)
        if self._engine.dialect.name == "postgresql":
            async with self._single_statements.connect() as own:
                return await self._append(own, event, prelude)
        async with self._engine.begin() as own:
            return await self._append(own, event, prelude)

    async def _append(
        self, connection: AsyncConnection, event: AuditEvent, prelude: Prelude | None
    ) -> StoredEvent | None:
        unchained = StoredEvent.unchained(event, id=str(uuid.uuid4()), at=self._clock())
        payload_json = canonical_json(unchained.payload)
        row = unchained.as_row(payload_json)
        before, after = unchained.hash_parts(payload_json)
        params = {f"event_{name}": row[name] for name in _EVENT_FIELDS}
        params.update(chain_before=before, chain_after=after)
        if connection.dialect.name == "postgresql":
            statement = _append_statement(prelude.statement if prelude else None)
            params.update(prelude.params if prelude else {})
            placed = (await connection.execute(statement, params)).first()
            if placed is None:  # the prelude changed no row
                return None
        else:
            if (
                prelude
                and (await connection.execute(prelude.statement, prelude.params)).rowcount != 1
            ):
                return None
            placed = (await connection.execute(_INSERT_NEXT, params)).one()
            await connection.execute(_MOVE_HEAD, {"seq": placed.seq, "hash": placed.hash})
        return replace(unchained, seq=placed.seq, prev_hash=placed.prev_hash, hash=placed.hash)

    async def verify(self) -> Verification:
        """Check the whole chain in seq order: gaps, links, hashes, and the head."""
        chain = _ChainCheck()
        async for row in self._rows(after=0, upto=None):
            if (bad := chain.check(row)) is not None:
                return bad
        head_seq, head_hash = await self._head()
        # Events appended since the first pass ended, up to the head just read.
        async for row in self._rows(after=chain.seq, upto=head_seq):
            if (bad := chain.check(row)) is not None:
                return bad
        return chain.finish(head_seq=head_seq, head_hash=head_hash)

    async def query(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        principal: str | None = None,
        action_kind: str | None = None,
        outcome: str | None = None,
        principal_kind: str | None = None,
        action_id: str | None = None,
        limit: int,
        after_seq: int | None = None,
        before_seq: int | None = None,
        newest_first: bool = False,
    ) -> tuple[list[StoredEvent], bool]:
        """Events between `after_seq` and `before_seq` (both exclusive), oldest first or
        newest first; and whether more follow in that order.

        `since` is inclusive and `until` exclusive; both must be timezone-aware.
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        conditions = _filters(
            since=_aware(since, "since"),
            until=_aware(until, "until"),
            principal=principal,
            action_kind=action_kind,
            outcome=outcome,
            principal_kind=principal_kind,
            action_id=action_id,
        )
        if after_seq is not None:
            conditions.append(audit_events.c.seq > after_seq)
        if before_seq is not None:
            conditions.append(audit_events.c.seq < before_seq)
        order = audit_events.c.seq.desc() if newest_first else audit_events.c.seq
        statement = select(audit_events).where(*conditions).order_by(order)
        async with self._engine.connect() as connection:
            rows = (await connection.execute(statement.limit(limit + 1))).all()
        return [_stored(row) for row in rows[:limit]], len(rows) > limit

    async def export(
        self,
        out: TextIO,
        *,
        format: ExportFormat,
        since: datetime | None = None,
        until: datetime | None = None,
        principal: str | None = None,
        action_kind: str | None = None,
    ) -> int:
        """Write the matching events, oldest first, as JSONL or CSV; the number written.

        JSONL: one canonical JSON object per line with every field, so each line's hash can
        be recomputed. CSV: a header row, the payload as a JSON string, None as empty.
        """
        write = _writer(out, format)
        count, after, more = 0, None, True
        while more:
            events, more = await self.query(
                since=since,
                until=until,
                principal=principal,
                action_kind=action_kind,
                limit=_BATCH,
                after_seq=after,
            )
            for event in events:
                write(event)
            count += len(events)
            after = events[-1].seq if events else after
        return count

    async def _rows(self, *, after: int, upto: int | None) -> AsyncIterator[Row[Any]]:
        # Keyset batches, each in its own short transaction, so the whole trail is never
        # in memory and (on SQLite) appends are not held off for the length of a verify.
        while True:
            statement = select(audit_events).where(audit_events.c.seq > after)
            if upto is not None:
                statement = statement.where(audit_events.c.seq <= upto)
            statement = statement.order_by(audit_events.c.seq).limit(_BATCH)
            async with self._engine.connect() as connection:
                rows = (await connection.execute(statement)).all()
            for row in rows:
                yield row
            if len(rows) < _BATCH:
                return
            after = rows[-1].seq

    async def _head(self) -> tuple[int, str]:
        async with self._engine.connect() as connection:
            seq, hash_ = (await connection.execute(_HEAD)).one()
        return int(seq), str(hash_)


class _ChainCheck:
    """Walks events in seq order, remembering the last good one."""

    def __init__(self) -> None:
        self.seq = 0
        self.hash = GENESIS_HASH
        self.id: str | None = None

    def check(self, row: Row[Any]) -> Verification | None:
        """None when the row extends the chain; else what is wrong with it."""
        expected = self.seq + 1
        if row.seq != expected:
            what = f"missing; the next stored event is seq={row.seq} id={row.id}"
            if row.seq < expected:
                what = f"seq={row.seq} id={row.id} is out of sequence"
            return self._bad(expected, None, what)
        if (problem := _row_problem(row, self.hash)) is not None:
            return self._bad(row.seq, row.id, problem)
        self.seq, self.hash, self.id = row.seq, row.hash, row.id
        return None

    def finish(self, *, head_seq: int, head_hash: str) -> Verification:
        """The verdict once every event up to the head has been checked."""
        if head_seq > self.seq:
            what = f"missing; the head records seq={head_seq} but the trail ends at {self.seq}"
            return self._bad(self.seq + 1, None, what)
        if head_seq < self.seq:
            what = f"stored beyond the chain's head, which records seq={head_seq}"
            return self._bad(head_seq + 1, None, what)
        if head_hash != self.hash:
            return self._bad(self.seq, self.id, "its hash differs from the one the head records")
        return Verification(ok=True, events=self.seq)

    def _bad(self, seq: int, id_: str | None, what: str) -> Verification:
        name = f"event seq={seq} id={id_}" if id_ is not None else f"event seq={seq} (absent)"
        return Verification(ok=False, events=seq - 1, first_bad_seq=seq, problem=f"{name}: {what}")


def _row_problem(row: Row[Any], prev_hash: str) -> str | None:
    if row.prev_hash != prev_hash:
        before = "the genesis hash" if row.seq == 1 else f"the hash of seq={row.seq - 1}"
        return f"its prev_hash does not match {before}: an event was moved, swapped or replaced"
    try:
        event = _stored(row)
    except ValueError:
        return "its payload is not valid JSON: the event was edited"
    if canonical_json(event.payload) != row.payload:
        return "its payload is not in canonical form: the event was edited"
    if event.computed_hash() != row.hash:
        return "its contents do not match its hash: the event was edited"
    return None


def _stored(row: Row[Any]) -> StoredEvent:
    values = dict(row._mapping)
    payload = json.loads(values["payload"])
    if not isinstance(payload, dict):
        raise ValueError("payload is not a JSON object")
    return StoredEvent(**{**values, "at": _utc(values["at"]), "payload": payload})


def _filters(
    *, since: datetime | None, until: datetime | None, **equal: str | None
) -> list[ColumnElement[bool]]:
    columns = audit_events.c
    conditions = [columns[name] == value for name, value in equal.items() if value is not None]
    if since is not None:
        conditions.append(columns.at >= since)
    if until is not None:
        conditions.append(columns.at < until)
    return conditions


def _writer(out: TextIO, format: ExportFormat) -> Callable[[StoredEvent], None]:
    if format == "jsonl":
        return lambda event: print(canonical_json(event.record()), file=out)
    if format != "csv":
        raise ValueError(f"unknown export format {format!r}: jsonl or csv")
    rows = csv.writer(out, lineterminator="\n")
    rows.writerow(EXPORT_COLUMNS)

    def write(event: StoredEvent) -> None:
        record = {**event.record(), "payload": canonical_json(event.payload)}
        rows.writerow(["" if record[name] is None else record[name] for name in EXPORT_COLUMNS])

    return write


# ---- exports -----------------------------------------------------------------------------

EXPORTED = "EXPORTED"  # the outcome of an `audit.exported` event


def export_event(
    *,
    principal: str,
    principal_kind: str,
    on_behalf_of: str | None,
    channel: str,
    trace_id: str,
    export: str,
    format: ExportFormat,
    filters: Mapping[str, Any],
    rows: int,
    **more: Any,
) -> AuditEvent:
    """The audit event of a copy taken of the trail (`export`: events) or of the ledger:
    who took it, of which view, in which format, how many records."""
    return AuditEvent(
        event="audit.exported",
        principal=principal,
        principal_kind=principal_kind,
        on_behalf_of=on_behalf_of,
        channel=channel,
        outcome=EXPORTED,
        trace_id=trace_id,
        payload={"export": export, "format": format, "filters": dict(filters), "rows": rows} | more,
    )


# ---- events of actions ------------------------------------------------------------------


def action_event(
    action: Action,
    event: str,
    *,
    actor: Actor | None,
    requester: Actor | None,
    masked_input: Mapping[str, Any] | None,
    extra: Mapping[str, Any],
) -> AuditEvent:
    """The audit event of one change to an action, made by `actor` (None: by the requester,
    or the gateway itself). `masked_input` has its classified values hidden already (by the
    action's own contract), and so has the action's diff."""
    principal = actor or requester
    extra = dict(extra)
    channel = extra.pop("channel", None)
    payload = {
        "input": masked_input,
        "decision": {
            "outcome": action.decision,
            "rule": action.rule,
            "reason": action.reason,
            "policy_version": action.policy_version,
        },
        "validation": action.validation,
        "diff": action.diff,
        "expected_version": action.expected_version,
        "result": action.result,
        "error": action.error,
        "approvals": [verdict_payload(a) for a in action.approvals],
        "requested_by": action.principal,
        **extra,
    }
    return AuditEvent(
        event=event,
        principal=principal.id if principal else action.principal,
        principal_kind=principal.kind.value if principal else "unknown",
        on_behalf_of=principal.on_behalf_of if principal else action.on_behalf_of,
        channel=channel or (action.channel if actor is None else "graphql"),
        outcome=action.status.value,
        trace_id=action.trace_id,
        action_id=action.id,
        action_kind=action.kind,
        target=action.target,
        payload=payload,
    )


def verdict_payload(verdict: Approval) -> dict[str, Any]:
    """One approver's verdict as the trail records it."""
    return {
        "approver": verdict.approver,
        "verdict": verdict.verdict,
        "comment": verdict.comment,
        "at": verdict.at.isoformat(),
        "input_digest": verdict.input_digest,
        "policy_version": verdict.policy_version,
    }

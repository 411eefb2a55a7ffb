"""The actions as compliance reads them: one entry per action, newest first.

    Query (who, approver, kind, status, period, search)  ->  WHERE on `actions`
    page(after=older-than | before=newer-than)   keyset on (created_at, id), both ways,
                                                 never OFFSET: ix_actions_created
    totals(...)     count by status (GROUP BY); amounts summed by status, kind and
                    currency, as each kind's contract computes them (`amount()` is
                    code, not a column), so only while the view is small enough to read
                    (SUM_LIMIT), in one stream, a settled action's money kept by its id
    every(...)      all entries of the view in keyset batches, for exports
    record(entry), written(records, fmt)     an export's records, as JSONL or CSV

An entry carries the action's input as stored (unmasked): callers mask it (`masked_input`)
before it is shown or written anywhere.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import ValidationError
from sqlalchemy import ColumnElement, bindparam, func, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.actions.store import FINAL, Approval, Status
from gateway.audit import ExportFormat, canonical_json
from gateway.catalog import Catalog
from gateway.database import actions, approvals

SUM_LIMIT = 10_000  # beyond this many actions in a view, amounts are not summed at all
_BATCH = 1000  # entries read per query by `every` and the sums
_ACTION_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
_COLUMNS = (
    actions.c.id,
    actions.c.created_at,
    actions.c.updated_at,
    actions.c.expires_at,
    actions.c.kind,
    actions.c.status,
    actions.c.principal,
    actions.c.on_behalf_of,
    actions.c.channel,
    actions.c.target,
    actions.c.input,
    actions.c.input_digest,
    actions.c.diff,
    actions.c.result,
    actions.c.decision,
    actions.c.rule,
    actions.c.reason,
    actions.c.policy_version,
    actions.c.approvals_required,
    actions.c.trace_id,
)
_MONEY_COLUMNS = (
    actions.c.id,
    actions.c.kind,
    actions.c.status,
    actions.c.input,
    actions.c.diff,
    actions.c.result,
)
_FINAL_VALUES = frozenset(status.value for status in FINAL)
_MONEY_SEEN_MAX = 200_000
_money_seen: dict[str, Money | None] = {}  # by action id, in this process
_NEWEST_FIRST = (actions.c.created_at.desc(), actions.c.id.desc())
_OLDEST_FIRST = (actions.c.created_at.asc(), actions.c.id.asc())
_place = tuple_(actions.c.created_at, actions.c.id)  # an entry's place, as the cursor holds it
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class BadCursor(ValueError):
    """A paging link that was not made by this page (edited, cut short)."""


@dataclass(frozen=True, slots=True)
class Cursor:
    """A place in the ledger: an action's creation time and id."""

    created_at: datetime
    id: str

    def token(self) -> str:
        """The cursor as a link carries it: microseconds since the epoch, a dot, the id."""
        micros = (_utc(self.created_at) - _EPOCH) // timedelta(microseconds=1)
        return f"{micros}.{self.id}"

    @classmethod
    def parse(cls, token: str) -> Cursor:
        """The cursor a link carries; BadCursor when it is not one."""
        micros, _, action_id = token.partition(".")
        if not micros.isdigit() or len(micros) > 18 or not _ACTION_ID.match(action_id):
            raise BadCursor(f"'{token[:80]}' is not a place in the ledger")
        return cls(_EPOCH + timedelta(microseconds=int(micros)), action_id)


@dataclass(frozen=True, slots=True)
class Query:
    """Which actions a view holds; None matches anything."""

    search: str | None = None  # an action id, a trace id, or part of a target
    who: str | None = None  # the requester, or the person an agent acted for
    approver: str | None = None  # someone who approved or rejected it
    kind: str | None = None
    status: str | None = None  # its status now
    since: datetime | None = None  # requested at or after (aware)
    until: datetime | None = None  # requested before (aware)

    def conditions(self) -> list[ColumnElement[bool]]:
        """The WHERE clause of the view."""
        c = actions.c
        found: list[ColumnElement[bool]] = []
        if self.search:
            found.append(_search(self.search))
        if self.who is not None:
            found.append(or_(c.principal == self.who, c.on_behalf_of == self.who))
        if self.approver is not None:
            decided = select(approvals.c.action_id).where(approvals.c.approver == self.approver)
            found.append(c.id.in_(decided))
        if self.kind is not None:
            found.append(c.kind == self.kind)
        if self.status is not None:
            found.append(c.status == self.status)
        if self.since is not None:
            found.append(c.created_at >= _utc(self.since))
        if self.until is not None:
            found.append(c.created_at < _utc(self.until))
        return found


def _search(text: str) -> ColumnElement[bool]:
    # An id or a trace id is looked up by its index; anything else is part of a target.
    lowered = text.strip().lower()
    if _ACTION_ID.match(lowered):
        return actions.c.id == lowered
    if _TRACE_ID.match(lowered):
        return actions.c.trace_id == lowered
    return func.lower(actions.c.target).contains(lowered, autoescape=True)


@dataclass(frozen=True, slots=True)
class Entry:
    """One action as the ledger shows it."""

    id: str
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None
    kind: str
    status: Status
    principal: str
    on_behalf_of: str | None
    channel: str
    target: str
    input: dict[str, Any]  # as stored: unmasked
    input_digest: str
    diff: dict[str, Any] | None
    result: dict[str, Any] | None
    decision: str
    rule: str
    reason: str
    policy_version: str
    approvals_required: int
    trace_id: str
    approvals: tuple[Approval, ...] = field(default=())

    @property
    def cursor(self) -> Cursor:
        """This entry's place in the ledger."""
        return Cursor(self.created_at, self.id)

    @property
    def settled_at(self) -> datetime | None:
        """When it reached its final status; None while it may still change."""
        return _utc(self.updated_at) if self.status in FINAL else None

    def counts(self, verdict: Approval) -> bool:
        """Whether a verdict was given on this input under this policy (else it was voided)."""
        return (
            verdict.input_digest == self.input_digest
            and verdict.policy_version == self.policy_version
        )


@dataclass(frozen=True, slots=True)
class LedgerPage:
    """One page of entries and where the pages on either side begin."""

    entries: list[Entry]
    newer: Cursor | None  # the first entry, when newer ones exist
    older: Cursor | None  # the last entry, when older ones exist


@dataclass(frozen=True, slots=True)
class Money:
    """What a contract says is at stake: an amount and, when recorded, its currency."""

    amount: Decimal
    currency: str | None


@dataclass(frozen=True, slots=True)
class Totals:
    """A view's counts by status and, when it is small enough, its sums of money."""

    by_status: dict[str, int]
    # (status, kind, currency) -> (sum, how many); None: too many actions to read them all
    sums: dict[tuple[str, str, str | None], tuple[Decimal, int]] | None

    @property
    def count(self) -> int:
        """How many actions the view holds."""
        return sum(self.by_status.values())


async def page(
    engine: AsyncEngine,
    query: Query,
    *,
    limit: int,
    after: Cursor | None = None,
    before: Cursor | None = None,
) -> LedgerPage:
    """Entries newest first: the first page, or those older than `after` or newer than
    `before` (one of the two)."""
    if after is not None and before is not None:
        raise ValueError("page after a cursor or before one, not both")
    statement = select(*_COLUMNS).where(*query.conditions())
    if before is not None:  # walk towards the newest, then show them newest first
        statement = statement.where(_place > _key(before)).order_by(*_OLDEST_FIRST)
    else:
        if after is not None:
            statement = statement.where(_place < _key(after))
        statement = statement.order_by(*_NEWEST_FIRST)
    async with engine.connect() as connection:
        rows = list(await connection.execute(statement.limit(limit + 1)))
        more = len(rows) > limit
        rows = rows[:limit] if before is None else list(reversed(rows[:limit]))
        verdicts = await _approvals(connection, [row.id for row in rows])
    entries = [_entry(row, verdicts.get(row.id, ())) for row in rows]
    if not entries:
        return LedgerPage(entries, None, None)
    newer = more if before is not None else after is not None
    older = more if before is None else True
    return LedgerPage(
        entries,
        entries[0].cursor if newer else None,
        entries[-1].cursor if older else None,
    )


async def every(engine: AsyncEngine, query: Query) -> AsyncIterator[Entry]:
    """Every entry of the view, newest first, read in batches (each its own transaction)."""
    after: Cursor | None = None
    while True:
        batch = await page(engine, query, limit=_BATCH, after=after)
        for entry in batch.entries:
            yield entry
        if batch.older is None:
            return
        after = batch.older


async def totals(engine: AsyncEngine, query: Query, *, catalog: Catalog) -> Totals:
    """How many actions of the view are in each status, and the money they carry."""
    statement = (
        select(actions.c.status, func.count()).where(*query.conditions()).group_by(actions.c.status)
    )
    async with engine.connect() as connection:
        by_status = {str(row[0]): int(row[1]) for row in await connection.execute(statement)}
    if sum(by_status.values()) > SUM_LIMIT:
        return Totals(by_status, None)
    return Totals(by_status, await _sums(engine, query, catalog))


async def _sums(
    engine: AsyncEngine, query: Query, catalog: Catalog
) -> dict[tuple[str, str, str | None], tuple[Decimal, int]]:
    amounts: dict[tuple[str, str, str | None], Decimal] = defaultdict(Decimal)
    counted: Counter[tuple[str, str, str | None]] = Counter()
    statement = select(*_MONEY_COLUMNS).where(*query.conditions())
    async with engine.connect() as connection:
        rows = await connection.stream(statement.execution_options(yield_per=_BATCH))
        async for row in rows:
            if (money := _money_of_row(row, catalog)) is not None:
                key = (row.status, row.kind, money.currency)
                amounts[key] += money.amount
                counted[key] += 1
    return {key: (total, counted[key]) for key, total in sorted(amounts.items(), key=_order)}


def _money_of_row(row: Any, catalog: Catalog) -> Money | None:
    # A settled action never changes, so neither does its money: read each once. (The
    # kind's input model checks every text of the input, the dearest step of a sum.)
    if row.id in _money_seen:
        return _money_seen[row.id]
    found = _money(catalog, row.kind, json.loads(row.input), row.diff, row.result)
    if row.status not in _FINAL_VALUES:
        return found
    if len(_money_seen) >= _MONEY_SEEN_MAX:
        _money_seen.clear()  # crude, but bounded; the next sums read them again
    _money_seen[row.id] = found
    return found


def _order(item: tuple[tuple[str, str, str | None], Decimal]) -> tuple[str, str, str]:
    status, kind, currency = item[0]
    return status, kind, currency or ""


def money_of(entry: Entry, catalog: Catalog) -> Money | None:
    """The amount the action's contract says is at stake, with the currency it was in.

    None when the kind carries no money, is no longer configured, or its stored input no
    longer reads as the kind's input.
    """
    return _money(catalog, entry.kind, entry.input, entry.diff, entry.result)


def _money(catalog: Catalog, kind_name: str, data: Any, diff: Any, result: Any) -> Money | None:
    # `diff` and `result` as stored (JSON text) or read (dicts): decoded only when the
    # input names no currency.
    kind = catalog.get(kind_name)
    if kind is None or not isinstance(data, dict):
        return None
    try:
        amount = kind.amount(kind.Input.model_validate(data))
    except ValidationError:
        return None
    if amount is None:
        return None
    return Money(amount, currency_in(data, lambda: _decoded(diff), lambda: _decoded(result)))


def _decoded(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def currency_in(
    data: Mapping[str, Any], diff: Callable[[], Any], result: Callable[[], Any]
) -> str | None:
    """The currency named by the input, else by the record's after/before, else the result."""
    if isinstance(found := data.get("currency"), str):
        return found
    changes = diff() or {}
    candidates = (
        (changes.get("after"), changes.get("before"), result())
        if isinstance(changes, Mapping)
        else (result(),)
    )
    for values in candidates:
        if isinstance(values, Mapping) and isinstance(found := values.get("currency"), str):
            return found
    return None


def masked_input(entry: Entry, catalog: Catalog) -> dict[str, Any]:
    """The entry's input with its personal data hidden, whoever is looking."""
    return catalog.masked(entry.kind, entry.input) or {}


async def current_statuses(engine: AsyncEngine, action_ids: Iterable[str]) -> dict[str, Status]:
    """Each action's status now, for events that recorded an earlier one."""
    wanted = sorted(set(action_ids))
    if not wanted:
        return {}
    statement = select(actions.c.id, actions.c.status).where(actions.c.id.in_(wanted))
    async with engine.connect() as connection:
        return {row.id: Status(row.status) for row in await connection.execute(statement)}


async def _approvals(
    connection: AsyncConnection, action_ids: list[str]
) -> dict[str, tuple[Approval, ...]]:
    if not action_ids:
        return {}
    statement = (
        select(approvals)
        .where(approvals.c.action_id.in_(action_ids))
        .order_by(approvals.c.action_id, approvals.c.at)
    )
    found: dict[str, list[Approval]] = defaultdict(list)
    for row in await connection.execute(statement):
        found[row.action_id].append(
            Approval(
                row.approver,
                row.verdict,
                row.comment,
                row.input_digest,
                row.policy_version,
                _utc(row.at),
            )
        )
    return {action_id: tuple(verdicts) for action_id, verdicts in found.items()}


def _entry(row: Any, verdicts: tuple[Approval, ...]) -> Entry:
    values = dict(row._mapping)
    for name in ("input", "diff", "result"):
        values[name] = None if values[name] is None else json.loads(values[name])
    values["input"] = values["input"] or {}
    for name in ("created_at", "updated_at", "expires_at"):
        values[name] = None if values[name] is None else _utc(values[name])
    return Entry(**{**values, "status": Status(values["status"])}, approvals=verdicts)


def _key(cursor: Cursor) -> Any:
    # Typed as the columns, so SQLite compares the time in the text form it stores.
    return tuple_(
        bindparam("cursor_at", _utc(cursor.created_at), type_=actions.c.created_at.type),
        bindparam("cursor_id", cursor.id, type_=actions.c.id.type),
    )


def _utc(value: datetime) -> datetime:
    # SQLite hands back the naive UTC wall time that was stored; PostgreSQL an aware one.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# ---- exports ------------------------------------------------------------------------------

# What one export line or CSV row holds, in this order.
LEDGER_COLUMNS = (
    "action_id",
    "requested_at",
    "kind",
    "requester",
    "on_behalf_of",
    "channel",
    "target",
    "amount",
    "currency",
    "decision",
    "rule",
    "reason",
    "approvals_required",
    "approvals",
    "status",
    "settled_at",
    "last_change_at",
    "expires_at",
    "trace_id",
    "input",
)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def record(entry: Entry, catalog: Catalog) -> dict[str, Any]:
    """One action as an export holds it: JSON values, personal data masked."""
    money = money_of(entry, catalog)
    return {
        "action_id": entry.id,
        "requested_at": entry.created_at.isoformat(),
        "kind": entry.kind,
        "requester": entry.principal,
        "on_behalf_of": entry.on_behalf_of,
        "channel": entry.channel,
        "target": entry.target,
        "amount": None if money is None else str(money.amount),
        "currency": None if money is None else money.currency,
        "decision": entry.decision,
        "rule": entry.rule,
        "reason": entry.reason,
        "approvals_required": entry.approvals_required,
        "approvals": [
            {
                "approver": verdict.approver,
                "verdict": verdict.verdict,
                "comment": verdict.comment,
                "at": verdict.at.isoformat(),
                "counts": entry.counts(verdict),
            }
            for verdict in entry.approvals
        ],
        "status": entry.status.value,
        "settled_at": None if entry.settled_at is None else entry.settled_at.isoformat(),
        "last_change_at": entry.updated_at.isoformat(),
        "expires_at": None if entry.expires_at is None else entry.expires_at.isoformat(),
        "trace_id": entry.trace_id,
        "input": masked_input(entry, catalog),
    }


def written(records: list[dict[str, Any]], fmt: ExportFormat) -> str:
    """Records as a JSONL text, or a CSV text with a header row."""
    out = io.StringIO()
    if fmt == "jsonl":
        for values in records:
            print(canonical_json(values), file=out)
        return out.getvalue()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(LEDGER_COLUMNS)
    for values in records:
        writer.writerow([_cell(values[name]) for name in LEDGER_COLUMNS])
    return out.getvalue()


def _cell(value: Any) -> str:
    # Lists and objects (approvals, input) as JSON in one cell; nothing as an empty cell.
    if value is None:
        return ""
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    text = str(value)
    # A spreadsheet runs a cell that starts like a formula; targets and comments are typed
    # by agents and people, so such a cell is opened as text (OWASP's CSV injection advice).
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text

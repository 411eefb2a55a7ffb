"""The ledger's questions to the gateway's database (gateway/actions/ledger.py), on SQLite
and PostgreSQL: keyset pages both ways (ties on the creation time included), filters,
search, totals."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from gateway.actions import ledger, store
from gateway.actions.ledger import Cursor, Query
from gateway.actions.store import Action, Approval, Status
from gateway.database import actions, create_engine, create_schema
from gateway.services import Services
from tests.factories import POSTGRES_URL, drop_schema, new_schema_name, require_postgres

START = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """The gateway's database with its schema: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        built = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}")
        await create_schema(built)
        yield built
        await built.dispose()
        return
    require_postgres()
    schema = new_schema_name()
    admin = create_async_engine(POSTGRES_URL)
    async with admin.begin() as connection:
        await connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    await admin.dispose()
    built = create_async_engine(
        POSTGRES_URL, connect_args={"server_settings": {"search_path": schema}}
    )
    try:
        await create_schema(built)
        yield built
    finally:
        await built.dispose()
        await asyncio.to_thread(drop_schema, POSTGRES_URL, schema)


def _action(
    minute: int,
    *,
    kind: str = "inventory.adjust",
    status: Status = Status.APPLIED,
    principal: str = "restock-bot",
    on_behalf_of: str | None = "olivia",
    target: str = "InventoryItem:SKU-0001",
    data: dict[str, object] | None = None,
) -> Action:
    at = START + timedelta(minutes=minute)
    return Action(
        id=str(uuid.uuid4()),
        kind=kind,
        status=status,
        principal=principal,
        on_behalf_of=on_behalf_of,
        channel="graphql",
        input=data or {"sku": "SKU-0001", "location": "WH-BER", "delta": 5, "reason": "count"},
        input_digest="digest",
        target=target,
        expected_version=None,
        decision="allow",
        rule="RULE",
        reason="because",
        policy_version="p1",
        approvals_required=0,
        validation=[],
        diff=None,
        result=None,
        error=None,
        idempotency_key=None,
        trace_id=uuid.uuid4().hex,
        revision=1,
        created_at=at,
        updated_at=at,
        expires_at=None,
    )


async def _store(engine: AsyncEngine, *actions: Action, approver: str | None = None) -> None:
    async with engine.begin() as connection:
        for action in actions:
            prelude = store.inserting(action)
            await connection.execute(prelude.statement, prelude.params)
            if approver is not None:
                verdict = Approval(approver, "approve", "ok", "digest", "p1", action.created_at)
                await store.add_approval(connection, action.id, verdict)


async def _ids(
    engine: AsyncEngine, query: Query | None = None, **paging: Cursor | None
) -> list[str]:
    found = await ledger.page(engine, query or Query(), limit=50, **paging)
    return [entry.id for entry in found.entries]


async def test_pages_both_ways_through_ties_on_the_creation_time(engine: AsyncEngine) -> None:
    actions = [_action(minute) for minute in (0, 1, 1, 1, 2, 3, 3)]  # ties: same moment
    await _store(engine, *actions)
    newest = sorted(actions, key=lambda a: (a.created_at, a.id), reverse=True)
    expected = [a.id for a in newest]

    first = await ledger.page(engine, Query(), limit=3)
    second = await ledger.page(engine, Query(), limit=3, after=first.older)
    third = await ledger.page(engine, Query(), limit=3, after=second.older)
    back = await ledger.page(engine, Query(), limit=3, before=third.newer)
    again = await ledger.page(engine, Query(), limit=3, before=back.newer)

    pages = [[e.id for e in p.entries] for p in (first, second, third, back, again)]
    assert pages == [expected[:3], expected[3:6], expected[6:], expected[3:6], expected[:3]]
    assert (first.newer, third.older, again.newer) == (None, None, None)
    assert again.older == first.older


async def test_cursor_from_a_link_finds_the_same_place(engine: AsyncEngine) -> None:
    actions = [_action(minute) for minute in range(4)]
    await _store(engine, *actions)
    first = await ledger.page(engine, Query(), limit=2)
    assert first.older is not None
    parsed = Cursor.parse(first.older.token())
    assert await _ids(engine, after=parsed) == [actions[1].id, actions[0].id]


async def test_who_matches_requester_or_the_person_an_agent_acted_for(
    engine: AsyncEngine,
) -> None:
    agents = _action(0)
    olivias = _action(1, principal="olivia", on_behalf_of=None)
    finns = _action(2, principal="finn", on_behalf_of=None)
    await _store(engine, agents, olivias, finns)
    assert await _ids(engine, Query(who="olivia")) == [olivias.id, agents.id]
    assert await _ids(engine, Query(who="restock-bot")) == [agents.id]


async def test_approver_filter_finds_what_they_decided(engine: AsyncEngine) -> None:
    approved, other = _action(0), _action(1)
    await _store(engine, approved, approver="finn")
    await _store(engine, other)
    assert await _ids(engine, Query(approver="finn")) == [approved.id]
    (entry,) = (await ledger.page(engine, Query(approver="finn"), limit=5)).entries
    assert [v.approver for v in entry.approvals] == ["finn"]
    assert entry.counts(entry.approvals[0])


async def test_search_by_id_trace_or_part_of_target(engine: AsyncEngine) -> None:
    a = _action(0, target="InventoryItem:SKU-0001")
    b = _action(1, target="Balance:C-00001_x")
    await _store(engine, a, b)
    assert await _ids(engine, Query(search=a.id.upper())) == [a.id]
    assert await _ids(engine, Query(search=b.trace_id)) == [b.id]
    assert await _ids(engine, Query(search="sku-0001")) == [a.id]
    assert await _ids(engine, Query(search="%")) == []  # wildcards are plain characters
    assert await _ids(engine, Query(search="C-00001_")) == [b.id]
    assert await _ids(engine, Query(search="C-0000_")) == []  # "_" is no wildcard either


async def test_kind_status_and_period(engine: AsyncEngine) -> None:
    early, late = _action(0), _action(60 * 24, status=Status.REJECTED)
    await _store(engine, early, late)
    since = START + timedelta(days=1)
    assert await _ids(engine, Query(since=since)) == [late.id]
    assert await _ids(engine, Query(until=since)) == [early.id]
    assert await _ids(engine, Query(status="REJECTED", kind="inventory.adjust")) == [late.id]
    assert await _ids(engine, Query(kind="payment.record")) == []


def _payment(minute: int, amount: str, currency: str, status: Status) -> Action:
    data = {"customer_id": "C-1", "amount": amount, "currency": currency, "reference": "r"}
    return _action(minute, kind="payment.record", status=status, data=data)


async def test_totals_count_by_status_and_sum_by_status_kind_currency(
    engine: AsyncEngine, services: Services
) -> None:
    await _store(
        engine,
        _payment(0, "0.10", "EUR", Status.APPLIED),
        _payment(1, "0.20", "EUR", Status.APPLIED),
        _payment(2, "5.00", "CHF", Status.APPLIED),
        _payment(3, "7.00", "EUR", Status.REJECTED),
        _action(4),
    )
    totals = await ledger.totals(engine, Query(), catalog=services.catalog)
    assert totals.by_status == {"APPLIED": 4, "REJECTED": 1}
    assert totals.sums == {
        ("APPLIED", "payment.record", "CHF"): (Decimal("5.00"), 1),
        ("APPLIED", "payment.record", "EUR"): (Decimal("0.30"), 2),
        ("REJECTED", "payment.record", "EUR"): (Decimal("7.00"), 1),
    }


async def test_totals_of_an_action_still_moving_follow_its_changes(
    engine: AsyncEngine, services: Services
) -> None:
    data = {"customer_id": "C-1", "order_id": "SO-1", "amount": "9.00", "reason": "late"}
    credit = _action(0, kind="credit_note.issue", status=Status.RECEIVED, data=data)
    await _store(engine, credit)
    before = await ledger.totals(engine, Query(), catalog=services.catalog)
    diff = {"before": {"currency": "EUR"}, "after": {"currency": "EUR"}}
    async with engine.begin() as connection:
        await connection.execute(
            actions.update()
            .where(actions.c.id == credit.id)
            .values(status="APPLIED", diff=json.dumps(diff))
        )
    after = await ledger.totals(engine, Query(), catalog=services.catalog)
    assert before.sums == {("RECEIVED", "credit_note.issue", None): (Decimal("9.00"), 1)}
    assert after.sums == {("APPLIED", "credit_note.issue", "EUR"): (Decimal("9.00"), 1)}


async def test_totals_past_the_limit_sum_nothing_rather_than_part(
    engine: AsyncEngine, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger, "SUM_LIMIT", 2)
    await _store(engine, *(_payment(m, "1.00", "EUR", Status.APPLIED) for m in range(3)))
    totals = await ledger.totals(engine, Query(), catalog=services.catalog)
    assert totals.count == 3
    assert totals.sums is None


async def test_current_statuses_of_the_actions_asked_for(engine: AsyncEngine) -> None:
    a, b = _action(0), _action(1, status=Status.PENDING_APPROVAL)
    await _store(engine, a, b)
    found = await ledger.current_statuses(engine, [a.id, b.id, a.id, "unknown"])
    assert found == {a.id: Status.APPLIED, b.id: Status.PENDING_APPROVAL}
    assert await ledger.current_statuses(engine, []) == {}


def test_page_after_and_before_at_once_is_refused() -> None:
    cursor = Cursor(START, str(uuid.uuid4()))
    with pytest.raises(ValueError, match="not both"):
        asyncio.run(ledger.page(None, Query(), limit=1, after=cursor, before=cursor))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "token", ["", "abc", "12", "12.", "x.0e4d3f1a-0000-0000-0000-000000000000", "1.not-a-uuid"]
)
def test_cursor_that_is_no_place_is_refused(token: str) -> None:
    with pytest.raises(ledger.BadCursor):
        Cursor.parse(token)

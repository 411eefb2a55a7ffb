"""The audit trail on SQLite and PostgreSQL: chaining, tamper detection, query, export, CLI."""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import bindparam, delete, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from gateway import audit
from gateway.audit import EXPORT_COLUMNS, AuditEvent, AuditTrail, Prelude, StoredEvent
from gateway.database import GENESIS_HASH, audit_events, audit_head, create_engine, create_schema
from tests.factories import POSTGRES_URL, drop_schema, new_schema_name, require_postgres

START = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
REPO_ROOT = Path(__file__).resolve().parent.parent


def minute_clock() -> Callable[[], datetime]:
    """A clock that moves one minute on every reading, from START."""
    minutes = itertools.count()
    return lambda: START + timedelta(minutes=next(minutes))


def audit_event(**changes: Any) -> AuditEvent:
    """An agent's applied stock adjustment, with `changes`."""
    values: dict[str, Any] = {
        "event": "action.applied",
        "principal": "restock-agent",
        "principal_kind": "agent",
        "on_behalf_of": "olivia",
        "channel": "mcp",
        "outcome": "APPLIED",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "action_id": "6f1c1e2a-0000-4000-8000-000000000001",
        "action_kind": "inventory.adjust",
        "target": "InventoryItem:SKU-1001",
        "payload": {"input": {"delta": 5}, "amount": Decimal("0.30"), "rule": "p_agent_small"},
    }
    return AuditEvent(**{**values, **changes})


async def append_many(trail: AuditTrail, count: int) -> list[StoredEvent]:
    """`count` events appended one after another."""
    return [await trail.append(audit_event(payload={"n": n})) for n in range(count)]


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
        POSTGRES_URL,
        connect_args={"server_settings": {"search_path": schema}},
        pool_size=10,
        max_overflow=10,
    )
    try:
        await create_schema(built)
        yield built
    finally:
        await built.dispose()
        await asyncio.to_thread(drop_schema, POSTGRES_URL, schema)


@pytest.fixture
def trail(engine: AsyncEngine) -> AuditTrail:
    """An audit trail over the test database, on a clock that moves a minute per event."""
    return AuditTrail(engine, clock=minute_clock())


async def test_append_many_events_gap_free_chain_that_verifies(
    trail: AuditTrail, engine: AsyncEngine
) -> None:
    stored = await append_many(trail, 25)

    assert [event.seq for event in stored] == list(range(1, 26))
    assert stored[0].prev_hash == GENESIS_HASH
    assert all(later.prev_hash == earlier.hash for earlier, later in itertools.pairwise(stored))
    async with engine.connect() as connection:
        head = (await connection.execute(select(audit_head))).one()
    assert (head.seq, head.hash) == (25, stored[-1].hash)
    verdict = await trail.verify()
    assert (verdict.ok, verdict.events, verdict.first_bad_seq, verdict.problem) == (
        True,
        25,
        None,
        None,
    )


async def test_append_hash_is_the_chain_hash_of_any_text(trail: AuditTrail) -> None:
    # The database computes the hash on PostgreSQL: the same bytes as Python must go in,
    # whatever the payload holds (non-ASCII text, keys named like the event's own).
    payload = {"note": 'Grüße, 東京 ✓ "quoted"', "seq": 0, "nested": {"seq": 7, "target": "x"}}
    first = await trail.append(audit_event(payload=payload, target="Customer:Zoë"))
    second = await trail.append(audit_event())
    assert first is not None
    assert second is not None
    assert first.hash == audit.chain_hash(GENESIS_HASH, first.document())
    assert second.hash == audit.chain_hash(first.hash, second.document())
    assert (await trail.verify()).ok


async def test_append_after_a_change_of_no_row_appends_nothing(
    trail: AuditTrail, engine: AsyncEngine
) -> None:
    await append_many(trail, 2)
    touch = (
        update(audit_events)
        .where(audit_events.c.seq == bindparam("wanted"))
        .values(outcome=audit_events.c.outcome)
    )
    lost = await trail.append(audit_event(), prelude=Prelude(touch, {"wanted": 99}))
    changed = await trail.append(audit_event(), prelude=Prelude(touch, {"wanted": 1}))
    assert lost is None
    assert changed is not None
    assert changed.seq == 3
    async with engine.connect() as connection:
        seqs = (await connection.execute(select(audit_events.c.seq))).scalars().all()
    assert sorted(seqs) == [1, 2, 3]
    assert (await trail.verify()).ok


async def test_append_stored_event_reads_back_equal(trail: AuditTrail) -> None:
    stored = await trail.append(audit_event())

    events, _ = await trail.query(limit=1)

    assert events == [stored]
    assert stored.payload["amount"] == "0.30"  # Decimal kept exact, as text
    assert stored.at == START


async def test_append_concurrent_appends_one_chain_seqs_1_to_200(trail: AuditTrail) -> None:
    stored = await asyncio.gather(*(trail.append(audit_event()) for _ in range(200)))

    assert sorted(event.seq for event in stored) == list(range(1, 201))
    verdict = await trail.verify()
    assert verdict.ok, verdict.problem
    assert verdict.events == 200


async def test_append_in_callers_transaction_commits_or_rolls_back_with_it(
    trail: AuditTrail, engine: AsyncEngine
) -> None:
    async with engine.connect() as connection:
        await connection.begin()
        await trail.append(audit_event(outcome="ROLLED_BACK"), connection=connection)
        await connection.rollback()
    async with engine.begin() as connection:
        kept = await trail.append(audit_event(), connection=connection)

    events, _ = await trail.query(limit=10)

    assert events == [kept]
    assert kept.seq == 1
    assert (await trail.verify()).ok


async def test_verify_empty_trail_intact(trail: AuditTrail) -> None:
    verdict = await trail.verify()

    assert (verdict.ok, verdict.events) == (True, 0)


async def test_verify_more_events_than_one_batch_reads_them_all(
    trail: AuditTrail, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit, "_BATCH", 7)
    await append_many(trail, 30)

    verdict = await trail.verify()

    assert (verdict.ok, verdict.events) == (True, 30)


Tamper = Callable[[AsyncConnection], Awaitable[None]]


def edit(seq: int, /, **values: Any) -> Tamper:
    """Overwrite columns of one event."""

    async def run(connection: AsyncConnection) -> None:
        await connection.execute(
            update(audit_events).where(audit_events.c.seq == seq).values(**values)
        )

    return run


def remove(seq: int) -> Tamper:
    """Delete one event."""

    async def run(connection: AsyncConnection) -> None:
        await connection.execute(delete(audit_events).where(audit_events.c.seq == seq))

    return run


def swap_contents(a: int, b: int) -> Tamper:
    """Give two events each other's columns, all but seq."""

    async def run(connection: AsyncConnection) -> None:
        query = select(audit_events).where(audit_events.c.seq.in_([a, b]))
        rows = {row.seq: dict(row._mapping) for row in await connection.execute(query)}
        await edit(a, id="swapping")(connection)  # ids are unique
        for seq, other in ((b, a), (a, b)):
            await edit(seq, **{k: v for k, v in rows[other].items() if k != "seq"})(connection)

    return run


def renumber(a: int, b: int) -> Tamper:
    """Exchange two events' seq numbers: the rows trade places in the chain."""

    async def run(connection: AsyncConnection) -> None:
        for seq, new in ((a, -1), (b, a), (-1, b)):
            await edit(seq, seq=new)(connection)

    return run


@pytest.mark.parametrize(
    ("tamper", "first_bad_seq", "says"),
    [
        pytest.param(edit(4, payload='{"n":999}'), 4, "hash", id="payload-edited"),
        pytest.param(edit(6, outcome="DENIED"), 6, "hash", id="outcome-edited"),
        pytest.param(edit(2, payload='{"n": 1}'), 2, "canonical", id="payload-respaced"),
        pytest.param(remove(5), 5, "missing", id="middle-deleted"),
        pytest.param(remove(10), 10, "missing", id="last-deleted"),
        pytest.param(swap_contents(3, 7), 3, "prev_hash", id="contents-swapped"),
        pytest.param(renumber(3, 7), 3, "prev_hash", id="rows-reordered"),
    ],
)
async def test_verify_tampered_trail_names_first_bad_event(
    trail: AuditTrail, engine: AsyncEngine, tamper: Tamper, first_bad_seq: int, says: str
) -> None:
    stored = await append_many(trail, 10)
    async with engine.begin() as connection:
        await tamper(connection)

    verdict = await trail.verify()

    assert not verdict.ok
    assert verdict.first_bad_seq == first_bad_seq
    assert verdict.events == first_bad_seq - 1
    assert verdict.problem is not None
    assert verdict.problem.startswith(f"event seq={first_bad_seq} ")
    assert says in verdict.problem
    if says in ("hash", "canonical"):  # edited in place: named by its own id
        assert f"id={stored[first_bad_seq - 1].id}:" in verdict.problem


async def seed_mixed(trail: AuditTrail) -> list[StoredEvent]:
    """Twelve events: three principals, two action kinds, some denied, a minute apart."""
    principals = [("restock-agent", "agent"), ("olivia", "human"), ("shop", "service")]
    stored = []
    for n in range(12):
        principal, kind = principals[n % 3]
        event = audit_event(
            principal=principal,
            principal_kind=kind,
            action_kind=["inventory.adjust", "order.place"][n % 2],
            action_id=f"action-{n % 6}",
            outcome="DENIED" if n % 4 == 3 else "APPLIED",
            payload={"n": n},
        )
        stored.append(await trail.append(event))
    return stored


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"principal": "olivia"}, [1, 4, 7, 10]),
        ({"principal_kind": "service"}, [2, 5, 8, 11]),
        ({"action_kind": "order.place"}, [1, 3, 5, 7, 9, 11]),
        ({"outcome": "DENIED"}, [3, 7, 11]),
        ({"action_id": "action-2"}, [2, 8]),
        ({"since": START + timedelta(minutes=3), "until": START + timedelta(minutes=6)}, [3, 4, 5]),
        ({"principal": "restock-agent", "action_kind": "inventory.adjust"}, [0, 6]),
    ],
)
async def test_query_filters_only_matching_events_oldest_first(
    trail: AuditTrail, filters: dict[str, Any], expected: list[int]
) -> None:
    await seed_mixed(trail)

    events, has_more = await trail.query(limit=50, **filters)

    assert [event.payload["n"] for event in events] == expected
    assert not has_more


async def test_query_pages_by_after_seq_until_no_more(trail: AuditTrail) -> None:
    await seed_mixed(trail)
    pages, after, more = [], None, True

    while more:
        events, more = await trail.query(limit=5, after_seq=after)
        pages.append([event.seq for event in events])
        after = events[-1].seq

    assert pages == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10], [11, 12]]


async def test_query_naive_since_value_error(trail: AuditTrail) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        await trail.query(since=datetime(2025, 3, 1), limit=1)  # noqa: DTZ001


async def test_export_jsonl_round_trips_every_field_and_hash(trail: AuditTrail) -> None:
    stored = await seed_mixed(trail)
    out = io.StringIO()

    count = await trail.export(out, format="jsonl")

    lines = out.getvalue().splitlines()
    assert count == len(lines) == 12
    records = [json.loads(line) for line in lines]
    assert [StoredEvent.from_record(record) for record in records] == stored
    assert all(set(record) == set(EXPORT_COLUMNS) for record in records)
    assert all(
        StoredEvent.from_record(record).computed_hash() == record["hash"] for record in records
    )
    assert all(
        later["prev_hash"] == earlier["hash"] for earlier, later in itertools.pairwise(records)
    )


async def test_export_csv_header_and_rows_match_events(trail: AuditTrail) -> None:
    stored = await seed_mixed(trail)
    out = io.StringIO()

    count = await trail.export(out, format="csv")

    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert count == len(rows) == 12
    assert tuple(rows[0]) == EXPORT_COLUMNS
    for row, event in zip(rows, stored, strict=True):
        assert int(row["seq"]) == event.seq
        assert (row["id"], row["principal"], row["hash"]) == (event.id, event.principal, event.hash)
        assert datetime.fromisoformat(row["at"]) == event.at
        assert json.loads(row["payload"]) == event.payload


@pytest.mark.parametrize("format_", ["jsonl", "csv"])
@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"since": START + timedelta(minutes=2), "until": START + timedelta(minutes=5)}, [2, 3, 4]),
        ({"principal": "shop"}, [2, 5, 8, 11]),
        ({"action_kind": "inventory.adjust"}, [0, 2, 4, 6, 8, 10]),
    ],
)
async def test_export_filters_only_matching_events(
    trail: AuditTrail, format_: audit.ExportFormat, filters: dict[str, Any], expected: list[int]
) -> None:
    await seed_mixed(trail)
    out = io.StringIO()

    count = await trail.export(out, format=format_, **filters)

    if format_ == "jsonl":
        payloads = [json.loads(line)["payload"] for line in out.getvalue().splitlines()]
    else:
        payloads = [
            json.loads(row["payload"]) for row in csv.DictReader(io.StringIO(out.getvalue()))
        ]
    assert [payload["n"] for payload in payloads] == expected
    assert count == len(expected)


async def test_export_more_events_than_one_batch_writes_them_all(
    trail: AuditTrail, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit, "_BATCH", 5)
    await append_many(trail, 12)
    out = io.StringIO()

    count = await trail.export(out, format="jsonl")

    assert count == 12
    assert [json.loads(line)["seq"] for line in out.getvalue().splitlines()] == list(range(1, 13))


# The CLI, as a separate process over a SQLite file.


@pytest.fixture
async def database_file(tmp_path: Path) -> Path:
    """A SQLite gateway database holding ten chained events."""
    path = tmp_path / "gateway.db"
    built = create_engine(f"sqlite+aiosqlite:///{path}")
    await create_schema(built)
    await append_many(AuditTrail(built, clock=minute_clock()), 10)
    await built.dispose()
    return path


async def gatehouse(*args: str) -> tuple[int, str, str]:
    """Run `python -m gateway ARGS`; its exit status, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        *args,
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


def url(path: Path) -> str:
    """The SQLAlchemy URL of a SQLite file."""
    return f"sqlite+aiosqlite:///{path}"


async def test_cli_verify_intact_trail_exit_0(database_file: Path) -> None:
    status, stdout, _ = await gatehouse("audit", "verify", "--database-url", url(database_file))

    assert status == 0
    assert stdout.strip() == "audit trail intact: 10 events"


async def test_cli_verify_tampered_trail_exit_1_names_seq(database_file: Path) -> None:
    built = create_engine(url(database_file))
    async with built.begin() as connection:
        await edit(4, outcome="DENIED")(connection)
    await built.dispose()

    status, stdout, stderr = await gatehouse(
        "audit", "verify", "--database-url", url(database_file)
    )

    assert status == 1
    assert stdout == ""
    assert stderr.startswith("audit trail BROKEN at event seq=4 id=")
    assert len(stderr.splitlines()) == 1


async def test_cli_export_bad_since_exit_2_one_line(database_file: Path) -> None:
    status, stdout, stderr = await gatehouse(
        "audit", "export", "--format", "jsonl", "--since", "notadate",
        "--database-url", url(database_file),
    )  # fmt: skip

    assert status == 2
    assert stdout == ""
    assert stderr.splitlines() == [
        "gatehouse: --since: 'notadate' is not an ISO 8601 date or time"
        " (2025-01-31 or 2025-01-31T09:00:00+01:00)"
    ]


async def test_cli_verify_missing_database_file_exit_2(tmp_path: Path) -> None:
    status, _, stderr = await gatehouse("audit", "verify", "--database-url", url(tmp_path / "x.db"))

    assert status == 2
    assert "no database file" in stderr
    assert "Traceback" not in stderr
    assert not (tmp_path / "x.db").exists()


async def test_cli_export_csv_to_file_filtered_by_principal_and_period(
    database_file: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out.csv"

    status, stdout, stderr = await gatehouse(
        "audit", "export", "--format", "csv", "--principal", "restock-agent",
        "--since", "2025-03-01T09:02", "--until", "2025-03-01T10:04+01:00",
        "--output", str(output), "--database-url", url(database_file),
    )  # fmt: skip

    assert (status, stdout) == (0, "")
    assert stderr.strip() == "gatehouse: exported 2 events"
    with output.open(encoding="utf-8", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [json.loads(row["payload"])["n"] for row in rows] == [2, 3]


async def test_cli_export_records_the_copy_in_the_trail_which_still_verifies(
    database_file: Path, tmp_path: Path
) -> None:
    status, _, _ = await gatehouse(
        "audit", "export", "--format", "jsonl", "--principal", "restock-agent",
        "--output", str(tmp_path / "out.jsonl"), "--database-url", url(database_file),
    )  # fmt: skip

    assert status == 0
    built = create_engine(url(database_file))
    events, _ = await AuditTrail(built).query(limit=1, newest_first=True)
    verified = await AuditTrail(built).verify()
    await built.dispose()
    (event,) = events
    assert (event.event, event.channel, event.outcome) == ("audit.exported", "cli", "EXPORTED")
    assert event.payload["filters"] == {"principal": "restock-agent"}
    assert event.payload["rows"] == 10  # every event of the file is restock-agent's
    assert event.payload["output"] == str(tmp_path / "out.jsonl")
    assert event.payload["os_user"]
    assert (verified.ok, verified.events) == (True, 11)


async def test_query_newest_first_before_a_seq(trail: AuditTrail) -> None:
    await append_many(trail, 6)

    newest, more = await trail.query(limit=2, newest_first=True)
    older, _ = await trail.query(limit=2, newest_first=True, before_seq=newest[-1].seq)

    assert [e.seq for e in newest] == [6, 5]
    assert more
    assert [e.seq for e in older] == [4, 3]


def test_canonical_json_sorted_compact_exact() -> None:
    value = {"b": Decimal("0.10"), "a": [START, "é"], "c": None}

    assert (
        audit.canonical_json(value) == '{"a":["2025-03-01T09:00:00+00:00","é"],"b":"0.10","c":null}'
    )

"""Cost of one audit append as the trail grows: 1,000 events against 100,000.

    python -m tests.bench.bench_audit [--appends N] [--small N] [--large N] [--rounds R]
                                      [--no-postgres]

For each backend (a SQLite file; a fresh schema on the PostgreSQL server at 127.0.0.1:5432,
skipped when it is unreachable) two trails are filled fast, with bulk inserts of rows chained
in Python, to --small and --large events. Then --appends appends are timed one at a time
through `AuditTrail.append`, interleaved over a few rounds between the two trails so that
noise on a shared machine lands on both alike. Finally the large trail is verified end to
end, which also proves the bulk-filled chain is sound.

    target: median append at --large / median at --small <= 1.5 (flat: no scans)

Not part of the test run; exits 1 when the target is missed or a trail does not verify.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from gateway.audit import AuditEvent, AuditTrail, StoredEvent
from gateway.database import audit_events, audit_head, create_engine, create_schema
from tests.factories import POSTGRES_URL, postgres_reachable

RATIO_TARGET = 1.5  # median append at the large trail over the small one, at most
FILL_CHUNK = 5000  # rows per executemany
START = datetime(2025, 1, 1, tzinfo=UTC)


def sample_event(n: int) -> AuditEvent:
    """A realistic applied write: masked input, decision, before/after."""
    return AuditEvent(
        event="action.applied",
        principal="restock-agent",
        principal_kind="agent",
        on_behalf_of="olivia",
        channel="mcp",
        outcome="APPLIED",
        trace_id=uuid.uuid4().hex,
        action_id=str(uuid.uuid4()),
        action_kind="inventory.adjust",
        target=f"InventoryItem:SKU-{n % 5000:05d}",
        payload={
            "input": {"sku": f"SKU-{n % 5000:05d}", "location": "DC-1", "delta": n % 17 - 8},
            "decision": {"effect": "allow", "rule": "p_agent_small_adjust"},
            "validation": [],
            "before": {"on_hand": 120, "version": f"v{n}"},
            "after": {"on_hand": 120 + n % 17 - 8, "version": f"v{n + 1}"},
        },
    )


@dataclass
class Timings:
    """Append latencies in seconds for one backend and trail size."""

    backend: str
    size: int
    seconds: list[float] = field(default_factory=list)

    def micros(self, p: int) -> float:
        """The p-th percentile in microseconds."""
        return statistics.quantiles(self.seconds, n=100, method="inclusive")[p - 1] * 1e6


async def fill(engine: AsyncEngine, count: int) -> float:
    """Extend the trail by `count` pre-chained events with bulk inserts; seconds taken."""
    started = time.perf_counter()
    async with engine.begin() as connection:
        seq, prev_hash = (await connection.execute(audit_head.select())).one()[1:]
        for chunk_start in range(0, count, FILL_CHUNK):
            rows = []
            for _ in range(min(FILL_CHUNK, count - chunk_start)):
                seq += 1
                at = START + timedelta(seconds=seq)
                stored = StoredEvent.seal(
                    sample_event(seq), seq=seq, prev_hash=prev_hash, id=str(uuid.uuid4()), at=at
                )
                rows.append(stored.as_row())
                prev_hash = stored.hash
            await connection.execute(audit_events.insert(), rows)
        await connection.execute(
            audit_head.update().where(audit_head.c.id == 1).values(seq=seq, hash=prev_hash)
        )
    return time.perf_counter() - started


async def time_appends(trail: AuditTrail, timings: Timings, count: int) -> None:
    """Append `count` events one at a time, recording each one's latency."""
    for n in range(count):
        event = sample_event(n)
        started = time.perf_counter()
        await trail.append(event)
        timings.seconds.append(time.perf_counter() - started)


@asynccontextmanager
async def sqlite_engine(directory: Path, name: str) -> AsyncIterator[AsyncEngine]:
    """The gateway's engine over a new SQLite file."""
    engine = create_engine(f"sqlite+aiosqlite:///{directory / name}.db")
    try:
        yield engine
    finally:
        await engine.dispose()


@asynccontextmanager
async def postgres_engine(url: str) -> AsyncIterator[AsyncEngine]:
    """An engine like the gateway's, confined to a fresh schema that is dropped afterwards."""
    schema = f"gh_bench_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(url)
    async with admin.begin() as connection:
        await connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = create_async_engine(
        url,
        connect_args={"server_settings": {"search_path": schema}},
        pool_size=10,
        max_overflow=10,
        pool_pre_ping=True,
    )
    try:
        yield engine
    finally:
        await engine.dispose()
        async with admin.begin() as connection:
            await connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()


async def measure(
    backend: str, small: AsyncEngine, large: AsyncEngine, args: argparse.Namespace
) -> tuple[Timings, Timings, bool]:
    """Fill both trails, time appends on each in interleaved rounds, verify the large one."""
    for engine, size in ((small, args.small), (large, args.large)):
        await create_schema(engine)
        seconds = await fill(engine, size)
        print(f"{backend}: filled {size:,} events in {seconds:.1f} s", flush=True)
    timings = (Timings(backend, args.small), Timings(backend, args.large))
    trails = (AuditTrail(small), AuditTrail(large))
    for _ in range(args.rounds):
        for trail, timing in zip(trails, timings, strict=True):
            await time_appends(trail, timing, args.appends // args.rounds)
    started = time.perf_counter()
    verdict = await trails[1].verify()
    print(
        f"{backend}: verify of {verdict.events:,} events took {time.perf_counter() - started:.1f} s"
        f" -> {'intact' if verdict.ok else verdict.problem}",
        flush=True,
    )
    return *timings, verdict.ok


async def run(args: argparse.Namespace) -> tuple[list[tuple[Timings, Timings]], bool]:
    """Every backend's timings, and whether every trail verified."""
    results, intact = [], True
    with tempfile.TemporaryDirectory(prefix="gatehouse-bench-audit-") as directory:
        async with (
            sqlite_engine(Path(directory), "small") as small,
            sqlite_engine(Path(directory), "large") as large,
        ):
            small_t, large_t, ok = await measure("sqlite", small, large, args)
            results.append((small_t, large_t))
            intact &= ok
    if args.postgres and postgres_reachable():
        async with (
            postgres_engine(args.postgres_url) as small,
            postgres_engine(args.postgres_url) as large,
        ):
            small_t, large_t, ok = await measure("postgresql", small, large, args)
            results.append((small_t, large_t))
            intact &= ok
    elif args.postgres:
        print("postgresql: unreachable on 127.0.0.1:5432, skipped", flush=True)
    return results, intact


def report(results: list[tuple[Timings, Timings]], args: argparse.Namespace) -> bool:
    """Print the table and the command; True when every backend meets the target."""
    small, large = f"@{args.small:,}", f"@{args.large:,}"
    print(
        f"\nappend cost, microseconds ({args.appends} appends per cell)\n"
        f"{'backend':<11} {'median ' + small:>15} {'median ' + large:>15} {'ratio':>6}"
        f" {'p95 ' + small:>13} {'p95 ' + large:>13} {'ratio':>6}"
    )
    ok = True
    for low, high in results:
        median_ratio = high.micros(50) / low.micros(50)
        p95_ratio = high.micros(95) / low.micros(95)
        ok &= median_ratio <= RATIO_TARGET
        print(
            f"{low.backend:<11} {low.micros(50):>15.0f} {high.micros(50):>15.0f}"
            f" {median_ratio:>6.2f} {low.micros(95):>13.0f} {high.micros(95):>13.0f}"
            f" {p95_ratio:>6.2f}"
        )
    print(
        f"\ntarget: median ratio <= {RATIO_TARGET}  {'PASS' if ok else 'FAIL'}\n"
        "Reproduce from the repository root with:\n"
        f"  python -m tests.bench.bench_audit --appends {args.appends} --small {args.small}"
        f" --large {args.large} --rounds {args.rounds}{'' if args.postgres else ' --no-postgres'}"
    )
    return ok


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--appends", type=int, default=500, help="timed per cell (500)")
    parser.add_argument("--small", type=int, default=1_000, help="small trail (1,000)")
    parser.add_argument("--large", type=int, default=100_000, help="large trail (100,000)")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds (10)")
    parser.add_argument("--no-postgres", dest="postgres", action="store_false")
    parser.add_argument("--postgres-url", default=POSTGRES_URL)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.appends < 2 * args.rounds or args.small < 0:
        parser.error("need --rounds >= 1, --appends >= 2 x --rounds, --small >= 0")
    args.appends -= args.appends % args.rounds
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    results, intact = asyncio.run(run(args))
    ok = report(results, args)
    print(f"total {time.monotonic() - started:.1f} s")
    return 0 if ok and intact else 1


if __name__ == "__main__":
    sys.exit(main())

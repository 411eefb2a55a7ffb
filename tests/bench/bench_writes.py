"""Governed write throughput next to the same write made directly through the connector.

    python -m tests.bench.bench_writes [--writes N] [--concurrency C] [--rounds R]
                                       [--no-postgres]

For each backend (SQLite files; a fresh database on the PostgreSQL server at 127.0.0.1:5432,
skipped when it is unreachable) the demo ERP is seeded afresh and the gateway's services are
built in this process and started as the app's lifespan starts them (on PostgreSQL that
includes the listener for evictions announced by other replicas; everywhere, the renewal of
in-flight actions' leases). Four scenarios, each with one writer and with --concurrency
writers, interleaved over a few rounds so that noise on a shared machine lands on all of
them alike:

    direct      SqlConnector.transaction() running the guarded relative UPDATE of
                stock_levels that sources/demo/actions/inventory.py executes: one
                transaction, nothing journaled
    bare        the governed write's statements alone, one after another, through the calls
                the pipeline makes them with: idempotency.claim of a stored action's row
                (with its key and its lease, lease_until set); in one ERP transaction
                (SqlConnector.unit), SqlConnector.read, the UPDATE and the journal insert
                (SqlConnector.record_effect); AuditTrail.append of its APPLIED event with
                store.saving (the lease cleared), announcing the eviction: what the round
                trips cost before any of the pipeline's own steps
    governed    Writes.submit(inventory.adjust) as olivia with an idempotency key, APPLIED,
                through the action bound to the ERP in the catalog: three commits: the key
                claimed with the action under a lease (one statement); one ERP transaction
                reading the record fresh, making the UPDATE and journaling the action's id
                with its effect; the outcome with its audit event, the lease released (and,
                on PostgreSQL, the eviction announced to other replicas: one statement there)
    dry run     the same with dryRun: no key claimed and nothing stored before the outcome
                (a dry run changes nothing), no UPDATE, no journal row

Each writer adjusts its own (sku, location) by +1 and -1 in turn, so stock stays put and
writers do not queue on one row; the governed writers still share the audit chain's head.

    targets: governed writes/s >= 0.9 x bare writes/s, for each backend and writer count
             (the pipeline's own steps take at most a tenth off what its statements allow);
             on PostgreSQL, governed writes/s >= 0.3 x direct writes/s, at each writer count

"cpu ms" is this process's CPU time per write: the gateway runs on one core, so when it
nears the p50 latency the scenario is bound by Python work rather than by the database,
and it is steadier than wall time when the machine is shared.

Not part of the test run; exits 1 when a target is missed, a write failed, or an audit
trail does not verify. The databases, files and the CRM process are removed on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import os
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta

from sqlalchemy import Update, and_, update
from sqlalchemy.exc import SQLAlchemyError

from gateway import idempotency, invalidation
from gateway.actions import store
from gateway.actions.store import Status
from gateway.app import build_services, start
from gateway.audit import AuditEvent
from gateway.config import load_config
from gateway.demo import CONFIG_TEMPLATE, DemoEstate
from gateway.errors import GatehouseError
from gateway.invalidation import Listener
from gateway.outcomes import WriteRequest
from gateway.services import Services
from gateway.settings import Settings
from sources.demo import build_estate, create_erp
from sources.demo.actions.erp import tables, utcnow
from sources.errors import SourceError
from sources.sql import SqlConnector, single_statement_engine
from tests.bench import bench_estate
from tests.factories import POSTGRES_URL, fresh_postgres_database, postgres_reachable

KIND = "inventory.adjust"
BARE_TARGET = 0.9  # governed writes/s over bare writes/s, at least, on every backend
DIRECT_TARGET = 0.3  # governed writes/s over direct writes/s, at least, on DIRECT_TARGETED
DIRECT_TARGETED = frozenset({"postgresql"})
PRINCIPAL = "olivia"  # ops-manager: adjustments up to 1000 units apply without review
WARM_UP = 20  # writes per scenario and writer count before measuring


class WriteFailed(Exception):
    """A benchmark write that did not end as it should have."""


# (writer number, +1 or -1) -> one write
Write = Callable[[int, int], Awaitable[None]]


@dataclass
class Result:
    """What one scenario measured at one writer count, summed over the rounds."""

    backend: str
    scenario: str
    writers: int
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    cpu: float = 0.0  # process CPU seconds spent while the scenario ran
    errors: int = 0
    first_error: str | None = None

    @property
    def writes(self) -> int:
        return len(self.latencies) + self.errors

    @property
    def rate(self) -> float:
        """Completed writes per second over the time the scenario ran."""
        return len(self.latencies) / self.elapsed if self.elapsed else float("nan")

    @property
    def cpu_ms(self) -> float:
        """Process CPU time per completed write, in milliseconds."""
        return self.cpu / len(self.latencies) * 1000 if self.latencies else float("nan")

    @property
    def p50(self) -> float:
        """Median latency in milliseconds."""
        return statistics.median(self.latencies) * 1000 if self.latencies else float("nan")


async def measure(result: Result, write: Write, count: int, writers: int) -> None:
    """Run `count` writes over `writers` workers; add their timings to `result`."""
    indices = itertools.count()

    async def worker(writer: int) -> None:
        sign = 1
        while next(indices) < count:
            started = time.perf_counter()
            try:
                await write(writer, sign)
            except (WriteFailed, SourceError, GatehouseError, SQLAlchemyError) as exc:
                result.errors += 1
                result.first_error = result.first_error or f"{type(exc).__name__}: {exc}"
                continue
            result.latencies.append(time.perf_counter() - started)
            sign = -sign

    gc.collect()  # each slice starts without the garbage of the one before
    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker(writer) for writer in range(writers)))
    result.elapsed += time.perf_counter() - started
    result.cpu += time.process_time() - cpu


def targets(count: int) -> list[tuple[str, str]]:
    """(sku, location) pairs with stock to spare above what is reserved, one per writer."""
    levels = [lv for lv in build_estate().stock_levels if lv.on_hand - lv.reserved >= 10]
    if len(levels) < count:
        raise RuntimeError(f"the demo estate has only {len(levels)} stock levels to adjust")
    return [(level.sku, level.location) for level in levels[:count]]


async def scenarios(services: Services, places: list[tuple[str, str]]) -> dict[str, Write]:
    """The four ways to make the write, by name."""
    erp = services.catalog.source(KIND)  # the ERP's connector, as the action is bound to it
    if not isinstance(erp, SqlConnector):
        raise RuntimeError(f"{KIND} is bound to {type(erp).__name__}, not to the SQL ERP")
    levels = tables(erp)["stock_levels"]
    principal = services.authenticator.principal(PRINCIPAL)
    if principal is None:
        raise RuntimeError(f"the demo configuration has no principal {PRINCIPAL}")
    run = uuid.uuid4().hex[:8]
    keys = itertools.count()

    def adjusting(sku: str, location: str, delta: int) -> Update:
        return (  # as sources.demo.actions.inventory.AdjustInventory.execute builds it
            update(levels)
            .where(
                and_(
                    levels.c.sku == sku,
                    levels.c.location == location,
                    levels.c.on_hand + delta >= levels.c.reserved,
                )
            )
            .values(on_hand=levels.c.on_hand + delta, updated_at=utcnow())
            .returning(levels.c.on_hand, levels.c.reserved)
        )

    async def direct(writer: int, delta: int) -> None:
        sku, location = places[writer]
        async with erp.transaction() as connection:
            if (await connection.execute(adjusting(sku, location, delta))).first() is None:
                raise WriteFailed(f"{sku} at {location}: the guarded UPDATE matched no row")

    # What "bare" repeats: one governed write's action and its APPLIED audit event.
    sku, location = places[0]
    first = await services.writes.submit(
        WriteRequest(
            KIND,
            {"sku": sku, "location": location, "delta": 1, "reason": "benchmark"},
            idempotency_key=f"bench-{run}-template",
        ),
        principal,
    )
    if first.action is None or first.status is not Status.APPLIED:
        raise RuntimeError(f"the template write did not apply: {first.errors}")
    template = first.action
    applied = (await services.audit.query(action_id=template.id, limit=9))[0][-1]
    single_statements = single_statement_engine(services.engine)
    ttl = timedelta(seconds=services.config.writes.idempotency_ttl)
    leases = services.writes.leases

    async def bare(writer: int, delta: int) -> None:
        sku, location = places[writer]
        now = utcnow()
        action = replace(  # as Writes._claim stores it: in flight, under this process's lease
            template,
            id=str(uuid.uuid4()),
            status=Status.RECEIVED,
            revision=1,
            idempotency_key=f"bench-{run}-{next(keys)}",
            key_held_until=now + ttl,
            lease_until=leases.until(),
            result=None,
        )
        leases.hold(action.id)
        try:
            async with single_statements.connect() as connection:
                claim = await idempotency.claim(connection, store.row(action), now=now)
            if not claim.won:
                raise WriteFailed(f"bench key of action {action.id} held by {claim.action_id}")
            async with erp.unit() as source:  # one ERP transaction: the plan's read, the write
                if await source.read("InventoryItem", sku) is None:
                    raise WriteFailed(f"{sku}: not found")
                async with source.transaction() as connection:
                    row = (await connection.execute(adjusting(sku, location, delta))).first()
                if row is None:  # rolls the ERP transaction back, as Invalid does
                    raise WriteFailed(f"{sku} at {location}: the guarded UPDATE matched no row")
                result = {"on_hand": row.on_hand, "available": row.on_hand - row.reserved}
                await source.record_effect(action.id, result)
            saved = replace(
                action,
                status=Status.APPLIED,
                revision=2,
                updated_at=utcnow(),
                result=result,
                lease_until=None,
            )
            change = invalidation.announcing(
                store.saving(action, saved), [("InventoryItem", sku)], services.engine.dialect.name
            )
            event = AuditEvent(**{f.name: getattr(applied, f.name) for f in fields(AuditEvent)})
            audited = replace(event, action_id=action.id)
            if await services.audit.append(audited, prelude=change) is None:
                raise WriteFailed(f"action {action.id}: the outcome changed no row")
        finally:
            leases.release(action.id)

    def governed(dry_run: bool) -> Write:
        expected = Status.DRY_RUN if dry_run else Status.APPLIED

        async def write(writer: int, delta: int) -> None:
            sku, location = places[writer]
            request = WriteRequest(
                kind=KIND,
                input={"sku": sku, "location": location, "delta": delta, "reason": "benchmark"},
                channel="console",
                idempotency_key=f"bench-{run}-{next(keys)}",
                dry_run=dry_run,
            )
            result = await services.writes.submit(request, principal)
            if result.status is not expected:
                raise WriteFailed(f"{result.status.value}: {result.errors}")

        return write

    return {"direct": direct, "bare": bare, "governed": governed(False), "dry run": governed(True)}


async def bench_backend(
    backend: str, services: Services, args: argparse.Namespace
) -> tuple[list[Result], str | None]:
    """Every scenario at 1 and --concurrency writers; the results and any audit problem."""
    places = targets(args.concurrency)
    writes = await scenarios(services, places)
    counts = sorted({1, args.concurrency})
    results = {
        (name, writers): Result(backend, name, writers) for writers in counts for name in writes
    }
    for name, writers in results:
        warm = Result(backend, "warm-up", writers)
        await measure(warm, writes[name], WARM_UP, writers)
        if warm.errors:
            raise RuntimeError(f"{backend} {name} warm-up failed: {warm.first_error}")
    share, extra = divmod(args.writes, args.rounds)
    names = list(writes)
    for round_ in range(args.rounds):
        # Each round starts one scenario further on, so that none always runs right after
        # the same other one, paying for what that one left the database to do.
        turn = round_ % len(names)
        for writers in counts:
            for name in names[turn:] + names[:turn]:
                await measure(
                    results[name, writers], writes[name], share + (round_ < extra), writers
                )
        print(f"{backend}: round {round_ + 1}/{args.rounds} done", flush=True)
    verdict = await services.audit.verify()
    problem = None if verdict.ok else verdict.problem
    print(f"{backend}: audit trail of {verdict.events} events {problem or 'intact'}", flush=True)
    return list(results.values()), problem


@asynccontextmanager
async def built(
    config_env: dict[str, str], erp_url: str, database_url: str
) -> AsyncIterator[Services]:
    """The gateway's services over the demo configuration with the ERP at `erp_url`, started."""
    config = load_config(CONFIG_TEMPLATE, environ={**config_env, "GATEHOUSE_ERP_URL": erp_url})
    services = build_services(Settings(database_url=database_url), config)
    renewals: asyncio.Task[None] | None = None
    try:
        await start(services)
        renewals = asyncio.create_task(services.writes.leases.renew_forever())
        async with Listener(services.engine, services.reads).running():
            yield services
    finally:
        if renewals is not None:
            renewals.cancel()
        await services.close()


@asynccontextmanager
async def postgres_database(url: str) -> AsyncIterator[str]:
    """A fresh database seeded with the demo ERP, dropped afterwards; its URL."""
    async with fresh_postgres_database("gh_bench_writes", url) as database_url:
        await create_erp(database_url, build_estate())
        yield database_url


async def run(estate: DemoEstate, args: argparse.Namespace) -> tuple[list[Result], list[str]]:
    """Every backend's results, and the audit problems found."""
    env = {**os.environ, **estate.environ()}
    results: list[Result] = []
    problems: list[str] = []
    # SQLite: the estate's freshly seeded ERP file, and a new gateway database file.
    gateway_db = f"sqlite+aiosqlite:///{estate.state_dir.resolve() / 'gatehouse.db'}"
    async with built(env, estate.erp_url, gateway_db) as services:
        found, problem = await bench_backend("sqlite", services, args)
        results += found
        problems += [f"sqlite: {problem}"] if problem else []
    if args.postgres and postgres_reachable():
        # PostgreSQL: one fresh database holding the ERP and the gateway's own tables.
        async with (
            postgres_database(args.postgres_url) as url,
            built(env, url, url) as services,
        ):
            found, problem = await bench_backend("postgresql", services, args)
            results += found
            problems += [f"postgresql: {problem}"] if problem else []
    elif args.postgres:
        print("postgresql: unreachable on 127.0.0.1:5432, skipped", flush=True)
    return results, problems


def report(results: list[Result], args: argparse.Namespace) -> bool:
    """Print the table, the targets and the command; True when every target is met."""
    direct = {(r.backend, r.writers): r for r in results if r.scenario == "direct"}
    bare = {(r.backend, r.writers): r for r in results if r.scenario == "bare"}
    print(
        f"\n{'backend':<11} {'writers':>7}  {'scenario':<9} {'writes':>6} {'errors':>6}"
        f" {'p50 ms':>7} {'cpu ms':>7} {'writes/s':>9} {'/direct':>8} {'/bare':>6}  targets"
    )
    ok = True
    for result in results:
        by_direct = result.rate / direct[result.backend, result.writers].rate
        by_bare = result.rate / bare[result.backend, result.writers].rate
        verdicts = []
        if result.scenario == "governed":
            passed = by_bare >= BARE_TARGET
            ok &= passed
            verdicts.append(f"/bare >= {BARE_TARGET:.1f} {'PASS' if passed else 'FAIL'}")
            if result.backend in DIRECT_TARGETED:
                passed = by_direct >= DIRECT_TARGET
                ok &= passed
                verdicts.append(f"/direct >= {DIRECT_TARGET:.1f} {'PASS' if passed else 'FAIL'}")
        print(
            f"{result.backend:<11} {result.writers:>7}  {result.scenario:<9} {result.writes:>6}"
            f" {result.errors:>6} {result.p50:>7.2f} {result.cpu_ms:>7.2f} {result.rate:>9.1f}"
            f" {by_direct:>8.2f} {by_bare:>6.2f}  {'; '.join(verdicts)}"
        )
    for result in results:
        if result.errors:
            ok = False
            print(f"{result.backend} {result.scenario} x{result.writers}: {result.first_error}")
    print(
        f"\ntargets: governed writes/s >= {BARE_TARGET} x bare writes/s on each backend, and"
        f" >= {DIRECT_TARGET} x direct writes/s on PostgreSQL  {'PASS' if ok else 'FAIL'}\n"
        f"{args.rounds} interleaved rounds, {os.cpu_count()} CPUs."
        " Reproduce from the repository root with:\n"
        f"  python -m tests.bench.bench_writes --writes {args.writes}"
        f" --concurrency {args.concurrency} --rounds {args.rounds}"
        f"{'' if args.postgres else ' --no-postgres'}"
    )
    return ok


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--writes", type=int, default=400, help="per scenario and count (400)")
    parser.add_argument("--concurrency", type=int, default=4, help="concurrent writers (4)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    parser.add_argument("--no-postgres", dest="postgres", action="store_false")
    parser.add_argument("--postgres-url", default=POSTGRES_URL)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.concurrency < 1 or args.writes < args.rounds:
        parser.error("need --rounds >= 1, --concurrency >= 1 and --writes >= --rounds")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    try:
        with bench_estate("gatehouse-bench-writes-") as estate:
            results, problems = asyncio.run(run(estate, args))
    except KeyboardInterrupt:
        print("interrupted; the database is dropped and the CRM stopped", file=sys.stderr)
        return 130
    ok = report(results, args)
    for problem in problems:
        print(f"audit trail BROKEN: {problem}")
    print(f"total {time.monotonic() - started:.1f} s")
    return 0 if ok and not problems else 1


if __name__ == "__main__":
    sys.exit(main())

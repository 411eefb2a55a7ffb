"""Governed reads and writes over Tryton next to the same JSON-RPC made directly.

    python -m tests.bench.bench_tryton [--rounds R] [--n N]

A seeded Tryton on PostgreSQL (a fresh copy of the seed's template database, made once
per seed as the tests make it) is served by trytond in a child process; the gateway's
services are built in this process over tryton.toml, with their own store in a fresh
PostgreSQL database, and started as the app's lifespan starts them (lease renewal, the
listener for evictions). Calls are made one at a time and timed one by one, interleaved
call by call: a cycle makes one call of every scenario, in a shuffled order; a round is
N cycles, and there are R rounds, so that noise on a shared machine, and what one call
leaves Tryton or PostgreSQL to do, lands on every scenario alike.

    Customer C-00001, InventoryItem SKU-1001
      direct        TrytonRpc, its own client and session, sending what the connector
                    sends for one read: party.party / product.product search_read with
                    the connector's fields, domain and order; for InventoryItem also one
                    product.product read of its quantities per warehouse, with
                    {"locations": [warehouse]} as context (the warehouses and the
                    company's currency, which the connector reads once and keeps,
                    are not read again by either)
      read-through  services.reads.get(entity, key, max_age=0): always goes to Tryton
      graphql       customer(id, maxAge: 0) / inventoryItem(sku, maxAge: 0) with the
                    entity's fields, executed on the schema with a real context
                    (no HTTP), as olivia
      cached        services.reads.get(entity, key), served from the cache (which
                    the read-through calls of each cycle keep fresh)

    order.place: C-00004 (no credit limit), 1 x SKU-1003 (stock topped up beforehand)
      direct        the calls PlaceOrder.execute makes (sources/tryton_estate/actions/
                    orders.py, through its own helpers): sale.sale default_get, create
                    (party, invoice and shipment address, one line with product,
                    quantity, unit, unit price), quote, confirm, and the read of the
                    placed sale's number, state and total; the party and product looked
                    up once beforehand, as a client knowing its ids would
      governed      submit(services, "order.place", ...) as olivia, APPLIED: the
                    action claimed and stored, the plan's reads (balance, party,
                    product), policy, the same execute, the outcome and its audit event
      plan reads    PlaceOrder.plan alone through the bound connector (for information:
                    the share of the governed write's time its plan's reads take)

    targets (from the issue), on p50 latency:
      read-through <= 1.2 x direct, for Customer and for InventoryItem
      governed order.place <= 1.2 x direct (default_get, create, quote, confirm, read)

GraphQL, cached and plan ratios are printed for information. "cpu ms" is this process's CPU
time per call (the gateway and the direct client; trytond runs in its own process).

Not part of the test run; exits 1 when a target is missed or a call failed (a write
Tryton or the gateway refuses stops the run). The Tryton server is stopped and its
database and the gateway's database dropped on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

from gateway.actions.store import Status
from gateway.app import start
from gateway.graphql.context import Context
from gateway.graphql.schema import build_schema
from gateway.invalidation import Listener
from gateway.services import Services
from sources.actions import Plan
from sources.ordertocash import OrderLineInput
from sources.tryton.connector import COMPANY, WAREHOUSE, TrytonConnector, _paths
from sources.tryton.rpc import TrytonRpc
from sources.tryton_estate.actions.orders import (
    _PLACED,
    _placed,
    _priced,
    _product,
    _sale_values,
)
from sources.tryton_estate.actions.tryton import read_one
from sources.tryton_estate.server import (
    TrytonServer,
    copy_postgres_template,
    drop_postgres_database,
    seeded_postgres_template,
)
from tests.bench import unwind_on_sigterm
from tests.factories import fresh_postgres_database, postgres_reachable, services_for, submit
from tests.tryton.conftest import PG_SERVER
from tests.tryton.estate import PASSWORD, USER, tryton_config, tryton_environ

PRINCIPAL = "olivia"  # ops-manager: orders and adjustments up to 1000 units apply
CUSTOMER, SKU = "C-00001", "SKU-1001"
ORDER_CUSTOMER, ORDER_SKU = "C-00004", "SKU-1003"  # no credit limit; 400 units in stock
ORDER = {"customer_id": ORDER_CUSTOMER, "lines": [{"sku": ORDER_SKU, "quantity": 1}]}
WAREHOUSE_CODE = "WH"
STOCK_MARGIN = 50  # units left over once every order of the run is placed
ADJUSTMENT_LIMIT = 1000  # units olivia may adjust at once without review
WARM_UP = 5  # calls per scenario before measuring
SHUFFLE_SEED = 20240611  # the order of calls within each cycle: random, and the same each run
TARGET = 1.2  # read-through and governed p50 over direct p50, at most

CUSTOMER_QUERY = (
    "query($id: ID!) { customer(id: $id, maxAge: 0) { id name email phone"
    " contacts { name email role } freshness { cached } } }"
)
INVENTORY_QUERY = (
    "query($sku: ID!) { inventoryItem(sku: $sku, maxAge: 0) { sku name description active"
    " unitPrice { amount currency } levels { location onHand available } freshness { cached } } }"
)


class CallFailed(Exception):
    """A benchmark call that did not get the answer it should have."""


Call = Callable[[], Awaitable[None]]


@dataclass
class Result:
    """What one scenario measured, over every round."""

    group: str
    name: str
    latencies: list[float] = field(default_factory=list)
    round_medians: list[float] = field(default_factory=list)
    cpu: float = 0.0  # this process's CPU seconds while the scenario ran

    def percentile(self, p: int) -> float:
        """The p-th percentile latency in milliseconds."""
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[p - 1] * 1000

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies) * 1000

    @property
    def cpu_ms(self) -> float:
        return self.cpu / len(self.latencies) * 1000


@dataclass(frozen=True)
class Scenario:
    """A named call to repeat."""

    result: Result
    call: Call


async def timed(scenario: Scenario, latencies: list[float]) -> None:
    """Make one call; add its latency to `latencies` and its CPU time to the result."""
    cpu, started = time.process_time(), time.perf_counter()
    try:
        await scenario.call()
    except Exception as exc:
        where = f"{scenario.result.group} {scenario.result.name}"
        raise CallFailed(f"{where}: {type(exc).__name__}: {exc}") from exc
    latencies.append(time.perf_counter() - started)
    scenario.result.cpu += time.process_time() - cpu


async def measure(every: Sequence[Scenario], cycles: int, order: random.Random) -> None:
    """`cycles` times, one call of every scenario in a shuffled order; one round's timings.

    Interleaving call by call puts every scenario next to every other alike, so neither
    a noisy neighbour on the machine nor what one call leaves the database to do lands
    on one scenario more than on another.
    """
    latencies: dict[int, list[float]] = {index: [] for index in range(len(every))}
    indices = list(latencies)
    for _ in range(cycles):
        gc.collect()  # each cycle starts without the garbage of the one before
        order.shuffle(indices)
        for index in indices:
            await timed(every[index], latencies[index])
    for index, scenario in enumerate(every):
        scenario.result.latencies += latencies[index]
        scenario.result.round_medians.append(statistics.median(latencies[index]) * 1000)


# Reads.


def direct_read(rpc: TrytonRpc, connector: TrytonConnector, entity: str, key: str) -> Call:
    """The JSON-RPC the connector sends to read `key`, sent by `rpc` (see its `_rows`)."""
    mapping = connector._entities[entity]
    fields = [p for p in _paths(mapping) if not p.startswith(f"{COMPANY}.")]
    per_warehouse = [
        [f.at for f in child.fields if not f.at.startswith("warehouse.")]
        for child in mapping.children
        if child.at == WAREHOUSE
    ]
    domain = [(mapping.key_at, "in", [key]), *mapping.domain]
    order = [(mapping.key_at, "ASC")]

    async def call() -> None:
        rows = await rpc.search_read(mapping.model, domain, fields, order=order)
        if len(rows) != 1:
            raise CallFailed(f"{entity} {key}: {len(rows)} rows")
        for own in per_warehouse:
            for warehouse in await connector.warehouses():  # read once, as the connector does
                context = {"locations": [warehouse["id"]]}
                await rpc.read(mapping.model, [rows[0]["id"]], own, context=context)

    return call


def gateway_read(services: Services, entity: str, key: str, *, cached: bool) -> Call:
    """services.reads.get, read through (max_age=0) or from the cache."""

    async def call() -> None:
        entry = await services.reads.get(entity, key, max_age=None if cached else 0)
        if entry is None:
            raise CallFailed(f"{entity} {key} not found")
        if entry.freshness.cached is not cached:
            raise CallFailed(f"{entity} {key}: cached is {entry.freshness.cached}")

    return call


def graphql_read(services: Services, query: str, variables: dict[str, Any]) -> Call:
    """One GraphQL document executed as `run_query` does, the schema built once."""
    schema = build_schema(services.config.limits, services.catalog.kinds())
    principal = services.authenticator.principal(PRINCIPAL)
    if principal is None:
        raise RuntimeError(f"the configuration has no principal {PRINCIPAL}")

    async def call() -> None:
        context = Context(services=services, principal=principal)
        result = await schema.execute(query, variable_values=variables, context_value=context)
        if result.errors or not result.data or None in result.data.values():
            raise CallFailed(f"{result.errors or result.data}")

    return call


def read_scenarios(
    services: Services, rpc: TrytonRpc, group: str, entity: str, key: str, query: str
) -> list[Scenario]:
    """direct, read-through, graphql and cached for one entity's record."""
    connector = services.reads.connector(entity)
    if not isinstance(connector, TrytonConnector):
        raise RuntimeError(f"{entity} is read by {type(connector).__name__}, not by Tryton")
    variable = "id" if entity == "Customer" else "sku"
    return [
        Scenario(Result(group, "direct"), direct_read(rpc, connector, entity, key)),
        Scenario(Result(group, "read-through"), gateway_read(services, entity, key, cached=False)),
        Scenario(
            Result(group, "graphql maxAge: 0"), graphql_read(services, query, {variable: key})
        ),
        Scenario(Result(group, "cached"), gateway_read(services, entity, key, cached=True)),
    ]


# Writes.


async def direct_order(rpc: TrytonRpc) -> Call:
    """PlaceOrder.execute's calls, made by `rpc` for ORDER's party and product."""
    source = TrytonConnector("direct", rpc=rpc, entities=())
    plan = Plan(None, None, None, None)
    party = await read_one(source, "party.party", [("code", "=", ORDER_CUSTOMER)], ["addresses"])
    line = OrderLineInput(sku=ORDER_SKU, quantity=1)
    product = await _product(source, line.sku)
    if party is None or product is None:
        raise RuntimeError(f"the Tryton estate lacks {ORDER}")
    plan.context = {"party": party, "lines": [{**_priced(line, product), "quantity": 1}]}
    references = (f"bench-{uuid.uuid4().hex[:8]}-{n}" for n in itertools.count())

    async def call() -> None:
        sale = await _sale_values(source, plan, next(references))
        (sale_id,) = await rpc.create("sale.sale", [sale])
        await rpc.execute("sale.sale", "quote", [sale_id])
        await rpc.execute("sale.sale", "confirm", [sale_id])
        placed = await _placed(source, sale_id)
        if placed["status"] not in _PLACED:
            raise CallFailed(f"sale {sale_id} is {placed['status']}")

    return call


def order_plan(services: Services) -> Call:
    """PlaceOrder.plan alone, through the bound connector: the reads governance adds."""
    implementation = services.catalog.get("order.place")
    if implementation is None:
        raise RuntimeError("the configuration has no order.place")
    data = implementation.Input.model_validate(ORDER)
    source = services.catalog.source("order.place")

    async def call() -> None:
        async with source.unit() as unit:
            plan = await implementation.plan(data, unit)
        if plan.problems:
            raise CallFailed(f"order.place plan: {plan.problems}")

    return call


def governed_order(services: Services) -> Call:
    """order.place through the pipeline as olivia; APPLIED or CallFailed."""

    async def call() -> None:
        result = await submit(services, "order.place", ORDER, principal=PRINCIPAL)
        if result.status is not Status.APPLIED:
            raise CallFailed(f"{result.status.value}: {result.errors}")

    return call


async def top_up(services: Services, orders: int) -> None:
    """Stock of the ordered SKU enough for `orders` one-unit orders, through inventory.adjust."""
    sku = ORDER_SKU
    entry = await services.reads.get("InventoryItem", sku, max_age=0)
    if entry is None:
        raise RuntimeError(f"the Tryton estate has no {sku}")
    (level,) = [lv for lv in entry.record.data["levels"] if lv["location"] == WAREHOUSE_CODE]
    missing = orders + STOCK_MARGIN - level["available"]
    while missing > 0:
        delta = min(missing, ADJUSTMENT_LIMIT)
        data = {"sku": sku, "location": WAREHOUSE_CODE, "delta": delta, "reason": "benchmark"}
        result = await submit(services, "inventory.adjust", data, principal=PRINCIPAL)
        if result.status is not Status.APPLIED:
            raise RuntimeError(f"topping up {sku}: {result.status.value}: {result.errors}")
        missing -= delta
    print(f"{sku}: {level['available']} available, enough for {orders} orders", flush=True)


# The run.


async def scenarios(services: Services, rpc: TrytonRpc) -> list[Scenario]:
    """Every scenario, grouped by what is read or written."""
    order = "order.place"
    return [
        *read_scenarios(
            services, rpc, f"Customer {CUSTOMER}", "Customer", CUSTOMER, CUSTOMER_QUERY
        ),
        *read_scenarios(
            services, rpc, f"InventoryItem {SKU}", "InventoryItem", SKU, INVENTORY_QUERY
        ),
        Scenario(Result(order, "direct"), await direct_order(rpc)),
        Scenario(Result(order, "governed"), governed_order(services)),
        Scenario(Result(order, "plan reads only"), order_plan(services)),
    ]


async def bench(services: Services, rpc: TrytonRpc, args: argparse.Namespace) -> list[Result]:
    """Warm up, then every scenario over the rounds, interleaved."""
    await rpc.login()
    every = await scenarios(services, rpc)
    writers = sum(
        s.result.name in ("direct", "governed") for s in every if s.result.group == "order.place"
    )
    await top_up(services, writers * (WARM_UP + args.n * args.rounds))
    for entity, key in (("Customer", CUSTOMER), ("InventoryItem", SKU)):
        await services.reads.get(entity, key, max_age=0)  # cached before the first cycle
    order = random.Random(SHUFFLE_SEED)
    await measure(every, WARM_UP, order)
    for scenario in every:
        scenario.result.latencies.clear()
        scenario.result.round_medians.clear()
        scenario.result.cpu = 0.0
    for round_ in range(args.rounds):
        await measure(every, args.n, order)
        print(f"round {round_ + 1}/{args.rounds} done", flush=True)
    return [scenario.result for scenario in every]


@asynccontextmanager
async def governed(server: TrytonServer) -> AsyncIterator[Services]:
    """The gateway's services over tryton.toml for `server`, started as the app starts them."""
    os.environ.update(tryton_environ(server))  # the source's password is read from there
    async with fresh_postgres_database("gh_bench_tryton") as database_url:
        services = services_for(tryton_config(server), database_url)
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


async def run(server: TrytonServer, args: argparse.Namespace) -> list[Result]:
    """The gateway and a direct client over `server`; every scenario's results."""
    async with (
        governed(server) as services,
        TrytonRpc(
            "direct", url=server.url, database=server.database.name, user=USER, password=PASSWORD
        ) as rpc,
    ):
        return await bench(services, rpc, args)


@contextmanager
def tryton_server() -> Iterator[TrytonServer]:
    """trytond over a fresh copy of the seeded template; the copy dropped afterwards."""
    started = time.monotonic()
    template = seeded_postgres_template(PG_SERVER, password=PASSWORD)
    name = f"gh_bench_tryton_{uuid.uuid4().hex[:10]}"
    database = copy_postgres_template(PG_SERVER, template, name)
    try:
        with TrytonServer.start(database) as server:
            print(f"Tryton up in {time.monotonic() - started:.1f} s; measuring", flush=True)
            yield server
    finally:
        drop_postgres_database(PG_SERVER, name)


def report(results: list[Result], args: argparse.Namespace) -> bool:
    """Print the table and the ratios; True when every target is met."""
    print(
        f"\n{'scenario':<40} {'calls':>5} {'p50 ms':>8} {'p90 ms':>8}"
        f" {'round p50s ms':>15} {'cpu ms':>7} {'/direct':>8}"
    )
    direct = {r.group: r for r in results if r.name == "direct"}
    for result in results:
        spread = f"{min(result.round_medians):.2f}-{max(result.round_medians):.2f}"
        print(
            f"{result.group + '  ' + result.name:<40} {len(result.latencies):>5}"
            f" {result.p50:>8.2f} {result.percentile(90):>8.2f} {spread:>15}"
            f" {result.cpu_ms:>7.2f} {result.p50 / direct[result.group].p50:>8.2f}"
        )
    ok = True
    print()
    for result in results:
        targeted = result.name in ("read-through", "governed")
        if not targeted and result.name not in ("graphql maxAge: 0", "plan reads only"):
            continue
        ratio = result.p50 / direct[result.group].p50
        passed = ratio <= TARGET
        ok &= passed or not targeted
        verdict = f"(target <= {TARGET})  {'PASS' if passed else 'FAIL'}" if targeted else "(info)"
        print(
            f"{result.group} {result.name} p50 / direct p50 = {result.p50:.2f} /"
            f" {direct[result.group].p50:.2f} = {ratio:.2f}  {verdict}"
        )
    print(
        f"\n{args.n} calls per scenario and round, {args.rounds} interleaved rounds,"
        f" {os.cpu_count()} CPUs. Reproduce from the repository root with:\n"
        f"  python -m tests.bench.bench_tryton --rounds {args.rounds} --n {args.n}"
    )
    return ok


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (5)")
    parser.add_argument("--n", type=int, default=20, help="calls per scenario and round (20)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.n < 2:
        parser.error("need --rounds >= 1 and --n >= 2")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not postgres_reachable():
        print("PostgreSQL on 127.0.0.1:5432 is unreachable", file=sys.stderr)
        return 1
    unwind_on_sigterm()
    started = time.monotonic()
    try:
        with tryton_server() as server:
            results = asyncio.run(run(server, args))
    except KeyboardInterrupt:
        print("interrupted; Tryton is stopped and the databases dropped", file=sys.stderr)
        return 130
    except CallFailed as failed:
        print(f"FAILED: {failed}", file=sys.stderr)
        return 1
    ok = report(results, args)
    print(f"total {time.monotonic() - started:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

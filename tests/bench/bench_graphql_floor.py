"""How close the read path comes to graphql-core's own floor, in one process.

    python -m tests.bench.bench_graphql_floor [--rounds R] [--repeat N]

Over the demo estate (ERP SQLite file, CRM process), cache warm, as `olivia`, for each
document below, CPU time per execution (medians over interleaved rounds) of:

    floor      graphql-core alone executing the same document over its own answer: the
               schema's SDL, default resolvers reading plain dicts, nothing awaited; no
               GraphQL server in Python can serve the document for less
    gateway    `schema.execute` through Gatehouse: policy, masking, freshness, cache,
               loaders, extensions, and the source round-trip a list always makes
    source     for lists, the `Reads.page` call alone (the system-of-record round-trip)

and the ratios gateway / floor and (gateway - source) / floor: how many times graphql-core's
own cost the gateway's GraphQL work is. No HTTP: `tests/bench/bench_peer.py` measures that.
Not part of the test run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from graphql import build_schema, execute_sync, parse

from gateway.app import start
from gateway.graphql.schema import build_schema as gateway_schema
from gateway.services import Services
from tests.bench import bench_estate
from tests.factories import run_query, services_for

DOCUMENTS = {
    "one record": (
        '{ inventoryItem(sku: "SKU-0001") { sku name levels { location onHand reserved '
        "available } } }"
    ),
    "nested page": (
        "{ orders(first: 50) { edges { node { id lines { lineNo sku quantity "
        "item { name } } } } } }"
    ),
}
PAGES = {"nested page": "Order"}  # the list each document reads from its source


async def _cpu(call: Callable[[], Awaitable[Any]], repeat: int) -> float:
    """CPU milliseconds per call, over `repeat` calls."""
    started = time.process_time()
    for _ in range(repeat):
        await call()
    return (time.process_time() - started) / repeat * 1000


async def measure(services: Services, rounds: int, repeat: int) -> dict[str, dict[str, float]]:
    """Median CPU ms per execution of each document, per way of serving it."""
    schema_sdl = build_schema(str(_schema(services)))
    samples: dict[str, dict[str, list[float]]] = {name: {} for name in DOCUMENTS}
    for _ in range(rounds):
        for name, document in DOCUMENTS.items():
            answer = await run_query(services, document)
            assert answer.errors is None, answer.errors
            parsed = parse(document)

            async def floor(parsed: Any = parsed, data: Any = answer.data) -> None:
                result = execute_sync(schema_sdl, parsed, root_value=data)
                assert result.errors is None, result.errors

            async def gateway(document: str = document) -> None:
                await run_query(services, document)

            ways: dict[str, Callable[[], Awaitable[Any]]] = {"floor": floor, "gateway": gateway}
            if name in PAGES:
                entity = PAGES[name]

                async def source(entity: str = entity) -> None:
                    await services.reads.page(entity, filters={}, first=50)

                ways["source"] = source
            for way, call in ways.items():
                samples[name].setdefault(way, []).append(await _cpu(call, repeat))
    return {
        name: {way: statistics.median(values) for way, values in ways.items()}
        for name, ways in samples.items()
    }


def _schema(services: Services) -> Any:
    config = services.config
    return gateway_schema(config.limits, services.catalog.kinds(), config.graphql)


def report(medians: dict[str, dict[str, float]]) -> None:
    """A Markdown table of the medians and ratios."""
    print(
        "| document | floor ms | gateway ms | source ms | gateway / floor | GraphQL work / floor |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for name, ways in medians.items():
        floor, gateway, source = ways["floor"], ways["gateway"], ways.get("source", 0.0)
        print(
            f"| {name} | {floor:.2f} | {gateway:.2f} | {source:.2f} | {gateway / floor:.1f} "
            f"| {(gateway - source) / floor:.1f} |"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args(argv)
    with bench_estate("gatehouse-bench-floor-") as estate:

        async def run() -> dict[str, dict[str, float]]:
            database = estate.state_dir / "gatehouse.db"
            services = services_for(estate.config(), f"sqlite+aiosqlite:///{database}")
            await start(services)
            try:
                return await measure(services, args.rounds, args.repeat)
            finally:
                await services.close()

        report(asyncio.run(run()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Read-path latency and throughput of the gateway over the demo estate.

    python -m tests.bench.bench_reads [--requests N] [--concurrency C] [--rounds R]

Starts the demo estate (ERP SQLite file, CRM process) and `gatehouse serve` in a separate
process, so the load generator here does not share a GIL with the server. Every scenario
runs in the same invocation, interleaved over a few rounds so that noise on a shared machine
lands on all of them alike; the targets are ratios between scenarios of this one run:

    floor          { __typename } through the whole HTTP + auth + GraphQL stack
    cached         customer(id) served from the gateway's cache
    read-through   customer(id, maxAge: 0): every request goes to the CRM
    direct         connector.read("Customer", id) against the CRM, from this process
    nested orders  orders(first: 50) with each order's customer, balance and line items

    cached req/s        >= 0.5 x floor req/s
    read-through p50    <= 1.5 x (floor p50 + direct p50)

Not part of the test run; exits 1 when a target is missed or a request failed.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from gateway.connectors import build_connectors
from gateway.demo import CONFIG_TEMPLATE, DemoEstate
from sources.errors import SourceError
from tests.bench import bench_estate

REPO_ROOT = Path(__file__).resolve().parents[2]
PRINCIPAL = "olivia"
CUSTOMER_COUNT = 50
CACHED_RATIO_TARGET = 0.5  # cached req/s over the floor's req/s, at least
READ_THROUGH_TARGET = 1.5  # read-through p50 over (floor p50 + direct p50), at most

FLOOR = "{ __typename }"
SOURCE_CALLS = "{ sources { calls } }"
CUSTOMER_IDS = f"{{ customers(first: {CUSTOMER_COUNT}) {{ edges {{ node {{ id }} }} }} }}"
CUSTOMER = "query Customer($id: ID!) { customer(id: $id) { id name } }"
CUSTOMER_FRESH = "query Customer($id: ID!) { customer(id: $id, maxAge: 0) { id name } }"
ORDERS = (
    "{ orders(first: 50) { edges { node { customer { name balance { outstanding { amount } } }"
    " lines { item { name } } } } } }"
)

# The gateway process: `gatehouse serve` for the demo configuration.
SERVE = "import sys; from gateway.cli import main; sys.exit(main(sys.argv[1:]))"
START_TIMEOUT_SECONDS = 30.0
STOP_GRACE_SECONDS = 5.0


class RequestFailed(Exception):
    """A benchmark request that did not get the answer it should have."""


Call = Callable[[int], Awaitable[None]]


@dataclass
class Result:
    """What one scenario measured, summed over the rounds."""

    name: str
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    cpu: float = 0.0  # this process's CPU seconds: is the load generator the bottleneck?
    source_calls: int = 0  # round-trips to the systems of record the scenario caused
    errors: int = 0
    first_error: str | None = None

    @property
    def requests(self) -> int:
        return len(self.latencies) + self.errors

    def percentile(self, p: int) -> float:
        """The p-th percentile latency in milliseconds (nan with no successful request)."""
        if len(self.latencies) < 2:
            return self.latencies[0] * 1000 if self.latencies else float("nan")
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[p - 1] * 1000

    @property
    def client_cpu(self) -> float:
        """The load generator's CPU use while the scenario ran, in percent of one core."""
        return 100 * self.cpu / self.elapsed if self.elapsed else float("nan")

    @property
    def rate(self) -> float:
        """Requests per second over the time the scenario ran."""
        return self.requests / self.elapsed if self.elapsed else float("nan")


async def measure(result: Result, call: Call, requests: int, concurrency: int) -> None:
    """Run `requests` calls over `concurrency` workers; add their timings to `result`."""
    indices = itertools.count()

    async def worker() -> None:
        while (index := next(indices)) < requests:
            start = time.perf_counter()
            try:
                await call(index)
            except (RequestFailed, SourceError, httpx.HTTPError) as exc:
                result.errors += 1
                result.first_error = result.first_error or f"{type(exc).__name__}: {exc}"
                continue
            result.latencies.append(time.perf_counter() - start)

    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.elapsed += time.perf_counter() - start
    result.cpu += time.process_time() - cpu


async def graphql(
    client: httpx.AsyncClient, query: str, variables: dict[str, Any] | None = None
) -> dict[str, Any]:
    """POST one GraphQL document; its `data`, or RequestFailed on any error."""
    payload: dict[str, Any] = {"query": query}
    if variables is not None:
        payload["variables"] = variables
    response = await client.post("/graphql", json=payload)
    if response.status_code != 200:
        raise RequestFailed(f"HTTP {response.status_code}: {response.text[:200]}")
    body = response.json()
    if body.get("errors") or not isinstance(body.get("data"), dict):
        raise RequestFailed(str(body.get("errors"))[:300])
    data: dict[str, Any] = body["data"]
    return data


def customer_call(client: httpx.AsyncClient, query: str, ids: Sequence[str]) -> Call:
    async def call(index: int) -> None:
        data = await graphql(client, query, {"id": ids[index % len(ids)]})
        if data.get("customer") is None:
            raise RequestFailed(f"customer {ids[index % len(ids)]} came back null")

    return call


def query_call(client: httpx.AsyncClient, query: str) -> Call:
    async def call(index: int) -> None:
        await graphql(client, query)

    return call


async def customer_ids(client: httpx.AsyncClient) -> list[str]:
    """The first CUSTOMER_COUNT customers' ids."""
    data = await graphql(client, CUSTOMER_IDS)
    ids = [str(edge["node"]["id"]) for edge in data["customers"]["edges"]]
    if len(ids) < CUSTOMER_COUNT:
        raise RuntimeError(f"the demo estate has only {len(ids)} customers")
    return ids


@dataclass(frozen=True)
class Scenario:
    """A named call to repeat, how many times, and how to count source round-trips."""

    result: Result
    call: Call
    requests: int
    source_calls: Callable[[], Awaitable[int]]


async def run(estate: DemoEstate, base_url: str, args: argparse.Namespace) -> list[Result]:
    """Warm up, then measure every scenario over the rounds, interleaved."""
    headers = {"Authorization": f"Bearer {estate.keys[PRINCIPAL]}"}
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=None)
    connectors = build_connectors(estate.config())
    crm = connectors["crm"]
    try:
        async with httpx.AsyncClient(
            base_url=base_url, headers=headers, limits=limits, timeout=30
        ) as client:
            ids = await customer_ids(client)

            async def direct(index: int) -> None:
                if await crm.read("Customer", ids[index % len(ids)]) is None:
                    raise RequestFailed(f"CRM has no customer {ids[index % len(ids)]}")

            async def gateway_source_calls() -> int:
                data = await graphql(client, SOURCE_CALLS)
                return sum(int(source["calls"]) for source in data["sources"])

            async def direct_source_calls() -> int:
                return crm.stats.calls

            def over_gateway(name: str, call: Call, requests: int) -> Scenario:
                return Scenario(Result(name), call, requests, gateway_source_calls)

            scenarios = [
                over_gateway("floor  { __typename }", query_call(client, FLOOR), args.requests),
                over_gateway(
                    "customer(id) cached", customer_call(client, CUSTOMER, ids), args.requests
                ),
                over_gateway(
                    "customer(id, maxAge: 0)",
                    customer_call(client, CUSTOMER_FRESH, ids),
                    args.requests,
                ),
                Scenario(
                    Result("direct crm.read(Customer)"), direct, args.requests, direct_source_calls
                ),
                over_gateway("nested orders(first: 50)", query_call(client, ORDERS), args.nested),
            ]
            # Warm-up: every id into the cache, connections opened, code paths exercised.
            for index in range(len(ids)):
                await scenarios[1].call(index)
            for scenario in scenarios:
                warm = Result("warm-up")
                requests = max(args.concurrency * 4, scenario.requests // 10)
                await measure(warm, scenario.call, requests, args.concurrency)
                if warm.errors:
                    raise RuntimeError(f"warm-up failed: {warm.first_error}")
            for round_ in range(args.rounds):
                for scenario in scenarios:
                    before = await scenario.source_calls()
                    share, extra = divmod(scenario.requests, args.rounds)
                    requests = share + (round_ < extra)
                    await measure(scenario.result, scenario.call, requests, args.concurrency)
                    scenario.result.source_calls += await scenario.source_calls() - before
            return [scenario.result for scenario in scenarios]
    finally:
        for connector in connectors.values():
            await connector.close()


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def gateway_process(estate: DemoEstate) -> Iterator[str]:
    """`gatehouse serve` over the demo config in a child process; yields its base URL."""
    port = free_port()
    env = {**os.environ, **estate.environ()}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(REPO_ROOT), env.get("PYTHONPATH"))))
    command = [sys.executable, "-c", SERVE, "serve", "--config", str(CONFIG_TEMPLATE)]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    with tempfile.TemporaryFile() as stderr:
        # Our own interpreter and arguments, no shell; its own session, so that a Ctrl-C
        # reaches only this process, which then stops it below.
        process = subprocess.Popen(
            command, env=env, cwd=REPO_ROOT, stderr=stderr, start_new_session=True
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_healthy(process, url, stderr)
            yield url
        finally:
            stop(process)


def wait_until_healthy(process: subprocess.Popen[bytes], url: str, stderr: IO[bytes]) -> None:
    """Poll /healthz until it answers; RuntimeError with the child's stderr if it does not."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    stop(process)
    stderr.seek(0)
    output = stderr.read().decode(errors="replace")
    raise RuntimeError(f"the gateway did not start (exit code {process.returncode}):\n{output}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate the child; kill it after the grace period."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def report(results: list[Result], args: argparse.Namespace) -> bool:
    """Print the table, the two targets and the command; True when all is well."""
    width = max(len(result.name) for result in results)
    print(
        f"\n{'scenario':<{width}}  requests  errors   p50 ms   p95 ms     req/s"
        "  source calls  client cpu"
    )
    for result in results:
        print(
            f"{result.name:<{width}}  {result.requests:>8}  {result.errors:>6}"
            f"  {result.percentile(50):>7.2f}  {result.percentile(95):>7.2f}"
            f"  {result.rate:>8.1f}  {result.source_calls:>12}  {result.client_cpu:>9.0f}%"
        )
    floor, cached, fresh, direct, _ = results
    throughput = cached.rate / floor.rate
    budget = floor.percentile(50) + direct.percentile(50)
    latency = fresh.percentile(50) / budget
    ok_throughput = throughput >= CACHED_RATIO_TARGET
    ok_latency = latency <= READ_THROUGH_TARGET
    print(
        f"\ncached req/s / floor req/s = {cached.rate:.1f} / {floor.rate:.1f} = {throughput:.2f}"
        f"  (target >= {CACHED_RATIO_TARGET})  {'PASS' if ok_throughput else 'FAIL'}"
    )
    print(
        f"read-through p50 / (floor p50 + direct p50) = {fresh.percentile(50):.2f}"
        f" / ({floor.percentile(50):.2f} + {direct.percentile(50):.2f}) = {latency:.2f}"
        f"  (target <= {READ_THROUGH_TARGET})  {'PASS' if ok_latency else 'FAIL'}"
    )
    failed = [result for result in results if result.errors]
    for result in failed:
        print(f"{result.name}: {result.errors} failed requests, first: {result.first_error}")
    print(
        f"\nconcurrency {args.concurrency}, {args.rounds} interleaved rounds,"
        f" {os.cpu_count()} CPUs. Reproduce from the repository root with:\n"
        f"  python -m tests.bench.bench_reads --requests {args.requests}"
        f" --concurrency {args.concurrency} --rounds {args.rounds} --nested {args.nested}"
    )
    return ok_throughput and ok_latency and not failed


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=800, help="per scenario (800)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent workers (8)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    parser.add_argument(
        "--nested", type=int, default=None, help="requests for nested orders (--requests / 10)"
    )
    args = parser.parse_args(argv)
    if args.nested is None:
        args.nested = max(args.requests // 10, args.rounds)
    if min(args.requests, args.concurrency, args.rounds, args.nested) < 1:
        parser.error("--requests, --concurrency, --rounds and --nested must be at least 1")
    if min(args.requests, args.nested) < args.rounds:
        parser.error("--requests and --nested must be at least --rounds")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    try:
        with bench_estate("gatehouse-bench-reads-") as estate, gateway_process(estate) as url:
            print(f"demo estate and gateway up in {time.monotonic() - started:.1f} s; measuring")
            results = asyncio.run(run(estate, url, args))
    except KeyboardInterrupt:
        print("interrupted; the gateway and the CRM are stopped", file=sys.stderr)
        return 130
    ok = report(results, args)
    print(f"total {time.monotonic() - started:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

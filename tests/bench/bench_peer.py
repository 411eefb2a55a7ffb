"""Gatehouse's reads next to PostGraphile's over the same PostgreSQL data, under wrk.

    python -m tests.bench.bench_peer [--rounds R] [--duration S] [--warmup S]
                                     [--connections 8,32] [--postgres-url URL]

Seeds the demo ERP into a fresh PostgreSQL database on 127.0.0.1:5432 (its `public` schema;
the demo CRM process runs too, since the demo configuration names it) and serves it twice:

    Gatehouse     `gatehouse serve` over the demo configuration: policy, masking, freshness
                  and the per-request access log as the demo has them, the per-principal
                  rate limits set out of the way (wrk sends thousands of operations a
                  minute); one worker (`--workers 1` when `serve` has the flag); its own
                  tables in a second fresh PostgreSQL database (as `--workers 2` needs);
                  asked as olivia, with her demo API key
    PostGraphile  5.1.5, amber preset, over the same database's `public` schema
                  (/work/shared/peer/postgraphile.sh, which installs it and Node 22 into
                  ~/.cache/gatehouse-peer on first use); no auth

and loads both with wrk (`-t2 -c8` and `-t2 -c32`, `--latency`, POSTing a JSON body from a
small Lua script that also counts answers that are not 200 or carry GraphQL errors):

    floor            { __typename }
    item cached      inventoryItem(sku: "SKU-0001") { sku name levels { location onHand
                     reserved available } }, from the gateway's cache
    item read-thru   the same with maxAge: 0: every request reads PostgreSQL
                     (PostGraphile: the same query as for "item cached")
    nested page      orders(first: 50) { edges { node { id lines { lineNo sku quantity
                     item { name } } } } }, cache-warm (asked once before measuring)
    nested page, workers
                     the same on two more gateways, `--workers 1` and `--workers 2`, neither
                     pinned to a CPU (when `gatehouse serve --help` lists the flag; all the
                     gateways share their database, as replicas do)

PostGraphile's side is itemBySku(sku) { sku name stockLevelsBySku(orderBy: LOCATION_ASC)
{ nodes { location onHand reserved } } } and allOrders(first: 50, orderBy: PRIMARY_KEY_ASC)
{ nodes { rowId orderLinesByOrderId(orderBy: LINE_NO_ASC) { nodes { lineNo sku quantity
itemBySku { name } } } } }, through the ERP's foreign keys (stock_levels.sku and
order_lines.sku -> items, order_lines.order_id -> orders). `available` is not a column: the
gateway reads the stock_positions view, which computes it, and a view has no foreign key for
PostGraphile to follow from an item; PostGraphile's answers are compared with
available = onHand - reserved. Before the rounds and after them, every query is asked of every
server once and the rows compared (order ids; per line its number, SKU, quantity and item
name; per level its location and quantities); any difference stops the run.

Interleaved over R rounds of S seconds per query, connection count and server (after a
warm-up of each), so that noise lands on all alike; the table shows medians over the rounds.
"CPU ms/req" is the user + system time of the server's process and all its descendants
(from /proc/<pid>/stat, before and after each wrk run) over the requests wrk completed:
the gateway's Python process (and its workers), PostGraphile's node process. PostgreSQL's
own CPU time, which both spend, is not counted.

CPUs: wrk is pinned (taskset) to the last CPU this process may use and both servers to the
others, so that the load generator does not take the servers' core; on a 2-CPU machine that
leaves one core to each server and one to wrk, and PostgreSQL (not pinned) shares them all.
The two gateways that compare worker counts are not pinned: workers need cores, and on a
2-CPU machine pinning would leave two workers one core between them; wrk stays on its CPU
and shares it with them (it needs little of it at the nested page's rate).

Targets (reported, not asserted), Gatehouse req/s over PostGraphile's at every connection
count: nested page >= 0.5, item cached >= 0.6, item read-thru >= 0.4, floor >= 0.4;
Gatehouse CPU per request at 32 connections <= 1.1 x at 8, per query; with `--workers`,
nested page x2 req/s >= 1.7 x one worker's. Exits 0 whatever the targets say, 1 when a
request failed (a socket error, a non-200 answer, GraphQL errors) or the servers' rows
differ. The servers and the CRM are stopped and both databases dropped on exit, Ctrl-C or
SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import make_url

from gateway.demo import DemoEstate, running_estate
from tests.bench import unwind_on_sigterm
from tests.bench.bench_reads import RequestFailed, graphql
from tests.factories import POSTGRES_URL, fresh_postgres_database
from tests.serving import demo_config, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
GATEHOUSE = Path(sys.executable).with_name("gatehouse")
PEER_SCRIPT = Path("/work/shared/peer/postgraphile.sh")
PEER_LOGS = Path(os.environ.get("PEER_CACHE", Path.home() / ".cache" / "gatehouse-peer"))
PRINCIPAL = "olivia"
SKU = "SKU-0001"
UNLIMITED = {kind: "1000000/minute" for kind in ("human", "service", "agent")}
WRK_THREADS = 2
WRK_TIMEOUT = "10s"  # a queued nested page at 32 connections is slow, not failed
PEER_START_SECONDS = 600.0  # the first start installs PostGraphile and Node from npm
START_SECONDS = 60.0  # then each server has this long to answer
STOP_GRACE_SECONDS = 5.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

RATIO_TARGETS = {"floor": 0.4, "item cached": 0.6, "item read-thru": 0.4, "nested page": 0.5}
CPU_GROWTH_TARGET = 1.1  # Gatehouse CPU/request at the most connections over at the fewest
WORKERS_TARGET = 1.7  # nested page req/s with --workers 2 over one worker's
ONE_WORKER = "gatehouse --workers 1, unpinned"
TWO_WORKERS = "gatehouse --workers 2, unpinned"

Rows = list[tuple[Any, ...]]
Data = dict[str, Any]


class RowsDiffer(Exception):
    """The servers answered the same question with different rows."""


# ---- the queries, each side's text and how to read its rows --------------------------------


@dataclass(frozen=True)
class Request:
    """One GraphQL document with its variables, and the rows its answer holds."""

    query: str
    rows: Callable[[Data], Rows]
    variables: dict[str, Any] = field(default_factory=dict)

    @property
    def body(self) -> str:
        return json.dumps({"query": self.query, "variables": self.variables})


@dataclass(frozen=True)
class Query:
    """A question put to both servers: Gatehouse's words, PostGraphile's words."""

    name: str
    gatehouse: Request
    postgraphile: Request


def typename(data: Data) -> Rows:
    return [(data["__typename"],)]


def gatehouse_item(data: Data) -> Rows:
    item = data["inventoryItem"]
    return [level_row(item, level, level["available"]) for level in item["levels"]]


def postgraphile_item(data: Data) -> Rows:
    item = data["itemBySku"]
    levels = item["stockLevelsBySku"]["nodes"]
    return [level_row(item, level, level["onHand"] - level["reserved"]) for level in levels]


def level_row(item: Data, level: Data, available: int) -> tuple[Any, ...]:
    return (
        item["sku"],
        item["name"],
        level["location"],
        level["onHand"],
        level["reserved"],
        available,
    )


def gatehouse_orders(data: Data) -> Rows:
    orders = [edge["node"] for edge in data["orders"]["edges"]]
    lines = [
        (order["id"], line["lineNo"], line["sku"], line["quantity"], line["item"]["name"])
        for order in orders
        for line in order["lines"]
    ]
    return [(order["id"],) for order in orders] + lines


def postgraphile_orders(data: Data) -> Rows:
    orders = data["allOrders"]["nodes"]
    lines = [
        (order["rowId"], line["lineNo"], line["sku"], line["quantity"], line["itemBySku"]["name"])
        for order in orders
        for line in order["orderLinesByOrderId"]["nodes"]
    ]
    return [(order["rowId"],) for order in orders] + lines


GATEHOUSE_ITEM = (
    "query Item($sku: ID!) { inventoryItem(sku: $sku%s)"
    " { sku name levels { location onHand reserved available } } }"
)
POSTGRAPHILE_ITEM = Request(
    "query Item($sku: String!) { itemBySku(sku: $sku) { sku name"
    " stockLevelsBySku(orderBy: LOCATION_ASC) { nodes { location onHand reserved } } } }",
    postgraphile_item,
    {"sku": SKU},
)
QUERIES = (
    Query("floor", Request("{ __typename }", typename), Request("{ __typename }", typename)),
    Query(
        "item cached",
        Request(GATEHOUSE_ITEM % "", gatehouse_item, {"sku": SKU}),
        POSTGRAPHILE_ITEM,
    ),
    Query(
        "item read-thru",
        Request(GATEHOUSE_ITEM % ", maxAge: 0", gatehouse_item, {"sku": SKU}),
        POSTGRAPHILE_ITEM,
    ),
    Query(
        "nested page",
        Request(
            "{ orders(first: 50) { edges { node { id"
            " lines { lineNo sku quantity item { name } } } } } }",
            gatehouse_orders,
        ),
        Request(
            "{ allOrders(first: 50, orderBy: PRIMARY_KEY_ASC) { nodes { rowId"
            " orderLinesByOrderId(orderBy: LINE_NO_ASC)"
            " { nodes { lineNo sku quantity itemBySku { name } } } } } }",
            postgraphile_orders,
        ),
    ),
)
NESTED = QUERIES[-1]


# ---- the servers ------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    """A GraphQL server under test: where it answers, and the process that is its cost."""

    name: str
    base_url: str
    pid: int
    headers: dict[str, str]
    gatehouse: bool

    def request(self, query: Query) -> Request:
        return query.gatehouse if self.gatehouse else query.postgraphile


@dataclass(frozen=True)
class Cpus:
    """taskset CPU lists: wrk's, and the servers' (None: not pinned)."""

    load: str | None
    servers: str | None


def pinned(cpus: str | None) -> list[str]:
    """The taskset prefix that keeps a command on `cpus` (none when None)."""
    return ["taskset", "-c", cpus] if cpus else []


def cpu_layout() -> Cpus:
    """wrk on the last CPU this process may use, the servers on the others."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 or shutil.which("taskset") is None:
        return Cpus(None, None)
    return Cpus(str(cpus[-1]), ",".join(map(str, cpus[:-1])))


def serve_has_workers() -> bool:
    """Whether `gatehouse serve` takes --workers."""
    usage = subprocess.run(
        [str(GATEHOUSE), "serve", "--help"], capture_output=True, text=True, check=True
    )
    return "--workers" in usage.stdout


@contextmanager
def fresh_database(url: str) -> Iterator[str]:
    """fresh_postgres_database, from synchronous code: a new database, dropped on exit."""
    database = fresh_postgres_database("gh_bench_peer", url)
    with asyncio.Runner() as runner:
        database_url = runner.run(database.__aenter__())
        try:
            yield database_url
        finally:
            runner.run(database.__aexit__(None, None, None))


@contextmanager
def gatehouse_server(
    estate: DemoEstate,
    database_url: str,
    workers: int | None,
    cpus: str | None,
    name: str = "gatehouse",
) -> Iterator[Server]:
    """`gatehouse serve` over the demo config with rate limits out of the way, its own tables
    at `database_url`, in its own session; `workers` passed as --workers unless None."""
    port = free_port()
    config = demo_config(estate.state_dir, writes={}, rates=UNLIMITED)
    env = {**os.environ, **estate.environ(), "GATEHOUSE_DATABASE_URL": database_url}
    command = [*pinned(cpus), str(GATEHOUSE), "serve", "--config", str(config)]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    command += ["--workers", str(workers)] if workers is not None else []
    log = estate.state_dir / f"gatehouse-{port}.log"
    # Its own session and process group: a Ctrl-C reaches only this process, and ending the
    # group ends the workers too.
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            command, env=env, cwd=REPO_ROOT, stderr=stderr, start_new_session=True
        )
    headers = {"Authorization": f"Bearer {estate.keys[PRINCIPAL]}"}
    server = Server(name, f"http://127.0.0.1:{port}", process.pid, headers, gatehouse=True)
    try:
        wait_until_answering(server, log, lambda: process.poll() is None)
        yield server
    finally:
        end_group(process.pid, lambda: process.poll() is not None)


@contextmanager
def postgraphile_server(erp_url: str, cpus: str | None) -> Iterator[Server]:
    """PostGraphile over the ERP database's public schema, its process group ended on exit."""
    port = free_port()
    dsn = make_url(erp_url).set(drivername="postgresql").render_as_string(hide_password=False)
    command = [*pinned(cpus), str(PEER_SCRIPT), dsn, "public", str(port)]
    started = subprocess.run(
        command, capture_output=True, text=True, check=True, timeout=PEER_START_SECONDS
    )
    pid = int(started.stdout.split()[-1])
    server = Server("postgraphile", f"http://127.0.0.1:{port}", pid, {}, gatehouse=False)
    try:
        wait_until_answering(server, PEER_LOGS / f"postgraphile-{port}.log", lambda: running(pid))
        yield server
    finally:
        end_group(pid, lambda: not running(pid))


def wait_until_answering(server: Server, log: Path, alive: Callable[[], bool]) -> None:
    """Poll { __typename } until the server answers; RuntimeError with its log if it dies or
    does not answer in time."""
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline and alive():
        with contextlib.suppress(httpx.TransportError):
            response = httpx.post(
                f"{server.base_url}/graphql",
                json={"query": "{ __typename }"},
                headers=server.headers,
                timeout=1,
            )
            if response.status_code == 200:
                return
        time.sleep(0.1)
    output = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
    raise RuntimeError(f"{server.name} did not start at {server.base_url}:\n{output}")


def running(pid: int) -> bool:
    """Whether `pid` is a live process (not gone, not a zombie)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def end_group(pgid: int, ended: Callable[[], bool]) -> None:
    """SIGTERM the process group, then SIGKILL it if it lingers."""
    for how in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, how)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while time.monotonic() < deadline:
            if ended():
                return
            time.sleep(0.05)


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of `root` and every live descendant, from /proc."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        cpu[pid] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier += children
    return sum(cpu.get(pid, 0.0) for pid in tree)


# ---- checking the answers ---------------------------------------------------------------


async def answers(servers: Sequence[Server]) -> dict[tuple[str, str], Rows]:
    """Every query asked once of every server: its rows, by server and query name."""
    found: dict[tuple[str, str], Rows] = {}
    for server in servers:
        async with httpx.AsyncClient(
            base_url=server.base_url, headers=server.headers, timeout=30
        ) as client:
            for query in QUERIES:
                request = server.request(query)
                data = await graphql(client, request.query, request.variables or None)
                found[server.name, query.name] = sorted(request.rows(data), key=repr)
    return found


def check_rows(servers: Sequence[Server]) -> None:
    """Ask every query of every server once; RowsDiffer unless all answer the same rows."""
    found = asyncio.run(answers(servers))
    for query in QUERIES:
        expected = found[servers[0].name, query.name]
        if not expected:
            raise RowsDiffer(f"{query.name}: {servers[0].name} answered no rows")
        for server in servers[1:]:
            rows = found[server.name, query.name]
            if rows != expected:
                missing = [row for row in expected if row not in rows][:5]
                extra = [row for row in rows if row not in expected][:5]
                raise RowsDiffer(
                    f"{query.name}: {server.name} differs from {servers[0].name}:"
                    f" {len(rows)} rows against {len(expected)}; missing {missing}; extra {extra}"
                )
        print(f"  {query.name}: {len(expected)} rows, the same from every server")


# ---- wrk ----------------------------------------------------------------------------------

LUA = """wrk.method = "POST"
wrk.body = [==[%(body)s]==]
wrk.headers["Content-Type"] = "application/json"
%(headers)s
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) bad = 0; first = "" end
function response(status, headers, body)
  if status ~= 200 or string.find(body, '"errors"', 1, true) then
    bad = bad + 1
    if first == "" then first = status .. " " .. string.sub(body, 1, 300) end
  end
end
function done(summary, latency, requests)
  local total, sample = 0, ""
  for _, thread in ipairs(threads) do
    total = total + thread:get("bad")
    if sample == "" then sample = thread:get("first") end
  end
  io.write(string.format("bad responses: %%d\\n", total))
  if total > 0 then io.write("first bad response: " .. sample .. "\\n") end
end
"""


@dataclass(frozen=True)
class WrkRun:
    """What one wrk run reports."""

    requests: int
    rate: float
    p50_ms: float
    p99_ms: float
    failures: int  # socket errors, answers that were not 200 or carried GraphQL errors
    output: str


def wrk_binary() -> str:
    """wrk's path: installed with apt-get when missing and root; SystemExit saying how else."""
    if shutil.which("wrk") is None and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=True)
    if (path := shutil.which("wrk")) is None:
        raise SystemExit("bench_peer needs wrk: install it with `sudo apt-get install -y wrk`")
    return path


def lua_script(directory: Path, server: Server, query: Query) -> Path:
    """The Lua script that POSTs `query` to `server` and counts bad answers."""
    request = server.request(query)
    headers = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in server.headers.items())
    path = directory / f"{server.name}-{query.name}.lua".replace(" ", "-")
    path.write_text(LUA % {"body": request.body, "headers": headers}, encoding="utf-8")
    return path


def wrk(
    binary: str, cpus: Cpus, script: Path, server: Server, connections: int, seconds: float
) -> WrkRun:
    """One wrk run against the server's /graphql."""
    command = [*pinned(cpus.load), binary, f"-t{min(WRK_THREADS, connections)}"]
    command += [f"-c{connections}", f"-d{seconds:g}s", "--latency", "--timeout", WRK_TIMEOUT]
    command += ["-s", str(script), f"{server.base_url}/graphql"]
    output = subprocess.run(
        command, capture_output=True, text=True, check=True, timeout=seconds + 60
    ).stdout
    return parse_wrk(output)


def parse_wrk(output: str) -> WrkRun:
    """The requests, rate, p50, p99 and failures in wrk's --latency report."""

    def number(pattern: str) -> float:
        found = re.search(pattern, output, re.MULTILINE)
        if found is None:
            raise RuntimeError(f"wrk's report has no {pattern!r}:\n{output}")
        return float(found.group(1))

    def latency_ms(percent: int) -> float:
        found = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
        if found is None:
            raise RuntimeError(f"wrk's report has no {percent}% latency:\n{output}")
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[found.group(2)]
        return float(found.group(1)) * scale

    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    socket_errors = sum(map(int, sockets.groups())) if sockets else 0
    return WrkRun(
        requests=int(number(r"(\d+) requests in")),
        rate=number(r"Requests/sec:\s+([\d.]+)"),
        p50_ms=latency_ms(50),
        p99_ms=latency_ms(99),
        failures=socket_errors + int(number(r"bad responses: (\d+)")),
        output=output,
    )


# ---- the rounds ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)  # told apart by identity: one per planned run
class Scenario:
    """One query on one server at one connection count."""

    query: Query
    server: Server
    connections: int


@dataclass
class Runs:
    """A scenario's figures, one per round."""

    rates: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)

    def median(self, figures: str) -> float:
        values: list[float] = getattr(self, figures)
        return statistics.median(values) if values else float("nan")


def scenarios(servers: Sequence[Server], connections: Sequence[int]) -> list[Scenario]:
    """Each query at each connection count on Gatehouse and PostGraphile; the nested page
    also on any further (more workers) gateway."""
    found = []
    for query in QUERIES:
        for count in connections:
            serving = servers if query is NESTED else servers[:2]
            found += [Scenario(query, server, count) for server in serving]
    return found


def measured(
    binary: str, cpus: Cpus, script: Path, scenario: Scenario, seconds: float
) -> tuple[WrkRun, float]:
    """One wrk run and the server's CPU milliseconds per completed request during it."""
    before = tree_cpu_seconds(scenario.server.pid)
    run = wrk(binary, cpus, script, scenario.server, scenario.connections, seconds)
    cpu = tree_cpu_seconds(scenario.server.pid) - before
    if run.failures:
        raise RequestFailed(
            f"{scenario.query.name} on {scenario.server.name} x{scenario.connections}:"
            f" {run.failures} failed requests\n{run.output}"
        )
    return run, 1000 * cpu / run.requests if run.requests else float("nan")


def measure(
    planned: Sequence[Scenario], binary: str, cpus: Cpus, directory: Path, args: argparse.Namespace
) -> dict[Scenario, Runs]:
    """Warm every scenario up, then run them all in each round, alternating the order."""
    scripts = {s: lua_script(directory, s.server, s.query) for s in planned}
    for scenario in planned:
        if scenario.connections == args.connections[0]:
            measured(binary, cpus, scripts[scenario], scenario, args.warmup)
    runs = {scenario: Runs() for scenario in planned}
    for round_ in range(args.rounds):
        print(f"  round {round_ + 1} of {args.rounds}", flush=True)
        for scenario in planned if round_ % 2 == 0 else planned[::-1]:
            run, cpu_ms = measured(binary, cpus, scripts[scenario], scenario, args.duration)
            figures = runs[scenario]
            figures.rates.append(run.rate)
            figures.p50.append(run.p50_ms)
            figures.p99.append(run.p99_ms)
            figures.cpu_ms.append(cpu_ms)
    return runs


# ---- the report -------------------------------------------------------------------------


def figures_of(runs: dict[Scenario, Runs], query: Query, server: str, count: int) -> Runs:
    """The figures of `query` on the server named `server` at `count` connections."""
    for scenario, figures in runs.items():
        found = (scenario.query, scenario.server.name, scenario.connections)
        if found[0] is query and found[1:] == (server, count):
            return figures
    return Runs()


def ratio(ours: Runs, theirs: Runs, figures: str = "rates") -> float:
    """The medians' ratio (nan when either was not measured)."""
    if not (getattr(ours, figures) and getattr(theirs, figures)):
        return float("nan")
    return ours.median(figures) / theirs.median(figures)


def cells(runs: Runs) -> tuple[str, str, str]:
    """req/s, p50 / p99 ms and CPU ms/req, medians; dashes for what was not measured."""
    if not runs.rates:
        return "-", "-", "-"
    latency = f"{runs.median('p50'):.2f} / {runs.median('p99'):.2f}"
    return f"{runs.median('rates'):.0f}", latency, f"{runs.median('cpu_ms'):.2f}"


def _fixed(value: float) -> str:
    return "-" if value != value else f"{value:.2f}"  # nan: not measured


def table(runs: dict[Scenario, Runs], connections: Sequence[int]) -> list[str]:
    """The Markdown table of medians over the rounds."""
    fewest, most = connections[0], connections[-1]
    rows = [
        "| query | conns | Gatehouse req/s | PostGraphile req/s | ratio"
        " | Gatehouse p50 / p99 ms | PostGraphile p50 / p99 ms"
        " | Gatehouse CPU ms/req | PostGraphile CPU ms/req"
        f" | Gatehouse CPU/req c{most} / c{fewest} |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    pairs = [(query, "gatehouse", "postgraphile") for query in QUERIES]
    pairs += [(NESTED, name, "") for name in more_workers(runs)]
    for query, name, peer in pairs:
        label = query.name if peer else f"{query.name}, {name}"
        for count in connections:
            ours, theirs = (
                figures_of(runs, query, name, count),
                figures_of(runs, query, peer, count),
            )
            (rate, latency, cpu), (peer_rate, peer_latency, peer_cpu) = cells(ours), cells(theirs)
            growth = float("nan")
            if count == most != fewest:
                growth = ratio(ours, figures_of(runs, query, name, fewest), "cpu_ms")
            rows.append(
                f"| {label} | {count} | {rate} | {peer_rate} | {_fixed(ratio(ours, theirs))}"
                f" | {latency} | {peer_latency} | {cpu} | {peer_cpu} | {_fixed(growth)} |"
            )
    return rows


def more_workers(runs: dict[Scenario, Runs]) -> list[str]:
    """The names of the gateways with more than one worker."""
    return sorted({s.server.name for s in runs} - {"gatehouse", "postgraphile"})


def verdicts(runs: dict[Scenario, Runs], connections: Sequence[int]) -> list[str]:
    """Each target, its figures and whether it is met."""
    fewest, most = connections[0], connections[-1]
    lines = []
    for query in QUERIES:
        ratios = [
            ratio(
                figures_of(runs, query, "gatehouse", count),
                figures_of(runs, query, "postgraphile", count),
            )
            for count in connections
        ]
        what = f"{query.name}: Gatehouse req/s over PostGraphile's"
        lines.append(verdict(what, ratios, connections, RATIO_TARGETS[query.name]))
    for query in QUERIES:
        growth = ratio(
            figures_of(runs, query, "gatehouse", most),
            figures_of(runs, query, "gatehouse", fewest),
            "cpu_ms",
        )
        met = "met" if growth <= CPU_GROWTH_TARGET else "NOT met"
        lines.append(
            f"- {query.name}: Gatehouse CPU/req at {most} connections over at {fewest}"
            f" = {growth:.3f} (target <= {CPU_GROWTH_TARGET}): {met}"
        )
    if more_workers(runs):
        ratios = [
            ratio(
                figures_of(runs, NESTED, TWO_WORKERS, count),
                figures_of(runs, NESTED, ONE_WORKER, count),
            )
            for count in connections
        ]
        what = f"{NESTED.name}: two workers' req/s over one worker's, neither pinned"
        lines.append(verdict(what, ratios, connections, WORKERS_TARGET))
    return lines


def verdict(what: str, ratios: Sequence[float], connections: Sequence[int], least: float) -> str:
    """One "at least" target's line: the ratio at each connection count, met or not."""
    at = ", ".join(f"{r:.2f} at {count}" for r, count in zip(ratios, connections, strict=True))
    met = "met" if all(r >= least for r in ratios) else "NOT met"
    return f"- {what}: {at} (target >= {least} at each): {met}"


def report(runs: dict[Scenario, Runs], args: argparse.Namespace, cpus: Cpus) -> None:
    """Print the table, the targets and how to run it again."""
    print("\n" + "\n".join(table(runs, args.connections)))
    print("\nTargets (reported, not asserted):")
    print("\n".join(verdicts(runs, args.connections)))
    pinning = (
        f"wrk on CPU {cpus.load}, servers on CPU {cpus.servers}" if cpus.load else "nothing pinned"
    )
    print(
        f"\nMedians of {args.rounds} interleaved rounds of {args.duration:g} s per row;"
        f" wrk -t{WRK_THREADS}; {os.cpu_count()} CPUs, {pinning}. Reproduce from the"
        f" repository root with:\n  python -m tests.bench.bench_peer --rounds {args.rounds}"
        f" --duration {args.duration:g} --warmup {args.warmup:g}"
        f" --connections {','.join(map(str, args.connections))}"
    )


# ---- the run ------------------------------------------------------------------------------


def run(args: argparse.Namespace, binary: str) -> tuple[dict[Scenario, Runs], Cpus]:
    """Set up the database and the servers, check their rows, measure; all gone on exit."""
    cpus = cpu_layout()
    with ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gh-peer-")))
        erp_url = stack.enter_context(fresh_database(args.postgres_url))
        gateway_url = stack.enter_context(fresh_database(args.postgres_url))
        estate = stack.enter_context(running_estate(directory / "estate", erp_url=erp_url))
        workers = serve_has_workers()
        servers = [
            stack.enter_context(
                gatehouse_server(estate, gateway_url, 1 if workers else None, cpus.servers)
            ),
            stack.enter_context(postgraphile_server(erp_url, cpus.servers)),
        ]
        if workers:
            # Workers need cores: these two gateways are not pinned, the load generator is.
            servers += [
                stack.enter_context(gatehouse_server(estate, gateway_url, n, None, name))
                for n, name in ((1, ONE_WORKER), (2, TWO_WORKERS))
            ]
        else:
            print("`gatehouse serve` has no --workers: the nested page x2 scenario is skipped")
        print("checking that every server answers the same rows:", flush=True)
        check_rows(servers)
        runs = measure(scenarios(servers, args.connections), binary, cpus, directory, args)
        print("checking the rows again:", flush=True)
        check_rows(servers)
        return runs, cpus


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run (5)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up (2)")
    parser.add_argument(
        "--connections",
        type=lambda text: [int(count) for count in text.split(",")],
        default=[8, 32],
        help="wrk connection counts, comma-separated (8,32)",
    )
    parser.add_argument("--postgres-url", default=POSTGRES_URL)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.duration < 1 or args.warmup < 1 or min(args.connections) < 1:
        parser.error("need --rounds, --duration, --warmup and every connection count >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    binary = wrk_binary()
    unwind_on_sigterm()
    started = time.monotonic()
    try:
        runs, cpus = run(args, binary)
    except KeyboardInterrupt:
        print("interrupted; the servers are stopped and the databases dropped", file=sys.stderr)
        return 130
    except (RequestFailed, RowsDiffer, RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    report(runs, args, cpus)
    print(f"total {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`gatehouse serve --workers N`: several processes behind one port, as one gateway.

    gatehouse serve --workers 2          the supervisor, over a fresh PostgreSQL database
      |-- worker                         each with its own cache, listening for evictions
      '-- worker                         and writing its metrics where /metrics reads them
          ^
          httpx, a new connection per request, several at once: the workers share them

Which worker answered is read from the metrics files each one writes (prometheus_client's
multiprocess mode), so the gateway exposes nothing new for the test's sake.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from prometheus_client.multiprocess import MultiProcessCollector

from gateway.demo import CONFIG_TEMPLATE, DemoEstate
from gateway.errors import ConfigError
from gateway.metrics import MULTIPROCESS_DIR
from gateway.workers import worker_count
from sources.demo import build_estate, create_erp
from tests.factories import fresh_postgres_database, require_postgres
from tests.serving import Gateway, demo_config, serve_refused
from tests.test_replicas import ADJUST, ITEM

IN_FLIGHT = 8
REPLACED_WITHIN_SECONDS = 30.0  # a new worker imports and starts the gateway
HEALTHZ = "http GET /healthz"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def database() -> AsyncIterator[str]:
    """A fresh PostgreSQL database seeded with the ERP; the gateway's tables join it."""
    require_postgres()
    async with fresh_postgres_database("gh_workers") as url:
        await create_erp(url, build_estate())
        yield url


@pytest.fixture(scope="module")
def gateway(
    estate: DemoEstate, database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """`gatehouse serve --workers 2` on `database`, both workers serving; one per module,
    since starting it takes a while (the test that kills a worker comes last)."""
    environ = {
        **os.environ,
        **estate.environ(),
        "GATEHOUSE_ERP_URL": database,
        "GATEHOUSE_DATABASE_URL": database,
    }
    directory = tmp_path_factory.mktemp("workers")
    served = Gateway("workers", environ, demo_config(directory, writes={}), directory, workers=2)
    served.start()
    try:
        _wait_for_workers(served, lambda pids: len(pids) == 2)
        yield served
    finally:
        served.stop()


# ---- the processes, and what each one counted --------------------------------------------


def _workers(parent: int) -> set[int]:
    """The serving workers among `parent`'s children (not multiprocessing's helpers)."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return {int(pid) for pid in children if b"spawn_main" in _cmdline(int(pid))}


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # it ended meanwhile
        return b""


def _wait_for_workers(served: Gateway, done: Callable[[set[int]], bool]) -> set[int]:
    """The workers once `done(pids)` holds and each answers, or the test fails."""
    deadline = time.monotonic() + REPLACED_WITHIN_SECONDS
    while time.monotonic() < deadline:
        pids = _workers(served.pid)
        if done(pids) and all(_requests(served, pid) is not None for pid in pids):
            return pids
        # A worker writes its metrics file once it has served: a burst reaches each one.
        asyncio.run(_spread(served.url, "/healthz", IN_FLIGHT * 2))
        time.sleep(0.1)
    pytest.fail(f"the workers did not come up: {_workers(served.pid)}\n{served.log_tail()}")


def _metrics_dir(worker: int) -> Path:
    environ = Path(f"/proc/{worker}/environ").read_bytes().split(b"\0")
    prefix = f"{MULTIPROCESS_DIR}=".encode()
    return Path(next(v[len(prefix) :] for v in environ if v.startswith(prefix)).decode())


def _requests(served: Gateway, worker: int, operation: str = HEALTHZ) -> float | None:
    """How many `operation` requests one worker answered, from its own metrics file."""
    try:
        counters = _metrics_dir(worker) / f"counter_{worker}.db"
    except OSError:
        return None
    if not counters.exists():
        return None
    return sum(
        sample.value
        for metric in MultiProcessCollector.merge([str(counters)])  # type: ignore[no-untyped-call]
        if metric.name == "gatehouse_requests"
        for sample in metric.samples
        if sample.labels.get("operation") == operation and sample.name.endswith("_total")
    )


async def _spread(url: str, path: str, count: int) -> list[int | None]:
    """`count` GETs of `path`, IN_FLIGHT at a time, each on a new connection; statuses, None if
    the connection failed."""
    statuses: list[int | None] = []
    pending = iter(range(count))
    no_reuse = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, limits=no_reuse, timeout=10) as client:

        async def sender() -> None:
            for _ in pending:
                try:
                    response = await client.get(path)
                    statuses.append(response.status_code)
                except httpx.TransportError:
                    statuses.append(None)

        await asyncio.gather(*(sender() for _ in range(IN_FLIGHT)))
    return statuses


# ---- the tests -----------------------------------------------------------------------------


def _answered(served: Gateway, workers: set[int], expected: float) -> dict[int, float]:
    """Each worker's /healthz count, once they add up to `expected` (or after a few seconds:
    a worker counts a request just after it sent the answer)."""
    deadline = time.monotonic() + 5
    while True:
        answered = {pid: _requests(served, pid) or 0.0 for pid in workers}
        if sum(answered.values()) >= expected or time.monotonic() > deadline:
            return answered
        time.sleep(0.05)


def test_workers_requests_spread_over_both_and_metrics_count_them_all(gateway: Gateway) -> None:
    workers = _workers(gateway.pid)
    before = {pid: _requests(gateway, pid) or 0.0 for pid in workers}

    statuses = asyncio.run(_spread(gateway.url, "/healthz", 200))

    assert statuses == [200] * 200
    answered = _answered(gateway, workers, sum(before.values()) + 200)
    took = {pid: answered[pid] - before[pid] for pid in workers}
    assert all(took.values()), f"one worker took no request: {took}"
    metrics = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    line = f'gatehouse_requests_total{{operation="{HEALTHZ}",outcome="ok"}}'
    total = next(float(row.split()[-1]) for row in metrics.splitlines() if row.startswith(line))
    assert total == sum(answered.values()) == sum(before.values()) + 200
    ready = asyncio.run(_spread(gateway.url, "/readyz", 20))
    assert ready == [200] * 20


async def _read_many(url: str, key: str, times: int) -> list[int]:
    """WH-BER's on-hand of SKU-0003, read `times` times over new connections."""
    body = {"query": ITEM, "variables": {"sku": "SKU-0003"}}
    headers = {"Authorization": f"Bearer {key}"}
    no_reuse = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=no_reuse) as client:
        replies = await asyncio.gather(
            *(client.post("/graphql", json=body, timeout=10) for _ in range(times))
        )
    levels = [r.json()["data"]["inventoryItem"]["levels"] for r in replies]
    return [next(v["onHand"] for v in level if v["location"] == "WH-BER") for level in levels]


def _adjust(url: str, key: str, delta: int) -> None:
    variables = {
        "input": {"sku": "SKU-0003", "location": "WH-BER", "delta": delta, "reason": "workers"},
        "key": "workers-evict-1",
    }
    reply = httpx.post(
        f"{url}/graphql",
        json={"query": ADJUST, "variables": variables},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    result = reply.json()["data"]["adjustInventory"]
    if result["status"] != "APPLIED":
        pytest.fail(f"the write was not applied: {reply.text}")


def test_workers_write_in_one_evicts_the_cached_record_in_all(
    estate: DemoEstate, gateway: Gateway
) -> None:
    key, graphql = estate.keys["olivia"], "graphql:Item"
    before = asyncio.run(_read_many(gateway.url, key, 40))
    readers = {pid: _requests(gateway, pid, graphql) for pid in _workers(gateway.pid)}
    if len(set(before)) != 1 or not all(readers.values()):
        pytest.fail(f"both workers should have read one value: {before}, {readers}")

    _adjust(gateway.url, key, 5)

    assert set(asyncio.run(_read_many(gateway.url, key, 40))) == {before[0] + 5}


def test_workers_one_killed_under_load_the_other_serves_and_it_is_replaced(
    gateway: Gateway,
) -> None:
    first, second = sorted(_workers(gateway.pid))
    statuses: list[int | None] = []

    async def load() -> None:
        # Small batches, so the statuses of the ones after the kill are known apart.
        for batch in range(30):
            if batch == 5:
                os.kill(first, signal.SIGKILL)
            statuses.extend(await _spread(gateway.url, "/healthz", IN_FLIGHT * 2))

    asyncio.run(load())

    failed = [status for status in statuses if status != 200]
    assert len(failed) <= IN_FLIGHT, f"{len(failed)} failed: more than were in flight"
    assert statuses[-IN_FLIGHT * 20 :] == [200] * IN_FLIGHT * 20  # the survivor serves alone
    replaced = _wait_for_workers(gateway, lambda pids: len(pids) == 2 and first not in pids)
    assert second in replaced
    assert f"worker {first} ended" in gateway.log.read_text()


def test_workers_several_on_a_sqlite_database_are_refused(
    estate: DemoEstate, tmp_path: Path
) -> None:
    database = f"sqlite+aiosqlite:///{tmp_path / 'gatehouse.db'}"
    environ = {**estate.environ(), "GATEHOUSE_DATABASE_URL": database}
    result = serve_refused(CONFIG_TEMPLATE, environ, "--workers", "2")
    assert result.returncode == 2
    assert "--workers 2 needs a PostgreSQL gateway database" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "gatehouse.db").exists()


def test_workers_one_that_cannot_start_stops_serve_with_exit_1(estate: DemoEstate) -> None:
    # Its replacement would fail the same way: uvicorn stops them all, and serve says so.
    missing = "postgresql+asyncpg://postgres@127.0.0.1:5432/gh_workers_no_such_database"
    environ = {**estate.environ(), "GATEHOUSE_DATABASE_URL": missing}
    result = serve_refused(CONFIG_TEMPLATE, environ, "--workers", "2")
    assert result.returncode == 1
    assert "a worker could not start" in result.stderr


@pytest.mark.parametrize(
    ("requested", "url", "expected"),
    [
        (None, "sqlite+aiosqlite:///gatehouse.db", 1),
        (1, "sqlite+aiosqlite:///gatehouse.db", 1),
        (None, "postgresql+asyncpg://gatehouse@db/gatehouse", len(os.sched_getaffinity(0))),
        (3, "postgresql+asyncpg://gatehouse@db/gatehouse", 3),
    ],
)
def test_worker_count_defaults_to_one_per_core_on_postgresql_only(
    requested: int | None, url: str, expected: int
) -> None:
    assert worker_count(requested, url) == expected


def test_worker_count_several_on_sqlite_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="PostgreSQL"):
        worker_count(4, "sqlite+aiosqlite:///gatehouse.db")

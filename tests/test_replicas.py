"""Replicas: two `gatehouse serve` processes on one PostgreSQL database, writing at once.

    a fresh database: the ERP's tables and the gateway's own (actions, keys, audit trail)
          ^                      ^
      replica A              replica B          two child processes, as production runs them
          ^                      ^
          +------ httpx ---------+              300 adjustInventory as olivia, 16 in flight;
                                                100 of them repeat another request's key and
                                                input, sent to the other replica at once

Every distinct key executes once, stock moves by exactly the distinct deltas, and
`gatehouse audit verify` finds one gap-free chain with one applied event per action and
one replayed event per duplicate.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy
from sqlalchemy.ext.asyncio import create_async_engine

from gateway.database import create_engine, create_schema
from gateway.demo import CONFIG_TEMPLATE, DemoEstate
from sources.demo import build_estate, create_erp
from tests.factories import fresh_postgres_database, require_postgres

REPO_ROOT = Path(__file__).resolve().parent.parent
DISTINCT = 200  # requests with a key of their own
DUPLICATES = 100  # requests that repeat one of those keys, with the same input
IN_FLIGHT = 16
TARGETS = (
    ("SKU-0001", "WH-BER"),
    ("SKU-0001", "WH-AMS"),
    ("SKU-0002", "WH-BER"),
    ("SKU-0002", "WH-MAD"),
)
DELTAS = (1, 2, -1)
START_TIMEOUT_SECONDS = 30.0

ADJUST = """
mutation Adjust($input: AdjustInventoryInput!, $key: String) {
  adjustInventory(input: $input, idempotencyKey: $key) {
    status action { id } errors { code message }
  }
}
"""
ITEM = "query Item($sku: ID!) { inventoryItem(sku: $sku) { levels { location onHand } } }"


@dataclass(frozen=True)
class Write:
    """One adjustInventory request, and which replica it goes to."""

    key: str
    sku: str
    location: str
    delta: int
    replica: int
    duplicate: bool = False

    def variables(self) -> dict[str, Any]:
        data = {"sku": self.sku, "location": self.location, "delta": self.delta}
        return {"input": {**data, "reason": "replica test"}, "key": self.key}


@dataclass(frozen=True)
class Reply:
    """What the replica answered: the HTTP status and the adjustInventory result."""

    http: int
    result: dict[str, Any] | None
    body: str
    started: float = 0.0  # time.perf_counter() when it was sent
    finished: float = 0.0  # and when the answer came

    @property
    def action_id(self) -> str | None:
        action = (self.result or {}).get("action") or {}
        return action.get("id")

    @property
    def applied(self) -> bool:
        result = self.result or {}
        return self.http == 200 and result.get("status") == "APPLIED" and not result["errors"]


# ---- the estate: a database, two replicas ------------------------------------------------


@pytest.fixture
async def database() -> AsyncIterator[str]:
    """A fresh database seeded with the ERP; the gateway's tables join it when replicas start."""
    require_postgres()
    async with fresh_postgres_database("gh_replicas") as url:
        await create_erp(url, build_estate())
        yield url


@pytest.fixture
async def empty_database() -> AsyncIterator[str]:
    """A fresh database with nothing in it."""
    require_postgres()
    async with fresh_postgres_database("gh_replicas") as url:
        yield url


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_healthy(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    output = log.read_text(errors="replace")[-3000:]
    pytest.fail(f"replica {url} did not start (exit code {process.poll()}):\n{output}")


@contextmanager
def _replica(env: dict[str, str], log: Path) -> Iterator[str]:
    """`gatehouse serve` over the demo configuration in a child process; its base URL."""
    port = _free_port()
    command = [sys.executable, "-m", "gateway", "serve", "--config", str(CONFIG_TEMPLATE)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            command, env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=stderr
        )
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_until_healthy(process, url, log)
            yield url
        finally:
            _stop(process)


@pytest.fixture
def replicas(estate: DemoEstate, database: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two replicas over `database` (ERP and gateway state) and the session's CRM."""
    env = {
        **os.environ,
        **estate.environ(),
        "GATEHOUSE_ERP_URL": database,
        "GATEHOUSE_DATABASE_URL": database,
    }
    with ExitStack() as stack:
        # One after the other: the first creates the gateway's tables. Replicas creating
        # them at the same moment is the subject of its own test below.
        first = stack.enter_context(_replica(env, tmp_path / "replica-a.log"))
        second = stack.enter_context(_replica(env, tmp_path / "replica-b.log"))
        yield first, second


# ---- the load --------------------------------------------------------------------------


def _writes() -> list[Write]:
    """DISTINCT keyed writes; DUPLICATES of them repeated right after, to the other replica."""
    rng = random.Random(20261124)
    repeated = set(rng.sample(range(DISTINCT), DUPLICATES))
    writes: list[Write] = []
    for index in range(DISTINCT):
        sku, location = rng.choice(TARGETS)
        write = Write(f"replicas-{index:03d}", sku, location, rng.choice(DELTAS), index % 2)
        writes.append(write)
        if index in repeated:
            writes.append(replace(write, replica=1 - write.replica, duplicate=True))
    return writes


async def _adjust(client: httpx.AsyncClient, write: Write) -> Reply:
    started = time.perf_counter()
    response = await client.post("/graphql", json={"query": ADJUST, "variables": write.variables()})
    finished = time.perf_counter()
    try:
        body = response.json()
    except ValueError:
        return Reply(response.status_code, None, response.text[:300], started, finished)
    result = (body.get("data") or {}).get("adjustInventory")
    return Reply(response.status_code, result, str(body)[:300], started, finished)


async def _send(urls: tuple[str, str], api_key: str, writes: list[Write]) -> list[Reply]:
    """Every write to its replica, IN_FLIGHT at a time, in order of start; replies in order."""
    headers = {"Authorization": f"Bearer {api_key}"}
    replies: dict[int, Reply] = {}
    queue = iter(enumerate(writes))
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=url, headers=headers, timeout=60)
            )
            for url in urls
        ]

        async def worker() -> None:
            # Consecutive writes (an original and its duplicate) start within moments of
            # each other on two workers, so the two replicas race for the same key.
            for index, write in queue:
                replies[index] = await _adjust(clients[write.replica], write)

        await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    return [replies[index] for index in range(len(writes))]


# ---- what the database holds -----------------------------------------------------------


@dataclass(frozen=True)
class Facts:
    """The rows that show what happened."""

    actions: list[tuple[str, str, str]]  # (idempotency key, action id, status)
    audit: list[tuple[int, str, str]]  # (seq, action id, event), by seq
    on_hand: dict[tuple[str, str], int]  # per (sku, location)
    reserved: dict[tuple[str, str], int]


async def _facts(url: str) -> Facts:
    engine = create_async_engine(url)
    text = sqlalchemy.text
    try:
        async with engine.connect() as connection:
            actions = await connection.execute(
                text("SELECT idempotency_key, id, status FROM actions")
            )
            audit = await connection.execute(
                text("SELECT seq, action_id, event FROM audit_events ORDER BY seq")
            )
            stock = await connection.execute(
                text("SELECT sku, location, on_hand, reserved FROM stock_levels")
            )
            levels = [(row.sku, row.location, row.on_hand, row.reserved) for row in stock]
            return Facts(
                actions=[(row.idempotency_key, row.id, row.status) for row in actions],
                audit=[(row.seq, row.action_id, row.event) for row in audit],
                on_hand={(sku, location): on_hand for sku, location, on_hand, _ in levels},
                reserved={(sku, location): reserved for sku, location, _, reserved in levels},
            )
    finally:
        await engine.dispose()


def _audit_verify(url: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "gateway", "audit", "verify", "--database-url", url]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)


# ---- the tests ---------------------------------------------------------------------------


def test_replicas_concurrent_keyed_writes_apply_once_with_one_gap_free_chain(
    estate: DemoEstate, database: str, replicas: tuple[str, str]
) -> None:
    writes = _writes()
    originals = [write for write in writes if not write.duplicate]
    before = asyncio.run(_facts(database))
    assert (before.actions, before.audit) == ([], [])
    for target in TARGETS:  # even if every -1 came first, stock stays above what is reserved
        assert before.on_hand[target] - before.reserved[target] > len(originals), target

    replies = asyncio.run(_send(replicas, estate.keys["olivia"], writes))

    sent = list(zip(writes, replies, strict=True))
    refused = [f"{w.key} to {w.replica}: {r.body}" for w, r in sent if not r.applied]
    assert not refused, f"{len(refused)} writes not APPLIED, e.g. {refused[:3]}"
    first_id = {w.key: r.action_id for w, r in sent if not w.duplicate}
    assert len(set(first_id.values())) == DISTINCT
    replayed = {w.key: r.action_id for w, r in sent if w.duplicate}
    assert {key: first_id[key] for key in replayed} == replayed
    # The duplicates did race their originals: most were sent before the original's answer.
    first_reply = {w.key: r for w, r in sent if not w.duplicate}
    raced = sum(r.started < first_reply[w.key].finished for w, r in sent if w.duplicate)
    assert raced >= DUPLICATES // 2, f"only {raced} duplicates overlapped their original"

    facts = asyncio.run(_facts(database))
    per_key = Counter(key for key, _, _ in facts.actions)
    assert per_key == dict.fromkeys(first_id, 1)
    assert {(key, action_id, status) for key, action_id, status in facts.actions} == {
        (key, action_id, "APPLIED") for key, action_id in first_id.items()
    }

    expected = dict(before.on_hand)
    for write in originals:
        expected[write.sku, write.location] += write.delta
    assert facts.on_hand == expected

    # One applied event per action, and one replayed event per duplicate that replayed it.
    total = DISTINCT + DUPLICATES
    assert [seq for seq, _, _ in facts.audit] == list(range(1, total + 1))
    applied = Counter(a for _, a, event in facts.audit if event == "action.applied")
    assert applied == dict.fromkeys(first_id.values(), 1)
    assert Counter(a for _, a, event in facts.audit if event == "action.replayed") == Counter(
        replayed.values()
    )
    verified = _audit_verify(database)
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.strip() == f"audit trail intact: {total} events"


async def _item_levels(client: httpx.AsyncClient, sku: str) -> dict[str, int]:
    response = await client.post("/graphql", json={"query": ITEM, "variables": {"sku": sku}})
    levels = response.json()["data"]["inventoryItem"]["levels"]
    return {level["location"]: level["onHand"] for level in levels}


async def _write_on_one_read_on_other(
    urls: tuple[str, str], api_key: str
) -> tuple[dict[str, int], dict[str, int]]:
    """Cache the item on both replicas, adjust it on the first; what each replica reads.

    A setup step that goes wrong fails the test outright (pytest.fail), so an assertion
    error is only ever the stale read the test is about.
    """
    headers = {"Authorization": f"Bearer {api_key}"}
    async with (
        httpx.AsyncClient(base_url=urls[0], headers=headers, timeout=30) as first,
        httpx.AsyncClient(base_url=urls[1], headers=headers, timeout=30) as second,
    ):
        for client in (first, second):
            await _item_levels(client, "SKU-0003")
        write = Write("evict-1", "SKU-0003", "WH-BER", 5, 0)
        if not (reply := await _adjust(first, write)).applied:
            pytest.fail(f"the write was not applied: {reply.body}")
        return await _item_levels(first, "SKU-0003"), await _item_levels(second, "SKU-0003")


def test_replicas_write_on_one_evicts_the_cached_record_on_the_other(
    estate: DemoEstate, database: str, replicas: tuple[str, str]
) -> None:
    on_writer, on_other = asyncio.run(_write_on_one_read_on_other(replicas, estate.keys["olivia"]))
    facts = asyncio.run(_facts(database))
    if on_writer["WH-BER"] != facts.on_hand["SKU-0003", "WH-BER"]:
        pytest.fail(f"the writing replica reads {on_writer}, not its own write")
    assert on_other == on_writer


async def _create_schema_at_once(url: str, replicas: int) -> list[BaseException | None]:
    engines = [create_engine(url) for _ in range(replicas)]
    try:
        return await asyncio.gather(
            *(create_schema(engine) for engine in engines), return_exceptions=True
        )
    finally:
        for engine in engines:
            await engine.dispose()


async def test_replicas_starting_together_on_an_empty_database_both_create_the_schema(
    empty_database: str,
) -> None:
    outcomes = await _create_schema_at_once(empty_database, 2)
    assert outcomes == [None, None]
    engine = create_async_engine(empty_database)
    try:
        async with engine.connect() as connection:
            head = await connection.execute(sqlalchemy.text("SELECT seq FROM audit_head"))
            assert head.scalars().all() == [0]
    finally:
        await engine.dispose()

"""Crash safety: SIGKILL `gatehouse serve` mid-write, restart it: no write lost, none doubled.

    8 clients in flight --- keyed adjustInventory: olivia's small deltas, and restock-bot's
          |                 over 100 units (policy: review, so PENDING_APPROVAL) ------------+
          |     finn ------ approveAction on each pending one, while the writes go on -------+
          v                                                                                 v
    gatehouse serve   SIGKILLed 5 times at random moments, restarted on the same databases;
                      a write that got no answer is sent again later, same key and input
    (replicas, on PostgreSQL: two processes, one SIGKILLed for good; the survivor's sweep
     settles what the dead one left in flight, within the lease and a sweep or two)

Afterwards every key is sent once more: each answers within the lease (plus slack), never
IDEMPOTENCY_IN_PROGRESS, and a FAILED action's key retries that same action. Then the
databases must agree: no action in flight or IN_DOUBT, stock moved by exactly the APPLIED
deltas, one `action.applied` (or `action.recovered` with outcome APPLIED) audit event per
APPLIED action and none for any other, the ERP's `gatehouse_journal` holding the effect of
exactly the APPLIED actions, and `gatehouse audit verify` finding the chain intact.

Every broken invariant is reported at once, one line each, with a summary of the run.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections import Counter, defaultdict, deque
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy
from sqlalchemy.ext.asyncio import create_async_engine

from gateway.config import load_config
from gateway.demo import DemoEstate
from gateway.errors import ConfigError
from sources.demo import build_estate, create_erp
from tests.factories import fresh_postgres_database, require_postgres
from tests.serving import Gateway, audit_verify, demo_config

LEASE_SECONDS = 2.0  # [writes] lease, short so that recovery is quick
# The clients send hundreds of writes a minute and resend every key after each kill: what is
# tested here is crash safety, so the per-principal rate limits are set out of the way.
UNLIMITED = {kind: "1000000/minute" for kind in ("human", "service", "agent")}
SWEEP_SECONDS = 2.0  # how often every replica sweeps for actions with an expired lease
SLACK_SECONDS = 3.0  # scheduling slack on a busy test machine
REQUEST_TIMEOUT = LEASE_SECONDS + SLACK_SECONDS  # a replay never waits longer than this
RESEND_TIMEOUT = REQUEST_TIMEOUT + 2.0  # long enough to tell "slow" from "no answer"
RECOVERY_LIMIT = LEASE_SECONDS + SWEEP_SECONDS + SLACK_SECONDS  # a dead replica's in flight
KILL_ATTEMPTS = 4  # kills of replica b until one catches its writes in flight

WRITERS = 8  # adjustInventory requests in flight (finn's approvals come on top)
RESEND_IN_FLIGHT = 16
KILLS = 5
KILL_AFTER = (0.05, 1.0)  # seconds of serving before each SIGKILL
RUN_AFTER_LAST_RESTART = 1.0
RESEND_AFTER = 0.2  # a write that got no answer goes back in the queue, due this much later
BACKOFF = 0.2  # a client's pause after no answer: a dead port refuses at once
STOP_WAIT = 2.0  # for the requests in flight when the load stops; the rest are resent anyway
MOST_WRITES = 3000  # the load stops here even if the kills are not done
SEED = 20261130

TARGETS = (
    ("SKU-0001", "WH-BER"),
    ("SKU-0001", "WH-AMS"),
    ("SKU-0002", "WH-BER"),
    ("SKU-0002", "WH-MAD"),
)
DELTAS = (1, 2, -1)  # olivia: allowed alone
REVIEWED = (101, 400)  # restock-bot over 100 units: review, approved by finn
REVIEW_SHARE = 8  # one write in 8 is restock-bot's

IN_PROGRESS = "IDEMPOTENCY_IN_PROGRESS"
IN_FLIGHT_STATUSES = frozenset({"RECEIVED", "EXECUTING"})
SETTLED = frozenset(
    {
        "APPLIED",
        "DENIED",
        "INVALID",
        "FAILED",
        "REJECTED",
        "EXPIRED",
        "CONFLICT",
        "DRY_RUN",
        "PENDING_APPROVAL",
    }
)
JOURNAL = "gatehouse_journal"

ADJUST = """
mutation Adjust($input: AdjustInventoryInput!, $key: String) {
  adjustInventory(input: $input, idempotencyKey: $key) {
    status action { id } errors { code message }
  }
}
"""
APPROVE = """
mutation Approve($id: ID!) {
  approveAction(id: $id, comment: "crash test") { status action { id } errors { code message } }
}
"""


@dataclass(frozen=True)
class Write:
    """One keyed adjustInventory request: whoever sends it again sends exactly this."""

    index: int
    key: str
    principal: str
    sku: str
    location: str
    delta: int

    def data(self) -> dict[str, Any]:
        """The input, as the mutation takes it and the action stores it."""
        return {"sku": self.sku, "location": self.location, "delta": self.delta, "reason": "crash"}


@dataclass(frozen=True)
class Reply:
    """What came back: a status and action, error codes, or why nothing did."""

    status: str | None
    action_id: str | None
    codes: tuple[str, ...]
    seconds: float
    problem: str | None = None  # a transport error, an HTTP status, a body without a result

    @property
    def lost(self) -> bool:
        """No decided answer: the write is to be sent again later, same key and input."""
        return self.status is None or IN_PROGRESS in self.codes

    def describe(self) -> str:
        """One line for the failure report."""
        found = self.problem or f"{self.status} {list(self.codes)}"
        return f"{found} after {self.seconds:.2f}s"


@dataclass(frozen=True)
class Backend:
    """Where one test's ERP and gateway database live."""

    erp_url: str
    database_url: str


@dataclass(frozen=True)
class ActionRow:
    """One action as the gateway's database holds it."""

    id: str
    principal: str
    key: str | None
    status: str
    input: dict[str, Any]


@dataclass(frozen=True)
class Facts:
    """The rows that show what happened, read once the writes are done."""

    actions: list[ActionRow]
    events: list[tuple[str | None, str, str]]  # (action id, event, outcome), by seq
    on_hand: dict[tuple[str, str], int]
    journal: list[tuple[str, bool]] | None  # (action id, effect recorded); None: no table

    def applied(self) -> set[str]:
        """The ids of the APPLIED actions."""
        return {row.id for row in self.actions if row.status == "APPLIED"}


# ---- the estate: databases, a configuration with a short lease, gateway processes --------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """A freshly seeded ERP and an empty gateway database: SQLite files, or one PostgreSQL."""
    if request.param == "sqlite":
        erp = f"sqlite+aiosqlite:///{tmp_path / 'erp.db'}"
        await create_erp(erp, build_estate())
        yield Backend(erp, f"sqlite+aiosqlite:///{tmp_path / 'gatehouse.db'}")
        return
    require_postgres()
    async with fresh_postgres_database("gh_crash") as url:
        await create_erp(url, build_estate())
        yield Backend(url, url)


def _environ(estate: DemoEstate, backend: Backend) -> dict[str, str]:
    return {
        **os.environ,
        **estate.environ(),
        "GATEHOUSE_ERP_URL": backend.erp_url,
        "GATEHOUSE_DATABASE_URL": backend.database_url,
        "GATEHOUSE_LOG_LEVEL": "WARNING",
    }


def _config(directory: Path, environ: dict[str, str]) -> tuple[Path, list[str]]:
    """The demo configuration with the short lease; without it, and why, if it is refused."""
    path = demo_config(directory, writes={"lease": f"{LEASE_SECONDS:g}s"}, rates=UNLIMITED)
    try:
        load_config(path, environ=environ)
    except ConfigError as error:
        if "writes.lease" not in str(error):
            raise
        refused = f"config: [writes] lease = {LEASE_SECONDS:g}s is refused: {error}"
        fallback = demo_config(directory, writes={}, rates=UNLIMITED)
        return fallback, [f"{refused}; ran on the default lease"]
    return path, []


class Databases:
    """The test's own view of the ERP and the gateway's database, read directly."""

    def __init__(self, backend: Backend) -> None:
        self.gateway = create_async_engine(backend.database_url)
        self.erp = create_async_engine(backend.erp_url)

    async def close(self) -> None:
        """Dispose of both engines."""
        await self.gateway.dispose()
        await self.erp.dispose()

    async def actions(self) -> list[ActionRow]:
        """Every action."""
        query = "SELECT id, principal, idempotency_key, status, input FROM actions"
        async with self.gateway.connect() as connection:
            rows = await connection.execute(sqlalchemy.text(query))
            return [
                ActionRow(r.id, r.principal, r.idempotency_key, r.status, json.loads(r.input))
                for r in rows
            ]

    async def in_flight(self, among: Iterable[str] | None = None) -> set[str]:
        """The ids of the actions RECEIVED or EXECUTING (of `among`, if given)."""
        rows = await self.actions()
        wanted = None if among is None else set(among)
        return {
            row.id
            for row in rows
            if row.status in IN_FLIGHT_STATUSES and (wanted is None or row.id in wanted)
        }

    async def on_hand(self) -> dict[tuple[str, str], int]:
        """Stock on hand per (sku, location)."""
        query = "SELECT sku, location, on_hand FROM stock_levels"
        async with self.erp.connect() as connection:
            rows = await connection.execute(sqlalchemy.text(query))
            return {(row.sku, row.location): row.on_hand for row in rows}

    async def facts(self) -> Facts:
        """Actions, audit events, stock and the journal, as they are now."""
        events = "SELECT action_id, event, outcome FROM audit_events ORDER BY seq"
        async with self.gateway.connect() as connection:
            found = await connection.execute(sqlalchemy.text(events))
            trail = [(row.action_id, row.event, row.outcome) for row in found]
        return Facts(await self.actions(), trail, await self.on_hand(), await self._journal())

    async def _journal(self) -> list[tuple[str, bool]] | None:
        async with self.erp.connect() as connection:
            present = await connection.run_sync(
                lambda sync: sqlalchemy.inspect(sync).has_table(JOURNAL)
            )
            if not present:
                return None
            query = f"SELECT action_id, result FROM {JOURNAL}"  # noqa: S608 - a constant
            rows = await connection.execute(sqlalchemy.text(query))
            return [(row.action_id, row.result is not None) for row in rows]


@asynccontextmanager
async def _databases(backend: Backend) -> AsyncIterator[Databases]:
    databases = Databases(backend)
    try:
        yield databases
    finally:
        await databases.close()


# ---- the load: clients that resend what got no answer, and finn approving ----------------


def _writes(rng: random.Random) -> Iterator[Write]:
    """Keyed writes without end (well, MOST_WRITES): mostly olivia's, some for review."""
    for index in range(MOST_WRITES):
        sku, location = rng.choice(TARGETS)
        if index % REVIEW_SHARE == REVIEW_SHARE - 1:
            delta, principal = rng.randint(*REVIEWED), "restock-bot"
        else:
            delta, principal = rng.choice(DELTAS), "olivia"
        yield Write(index, f"crash-{index:05d}", principal, sku, location, delta)


async def _graphql(
    client: httpx.AsyncClient,
    url: str,
    api_key: str,
    request: tuple[str, dict[str, Any], str],
    *,
    wait: float,
) -> Reply:
    """POST one operation (query, variables, result field); never raises for the network."""
    query, variables, field = request
    started = time.perf_counter()
    try:
        response = await client.post(
            f"{url}/graphql",
            json={"query": query, "variables": variables},
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=wait,
        )
    except httpx.TransportError as error:
        return Reply(None, None, (), time.perf_counter() - started, type(error).__name__)
    seconds = time.perf_counter() - started
    try:
        body = response.json()
    except ValueError:
        text = f"HTTP {response.status_code}: {response.text[:200]}"
        return Reply(None, None, (), seconds, text)
    result = (body.get("data") or {}).get(field) or {}
    codes = [(e.get("extensions") or {}).get("code", "?") for e in body.get("errors") or []]
    codes += [e["code"] for e in result.get("errors") or []]
    problem = None if response.status_code == 200 else f"HTTP {response.status_code}"
    action = (result.get("action") or {}).get("id")
    return Reply(result.get("status"), action, tuple(codes), seconds, problem)


class Load:
    """Clients writing through whichever gateways serve, finn approving, and all they heard.

    A write without an answer is sent again RESEND_AFTER later; or, with `park`, kept for the
    final resend only, so that nothing but a sweep settles what a dead process left.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        gateways: Sequence[Gateway],
        keys: Mapping[str, str],
        *,
        rng: random.Random,
        park: bool = False,
    ) -> None:
        self._client = client
        self._gateways = gateways
        self._keys = keys
        self._park = park
        self._fresh = _writes(rng)
        self._backlog: deque[tuple[float, Write]] = deque()
        self._pending: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._stop = asyncio.Event()
        self.writes: dict[str, Write] = {}  # every key sent, in order
        self.replies: dict[str, list[Reply]] = defaultdict(list)
        self.parked: dict[str, Write] = {}
        self.approvals: list[Reply] = []
        self.unanswered_approvals: set[str] = set()  # action ids

    @asynccontextmanager
    async def running(self, writers: int) -> AsyncIterator[None]:
        """Writers and finn at work for the duration of the block; then they stop."""
        tasks = [asyncio.create_task(self._writer()) for _ in range(writers)]
        tasks.append(asyncio.create_task(self._approver()))
        try:
            yield
        finally:
            self._stop.set()
            _, late = await asyncio.wait(tasks, timeout=STOP_WAIT)
            for task in late:  # a request still waiting: it is resent at the end anyway
                task.cancel()
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
            failures = [o for o in outcomes if isinstance(o, Exception)]
            if failures:
                raise failures[0]

    async def resend(self, in_flight: int) -> dict[str, Reply]:
        """Every key sent so far, once more with its input; each reply, by key."""
        gate = asyncio.Semaphore(in_flight)

        async def again(write: Write) -> tuple[str, Reply]:
            async with gate:
                return write.key, await self._adjust(write, wait=RESEND_TIMEOUT)

        return dict(await asyncio.gather(*(again(write) for write in self.writes.values())))

    async def _writer(self) -> None:
        while not self._stop.is_set():
            write = self._next()
            if write is None:
                await asyncio.sleep(BACKOFF)
                continue
            reply = await self._adjust(write, wait=REQUEST_TIMEOUT)
            self.replies[write.key].append(reply)
            if reply.lost:
                self._again(write)
                await asyncio.sleep(BACKOFF)
            elif reply.status == "PENDING_APPROVAL" and reply.action_id not in self._queued:
                assert reply.action_id is not None, reply
                self._queued.add(reply.action_id)
                self._pending.put_nowait(reply.action_id)

    async def _approver(self) -> None:
        while not self._stop.is_set():
            try:
                action_id = await asyncio.wait_for(self._pending.get(), 0.1)
            except TimeoutError:
                continue
            url = self._url(len(self.approvals))
            operation = (APPROVE, {"id": action_id}, "approveAction")
            reply = await _graphql(
                self._client, url, self._keys["finn"], operation, wait=REQUEST_TIMEOUT
            )
            self.approvals.append(reply)
            if reply.problem is not None or (reply.status is None and not reply.codes):
                self.unanswered_approvals.add(action_id)
                self._pending.put_nowait(action_id)  # no answer: approve it again later
                await asyncio.sleep(BACKOFF)

    def _next(self) -> Write | None:
        if self._backlog and self._backlog[0][0] <= time.monotonic():
            return self._backlog.popleft()[1]
        write = next(self._fresh, None)
        if write is not None:
            self.writes[write.key] = write
        return write

    def _again(self, write: Write) -> None:
        if self._park:
            self.parked[write.key] = write
        else:
            self._backlog.append((time.monotonic() + RESEND_AFTER, write))

    def _url(self, index: int) -> str:
        """A serving gateway's URL, spread by `index`; a dead one's when none serves."""
        serving = [gateway for gateway in self._gateways if gateway.serving] or self._gateways
        return serving[index % len(serving)].url

    async def _adjust(self, write: Write, *, wait: float) -> Reply:
        operation = (ADJUST, {"input": write.data(), "key": write.key}, "adjustInventory")
        url, api_key = self._url(write.index), self._keys[write.principal]
        return await _graphql(self._client, url, api_key, operation, wait=wait)


# ---- crashes ---------------------------------------------------------------------------------


class Stopwatch:
    """How long each phase of a run took, for the report."""

    def __init__(self) -> None:
        self._last = time.monotonic()
        self.laps: list[str] = []

    def lap(self, phase: str) -> None:
        """The phase that just ended."""
        now = time.monotonic()
        self.laps.append(f"{phase} {now - self._last:.1f}s")
        self._last = now


async def _crash_and_restart(
    gateway: Gateway, databases: Databases, rng: random.Random
) -> list[int]:
    """SIGKILL and restart the gateway KILLS times; how many actions each kill left in flight."""
    left: list[int] = []
    for _ in range(KILLS):
        await asyncio.sleep(rng.uniform(*KILL_AFTER))
        await asyncio.to_thread(gateway.kill)
        left.append(len(await databases.in_flight()))
        await asyncio.to_thread(gateway.start)
    return left


async def _until_settled(
    databases: Databases, ids: set[str], *, since: float, limit: float
) -> tuple[float, set[str]]:
    """Wait until none of `ids` is in flight, up to `limit` seconds after `since`.

    How long it took (from `since`), and those still in flight.
    """
    while True:
        still = await databases.in_flight(among=ids)
        elapsed = time.monotonic() - since
        if not still or elapsed > limit:
            return elapsed, still
        await asyncio.sleep(0.1)


@dataclass(frozen=True)
class Kill:
    """What one SIGKILLed replica left in flight, and how long until none of it was."""

    left: set[str]  # action ids in flight right after the kill, the survivor's included
    took: float
    still: set[str]  # in flight when the wait gave up


async def _kill_and_wait_for_sweep(
    victim: Gateway, databases: Databases, rng: random.Random
) -> Kill:
    """SIGKILL `victim` mid-load; wait, up to RECOVERY_LIMIT, for its actions to settle."""
    await asyncio.sleep(rng.uniform(0.3, 1.0))
    await asyncio.to_thread(victim.kill)
    killed_at = time.monotonic()
    left = await databases.in_flight()
    took, still = await _until_settled(databases, left, since=killed_at, limit=RECOVERY_LIMIT)
    return Kill(left, took, still)


def _victims(kill: Kill, load: Load, rows: Sequence[ActionRow]) -> set[str]:
    """Replica b's actions the kill left in flight: those its clients got no answer for."""
    parked = {(write.principal, key) for key, write in load.parked.items()}
    return {
        row.id
        for row in rows
        if row.id in kill.left
        and ((row.principal, row.key) in parked or row.id in load.unanswered_approvals)
    }


def _sweep_late_or_idle(kill: Kill, load: Load, before_resend: Sequence[ActionRow]) -> list[str]:
    """The kill caught the victim's writes in flight, and the survivor settled them in time.

    The victim's own: actions whose write or approval its clients got no answer for (they are
    not sent again before the end, so only a sweep can settle them).
    """
    victims = _victims(kill, load, before_resend)
    broken = []
    if not victims:
        broken.append(f"harness: the kill caught no write of replica b's in flight: {kill}")
    if kill.still:
        broken.append(
            f"{len(kill.still)} of the {len(kill.left)} actions in flight at the kill (of which "
            f"{len(victims)} replica b's) were still in flight {kill.took:.1f}s after it "
            f"(limit: lease {LEASE_SECONDS:g}s + sweep {SWEEP_SECONDS:g}s + slack "
            f"{SLACK_SECONDS:g}s): {_examples(sorted(kill.still))}"
        )
    return broken


# ---- the invariants: each returns what it found broken, one line each ---------------------


def _examples(items: Iterable[str], count: int = 3) -> str:
    listed = list(items)
    more = f" (+{len(listed) - count} more)" if len(listed) > count else ""
    return ", ".join(listed[:count]) + more


def _slowest_first(replies: Iterable[tuple[str, Reply]]) -> list[str]:
    ordered = sorted(replies, key=lambda found: -found[1].seconds)
    return [f"{key}: {reply.describe()}" for key, reply in ordered]


def _replays_slow_or_unanswered(resent: Mapping[str, Reply]) -> list[str]:
    """The final resend: an answer for every key, within the lease and slack, never IN_PROGRESS."""
    in_progress = _slowest_first((k, r) for k, r in resent.items() if IN_PROGRESS in r.codes)
    unanswered = _slowest_first(
        (k, r) for k, r in resent.items() if r.status is None and IN_PROGRESS not in r.codes
    )
    slow = _slowest_first((k, r) for k, r in resent.items() if r.seconds > REQUEST_TIMEOUT)
    broken = []
    if in_progress:
        broken.append(
            f"{len(in_progress)} resends answered {IN_PROGRESS}: {_examples(in_progress)}"
        )
    if unanswered:
        broken.append(f"{len(unanswered)} resends got no status: {_examples(unanswered)}")
    if slow:
        broken.append(
            f"{len(slow)} resends took longer than the lease + slack ({REQUEST_TIMEOUT:g}s): "
            f"{_examples(slow)}"
        )
    return broken


def _by_key(facts: Facts) -> dict[tuple[str, str | None], list[ActionRow]]:
    """The actions of each (principal, idempotency key)."""
    found: dict[tuple[str, str | None], list[ActionRow]] = defaultdict(list)
    for row in facts.actions:
        found[row.principal, row.key].append(row)
    return found


def _keys_without_one_action(writes: Mapping[str, Write], facts: Facts) -> list[str]:
    """Each key sent has exactly one action, holding the key's input; no action has none."""
    by_key = _by_key(facts)
    counts = {key: len(by_key.get((w.principal, key), [])) for key, w in writes.items()}
    broken = []
    if wrong := [f"{key}: {n}" for key, n in counts.items() if n != 1]:
        broken.append(f"{len(wrong)} keys do not have exactly one action: {_examples(wrong)}")
    known = {(w.principal, key) for key, w in writes.items()}
    if stray := [f"{r.id} ({r.key})" for r in facts.actions if (r.principal, r.key) not in known]:
        broken.append(f"{len(stray)} actions belong to no key sent: {_examples(stray)}")
    changed = [
        key
        for key, write in writes.items()
        for row in by_key.get((write.principal, key), [])
        if {name: row.input.get(name) for name in write.data()} != write.data()
    ]
    if changed:
        broken.append(
            f"{len(changed)} actions hold another input than their key: {_examples(changed)}"
        )
    return broken


def _actions_unsettled(
    writes: Mapping[str, Write], resent: Mapping[str, Reply], facts: Facts
) -> list[str]:
    """Every action settled (IN_DOUBT is judged on its own), as the final resend reported it."""
    broken = []
    unsettled = Counter(r.status for r in facts.actions if r.status not in {*SETTLED, "IN_DOUBT"})
    if unsettled:
        broken.append(f"actions not settled after the final resend: {dict(unsettled)}")
    by_key = _by_key(facts)
    differ = [
        f"{key}: answered {reply.status}, stored {row.status}"
        for key, reply in resent.items()
        for row in by_key.get((writes[key].principal, key), [])
        if reply.status is not None and reply.status != row.status
    ]
    if differ:
        broken.append(
            f"{len(differ)} resends answered another status than stored: {_examples(differ)}"
        )
    return broken


def _failed_keys_stuck(before: Sequence[ActionRow], resent: Mapping[str, Reply]) -> list[str]:
    """A key whose action was FAILED before the final resend retries that same action."""
    failed = {row.key: row.id for row in before if row.status == "FAILED" and row.key in resent}
    stuck = [
        f"{key} ({action_id}): {resent[key].describe()}"
        for key, action_id in failed.items()
        if key is not None
        and (resent[key].action_id != action_id or resent[key].status == "FAILED")
    ]
    if not stuck:
        return []
    return [
        f"{len(stuck)} FAILED actions were not retried by resending their key: {_examples(stuck)}"
    ]


def _stock_drift(before: Mapping[tuple[str, str], int], facts: Facts) -> list[str]:
    """on_hand = what it was + the deltas of the APPLIED actions, for every (sku, location)."""
    expected = dict(before)
    for row in facts.actions:
        if row.status == "APPLIED":
            expected[row.input["sku"], row.input["location"]] += row.input["delta"]
    drift = [
        f"{sku}@{location}: on hand {facts.on_hand[sku, location]}, expected {count} "
        f"({facts.on_hand[sku, location] - count:+d})"
        for (sku, location), count in expected.items()
        if facts.on_hand[sku, location] != count
    ]
    return [f"stock does not match the APPLIED actions: {_examples(drift, 8)}"] if drift else []


def _audit_events_wrong(facts: Facts) -> list[str]:
    """One action.applied or action.recovered (APPLIED) per APPLIED action; none for others."""
    applied = facts.applied()
    counted = Counter(
        action_id
        for action_id, event, outcome in facts.events
        if action_id is not None
        and (event == "action.applied" or (event == "action.recovered" and outcome == "APPLIED"))
    )
    broken = []
    if missing := [a for a in applied if counted[a] == 0]:
        broken.append(
            f"{len(missing)} APPLIED actions have no applied/recovered event: {_examples(missing)}"
        )
    if doubled := [f"{a} x{counted[a]}" for a in applied if counted[a] > 1]:
        broken.append(f"{len(doubled)} APPLIED actions have more than one: {_examples(doubled)}")
    if stray := [a for a in counted if a not in applied]:
        broken.append(f"{len(stray)} actions not APPLIED have an applied event: {_examples(stray)}")
    in_doubt = [row.id for row in facts.actions if row.status == "IN_DOUBT"]
    doubts = [a or "?" for a, event, _ in facts.events if event == "action.in_doubt"]
    if in_doubt or doubts:
        broken.append(
            f"{len(in_doubt)} actions IN_DOUBT, {len(doubts)} action.in_doubt events (the "
            f"demo's SQL actions can always find their effect): {_examples(in_doubt or doubts)}"
        )
    return broken


def _journal_wrong(facts: Facts) -> list[str]:
    """The ERP's journal records the effect of exactly the APPLIED actions, once each."""
    if facts.journal is None:
        return [f"the ERP has no {JOURNAL} table: effects are not journaled"]
    applied = facts.applied()
    effects = Counter(action_id for action_id, recorded in facts.journal if recorded)
    voided = {action_id for action_id, recorded in facts.journal if not recorded}
    broken = []
    if stray := [a for a in effects if a not in applied]:
        broken.append(
            f"{len(stray)} {JOURNAL} effects belong to no APPLIED action: {_examples(stray)}"
        )
    if missing := [a for a in applied if effects[a] == 0]:
        broken.append(
            f"{len(missing)} APPLIED actions have no {JOURNAL} effect: {_examples(missing)}"
        )
    if void_applied := sorted(voided & applied):
        broken.append(
            f"{len(void_applied)} APPLIED actions have a void {JOURNAL} row: "
            f"{_examples(void_applied)}"
        )
    return broken


def _invariants(
    load: Load,
    stock: Mapping[tuple[str, str], int],
    before_resend: Sequence[ActionRow],
    resent: Mapping[str, Reply],
    facts: Facts,
) -> list[str]:
    """Every invariant the final state must keep, broken ones described."""
    return [
        *_replays_slow_or_unanswered(resent),
        *_keys_without_one_action(load.writes, facts),
        *_actions_unsettled(load.writes, resent, facts),
        *_failed_keys_stuck(before_resend, resent),
        *_stock_drift(stock, facts),
        *_audit_events_wrong(facts),
        *_journal_wrong(facts),
    ]


def _audit_chain_broken(environ: Mapping[str, str], database_url: str) -> list[str]:
    verified = audit_verify(environ, database_url)
    if verified.returncode == 0:
        return []
    return [
        f"gatehouse audit verify exited {verified.returncode}: {verified.stdout}{verified.stderr}"
    ]


def _exercised(load: Load, facts: Facts) -> list[str]:
    """What the run must have done for its verdict to mean anything."""
    broken = []
    if not facts.applied():
        broken.append("harness: no write was APPLIED")
    approved = [r for r in load.approvals if r.status == "APPLIED"]
    if not approved:
        broken.append(f"harness: no approval executed ({len(load.approvals)} sent)")
    return broken


def _summary(load: Load, facts: Facts, resent: Mapping[str, Reply], notes: Sequence[str]) -> str:
    statuses = Counter(row.status for row in facts.actions)
    events = Counter(event for _, event, _ in facts.events if event.startswith("action."))
    lost = Counter(
        reply.problem or ",".join(reply.codes) or "no status"
        for replies in load.replies.values()
        for reply in replies
        if reply.lost
    )
    slowest = max((r.seconds for r in resent.values()), default=0.0)
    return "\n".join(
        [
            f"{len(load.writes)} keys sent, {len(load.approvals)} approvals sent; "
            f"sends without an answer (resent): {dict(lost)}",
            *notes,
            f"actions by status: {dict(statuses)}",
            f"audit events: {dict(events)}",
            f"final resend: slowest {slowest:.2f}s",
        ]
    )


def _verdict(broken: Sequence[str], summary: str, logs: Path) -> str:
    lines = [f"{len(broken)} invariant(s) broken:", *(f"  - {line}" for line in broken)]
    return "\n".join([*lines, "run:", summary, f"gateway logs: {logs}"])


# ---- the tests -----------------------------------------------------------------------------


async def test_serve_sigkilled_during_keyed_writes_settles_every_key_once(
    estate: DemoEstate, backend: Backend, tmp_path: Path
) -> None:
    environ = _environ(estate, backend)
    config, broken = _config(tmp_path, environ)
    gateway = Gateway("serve", environ, config, tmp_path)
    rng, clock = random.Random(SEED), Stopwatch()
    try:
        async with _databases(backend) as databases, httpx.AsyncClient() as client:
            stock = await databases.on_hand()
            await asyncio.to_thread(gateway.start)
            clock.lap("start")
            load = Load(client, [gateway], estate.keys, rng=rng)
            async with load.running(WRITERS):
                left = await _crash_and_restart(gateway, databases, rng)
                await asyncio.sleep(RUN_AFTER_LAST_RESTART)
            clock.lap("load with kills")
            before_resend = await databases.actions()
            resent = await load.resend(RESEND_IN_FLIGHT)
            clock.lap("final resend")
            facts = await databases.facts()
    finally:
        gateway.stop()

    broken += _invariants(load, stock, before_resend, resent, facts)
    broken += _audit_chain_broken(environ, backend.database_url)
    broken += _exercised(load, facts)
    clock.lap("checks")
    if not any(left):
        broken.append(f"harness: no kill left an action in flight ({left})")
    notes = [
        f"{gateway.kills} kills; actions in flight right after each: {left}",
        f"phases: {', '.join(clock.laps)}",
    ]
    summary = _summary(load, facts, resent, notes)
    print(summary)  # shown with -rP: what the run did, passed or not
    assert not broken, _verdict(broken, summary, tmp_path)


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_replicas_one_sigkilled_survivor_settles_its_writes_within_seconds(
    estate: DemoEstate, backend: Backend, tmp_path: Path
) -> None:
    environ = _environ(estate, backend)
    config, broken = _config(tmp_path, environ)
    survivor, victim = (Gateway(name, environ, config, tmp_path) for name in ("a", "b"))
    rng, clock = random.Random(SEED + 1), Stopwatch()
    try:
        async with _databases(backend) as databases, httpx.AsyncClient() as client:
            stock = await databases.on_hand()
            for gateway in (survivor, victim):  # the first creates the gateway's tables
                await asyncio.to_thread(gateway.start)
            clock.lap("start")
            load = Load(client, [survivor, victim], estate.keys, rng=rng, park=True)
            async with load.running(WRITERS):
                # A kill that happens to catch none of replica b's writes in flight proves
                # nothing about the sweep: bring b back and kill it again (a few times at most).
                for _ in range(KILL_ATTEMPTS):
                    kill = await _kill_and_wait_for_sweep(victim, databases, rng)
                    if kill.still or _victims(kill, load, await databases.actions()):
                        break
                    await asyncio.to_thread(victim.start)
                await asyncio.sleep(RUN_AFTER_LAST_RESTART)
            clock.lap("load with a kill")
            before_resend = await databases.actions()
            resent = await load.resend(RESEND_IN_FLIGHT)
            clock.lap("final resend")
            facts = await databases.facts()
    finally:
        survivor.stop()
        victim.stop()

    broken += _sweep_late_or_idle(kill, load, before_resend)
    broken += _invariants(load, stock, before_resend, resent, facts)
    broken += _audit_chain_broken(environ, backend.database_url)
    broken += _exercised(load, facts)
    clock.lap("checks")
    notes = [
        f"phases: {', '.join(clock.laps)}",
        f"replica b killed with {len(kill.left)} actions in flight; settled after {kill.took:.1f}s",
    ]
    summary = _summary(load, facts, resent, notes)
    print(summary)  # shown with -rP: what the run did, passed or not
    assert not broken, _verdict(broken, summary, tmp_path)

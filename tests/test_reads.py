"""The read path's cache and freshness: maxAge, SLA status, stale-if-error."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.config import BreakerConfig, GatewayConfig
from gateway.connectors import build_connectors
from gateway.demo import DemoEstate
from gateway.errors import InvalidArgument, SourceFailed
from gateway.freshness import FreshnessStatus
from gateway.reads import Reads
from sources.breaker import BreakerState
from sources.connector import Connector
from sources.demo import CrmProcess
from tests.factories import with_source
from tests.sources.fake_http import Reply, fake_http
from tests.sources.test_http import CUSTOMER_JSON


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
async def connectors(config: GatewayConfig) -> AsyncIterator[dict[str, Connector]]:
    built = build_connectors(config)
    yield built
    for connector in built.values():
        await connector.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def reads(config: GatewayConfig, connectors: dict[str, Connector], clock: Clock) -> Reads:
    return Reads(entities=config.entities, connectors=connectors, clock=clock)


async def test_get_second_read_within_ttl_is_served_from_cache(
    reads: Reads, connectors: dict[str, Connector]
) -> None:
    first = await reads.get("Customer", "C-00002")
    calls = connectors["crm"].stats.calls
    second = await reads.get("Customer", "C-00002")
    assert first is not None
    assert second is not None
    assert (first.freshness.cached, second.freshness.cached) == (False, True)
    assert connectors["crm"].stats.calls == calls
    assert second.record == first.record


async def test_get_max_age_zero_always_reads_through(
    reads: Reads, connectors: dict[str, Connector]
) -> None:
    await reads.get("Customer", "C-00002")
    calls = connectors["crm"].stats.calls
    entry = await reads.get("Customer", "C-00002", max_age=0)
    assert entry is not None
    assert entry.freshness.cached is False
    assert connectors["crm"].stats.calls == calls + 1


async def test_get_cached_older_than_max_age_is_read_again(
    reads: Reads, clock: Clock, connectors: dict[str, Connector]
) -> None:
    await reads.get("InventoryItem", "SKU-0001")
    clock.advance(20)
    calls = connectors["erp"].stats.calls
    cached = await reads.get("InventoryItem", "SKU-0001", max_age=30)
    assert cached is not None
    assert cached.freshness.cached is True
    fresh = await reads.get("InventoryItem", "SKU-0001", max_age=10)
    assert fresh is not None
    assert fresh.freshness.cached is False
    assert connectors["erp"].stats.calls == calls + 1


async def test_freshness_status_follows_warn_and_error_after(reads: Reads, clock: Clock) -> None:
    entry = await reads.get("Customer", "C-00003")  # warn_after 10m, error_after 1h
    assert entry is not None
    freshness = entry.freshness
    assert freshness.status(clock.now) is FreshnessStatus.FRESH
    assert freshness.status(clock.now + timedelta(minutes=11)) is FreshnessStatus.AGING
    assert freshness.status(clock.now + timedelta(minutes=61)) is FreshnessStatus.STALE
    assert freshness.age_seconds(clock.now + timedelta(seconds=90)) == 90


async def test_get_negative_max_age_is_a_bad_argument(reads: Reads) -> None:
    with pytest.raises(InvalidArgument, match="maxAge"):
        await reads.get("Customer", "C-00001", max_age=-1)


async def test_get_unknown_key_is_none(reads: Reads) -> None:
    assert await reads.get("Customer", "C-99999") is None


async def test_get_source_down_serves_last_good_value_stale_with_error(
    config: GatewayConfig, own_crm: CrmProcess, clock: Clock
) -> None:
    config = with_source(config, "crm", url=own_crm.url, timeout=1.0)
    connectors = build_connectors(config)
    reads = Reads(entities=config.entities, connectors=connectors, clock=clock)
    try:
        await reads.get("Customer", "C-00001")
        own_crm.stop()
        clock.advance(5)
        stale = await reads.get("Customer", "C-00001", max_age=0)
        assert stale is not None
        assert stale.freshness.status(clock.now) is FreshnessStatus.STALE
        assert stale.freshness.cached is True
        assert "crm" in (stale.freshness.error or "")
        with pytest.raises(SourceFailed) as failure:
            await reads.get("Customer", "C-00002")
        assert failure.value.source == "crm"
        assert failure.value.code == "SOURCE_UNAVAILABLE"
    finally:
        own_crm.stop()
        for connector in connectors.values():
            await connector.close()


async def test_page_refreshes_cache_and_evict_forgets(
    reads: Reads, connectors: dict[str, Connector]
) -> None:
    page = await reads.page("InventoryItem", filters={}, first=5)
    assert len(page.entries) == 5
    assert page.has_next_page
    calls = connectors["erp"].stats.calls
    cached = await reads.get("InventoryItem", page.entries[0].record.key)
    assert cached is not None
    assert cached.freshness.cached is True
    assert connectors["erp"].stats.calls == calls
    reads.evict("InventoryItem", [page.entries[0].record.key])
    again = await reads.get("InventoryItem", page.entries[0].record.key)
    assert again is not None
    assert again.freshness.cached is False


async def test_page_with_foreign_cursor_is_a_bad_argument(reads: Reads) -> None:
    orders = await reads.page("Order", filters={}, first=1)
    with pytest.raises(InvalidArgument, match="after"):
        await reads.page("InventoryItem", filters={}, first=1, after=orders.cursors[0])


# --- a failing source: the breaker, retries, and records that break their contract -----------


def with_breaker(
    config: GatewayConfig, source: str, *, failures: int, reset: float
) -> GatewayConfig:
    return with_source(config, source, breaker=BreakerConfig(failures=failures, reset=reset))


async def test_get_source_down_breaker_opens_and_stale_is_served_without_calling(
    config: GatewayConfig, own_crm: CrmProcess, clock: Clock
) -> None:
    config = with_source(config, "crm", url=own_crm.url, timeout=1.0)
    connectors = build_connectors(with_breaker(config, "crm", failures=5, reset=60))
    reads = Reads(entities=config.entities, connectors=connectors, clock=clock)
    crm = connectors["crm"].stats
    try:
        assert await reads.get("Customer", "C-00001") is not None
        own_crm.stop()
        answers = [await reads.get("Customer", "C-00001", max_age=0) for _ in range(20)]
        # 1 good call, then 5 failures in a row: 3 attempts of the first read, 2 of the second
        # (whose third is refused); the other 18 reads fail fast without a round-trip to the
        # CRM. Each of the 20 serves the last good value.
        assert crm.calls == 1 + 5
        assert crm.breaker.state is BreakerState.OPEN
        assert crm.breaker.refused == 1 + 18
        assert all(a is not None and a.freshness.status(clock.now) for a in answers)
        last = answers[-1]
        assert last is not None
        assert last.freshness.cached is True
        assert last.freshness.error == "source 'crm' is unavailable (circuit open)"
        with pytest.raises(SourceFailed) as failure:
            await reads.get("Customer", "C-00002")
        assert (failure.value.code, failure.value.source) == ("SOURCE_UNAVAILABLE", "crm")
        assert crm.calls == 6
    finally:
        own_crm.stop()
        for connector in connectors.values():
            await connector.close()


async def test_get_after_breaker_reset_probe_closes_it_once_the_source_is_back(
    config: GatewayConfig, own_crm: CrmProcess
) -> None:
    config = with_source(config, "crm", url=own_crm.url, timeout=1.0)
    connectors = build_connectors(with_breaker(config, "crm", failures=2, reset=0.5))
    reads = Reads(entities=config.entities, connectors=connectors)
    breaker = connectors["crm"].stats.breaker
    try:
        own_crm.stop()
        with pytest.raises(SourceFailed):
            await reads.get("Customer", "C-00001")
        assert breaker.state is BreakerState.OPEN
        await asyncio.sleep(0.6)
        assert breaker.state is BreakerState.HALF_OPEN
        with pytest.raises(SourceFailed):  # the probe fails: open again, for another 0.5s
            await reads.get("Customer", "C-00001")
        assert breaker.state is BreakerState.OPEN
        with pytest.raises(SourceFailed, match="circuit open"):
            await reads.get("Customer", "C-00001")
        own_crm.restart()
        await asyncio.sleep(0.6)  # past the reset, however long the restart took
        entry = await reads.get("Customer", "C-00001")
        assert entry is not None
        assert entry.freshness.cached is False
        assert breaker.state is BreakerState.CLOSED
    finally:
        own_crm.stop()
        for connector in connectors.values():
            await connector.close()


async def test_get_transport_failure_once_is_retried_and_answered(config: GatewayConfig) -> None:
    customer = {"data": [CUSTOMER_JSON]}
    with fake_http(Reply(status=503), Reply(body=customer)) as url:
        config = with_source(config, "crm", url=url)
        connectors = build_connectors(config)
        reads = Reads(entities=config.entities, connectors=connectors)
        try:
            entry = await reads.get("Customer", "C-00001")
        finally:
            await connectors["crm"].close()
    assert entry is not None
    assert entry.record.data["name"] == CUSTOMER_JSON["name"]
    assert entry.freshness.error is None
    assert (connectors["crm"].stats.calls, connectors["crm"].stats.errors) == (2, 1)


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        (Reply(status=400), "SOURCE_REJECTED"),
        (Reply(body={"data": [CUSTOMER_JSON | {"updated_at": 42}]}), "SOURCE_DATA_ERROR"),
    ],
)
async def test_get_refusal_or_bad_data_is_not_retried(
    config: GatewayConfig, reply: Reply, code: str
) -> None:
    with fake_http(reply) as url:
        config = with_source(config, "crm", url=url)
        connectors = build_connectors(config)
        reads = Reads(entities=config.entities, connectors=connectors)
        try:
            with pytest.raises(SourceFailed) as failure:
                await reads.get("Customer", "C-00001")
        finally:
            await connectors["crm"].close()
    assert failure.value.code == code
    assert connectors["crm"].stats.calls == 1
    assert connectors["crm"].stats.breaker.state is BreakerState.CLOSED


@pytest.fixture
def erp_copy(estate: DemoEstate, tmp_path: Path) -> Path:
    """A copy of the demo ERP's SQLite file, for a test to corrupt."""
    path = tmp_path / "erp.db"
    shutil.copy(estate.erp_url.split("///", 1)[1], path)
    return path


def set_on_hand(erp: Path, sku: str, on_hand: int) -> None:
    """Write a stock level as a system without the demo ERP's CHECK constraint could hold it."""
    with contextlib.closing(sqlite3.connect(erp)) as db, db:
        db.execute("PRAGMA ignore_check_constraints = ON")
        db.execute("UPDATE stock_levels SET on_hand = ? WHERE sku = ?", (on_hand, sku))


async def test_get_stock_below_contract_minimum_is_data_error_naming_field_and_not_cached(
    config: GatewayConfig, erp_copy: Path, clock: Clock
) -> None:
    config = with_source(config, "erp", url=f"sqlite+aiosqlite:///{erp_copy}")
    connectors = build_connectors(config)
    reads = Reads(entities=config.entities, connectors=connectors, clock=clock)
    try:
        set_on_hand(erp_copy, "SKU-0001", -5)
        with pytest.raises(SourceFailed) as failure:
            await reads.get("InventoryItem", "SKU-0001")
        assert failure.value.code == "SOURCE_DATA_ERROR"
        assert failure.value.field == "InventoryItem.levels.on_hand"
        assert sum(reads.cache_status("InventoryItem").values()) == 0
        assert connectors["erp"].stats.breaker.state is BreakerState.CLOSED

        set_on_hand(erp_copy, "SKU-0001", 5)
        entry = await reads.get("InventoryItem", "SKU-0001")
        assert entry is not None
        assert entry.freshness.cached is False
        assert {level["on_hand"] for level in entry.record.data["levels"]} == {5}
    finally:
        for connector in connectors.values():
            await connector.close()


async def test_get_record_without_required_key_is_data_error_naming_field(
    config: GatewayConfig,
) -> None:
    keyless = {key: value for key, value in CUSTOMER_JSON.items() if key != "id"}
    with fake_http(Reply(body={"data": [keyless]})) as url:
        config = with_source(config, "crm", url=url)
        connectors = build_connectors(config)
        reads = Reads(entities=config.entities, connectors=connectors)
        try:
            with pytest.raises(SourceFailed) as failure:
                await reads.get("Customer", "C-00001")
        finally:
            await connectors["crm"].close()
    assert (failure.value.code, failure.value.field) == ("SOURCE_DATA_ERROR", "Customer.id")
    assert sum(reads.cache_status("Customer").values()) == 0


@contextlib.asynccontextmanager
async def crm_replying(
    config: GatewayConfig, *replies: Reply, clock: Clock | None = None
) -> AsyncIterator[tuple[Reads, Connector]]:
    """Reads over a CRM that gives `replies` in turn; the CRM's connector, to count calls."""
    with fake_http(*replies) as url:
        connectors = build_connectors(with_source(config, "crm", url=url))
        reads = Reads(entities=config.entities, connectors=connectors, clock=clock or Clock())
        try:
            yield reads, connectors["crm"]
        finally:
            await connectors["crm"].close()


CUSTOMER = {"data": [CUSTOMER_JSON]}


async def test_concurrent_misses_of_one_record_make_one_source_read(config: GatewayConfig) -> None:
    async with crm_replying(config, Reply(body=CUSTOMER, delay=0.3)) as (reads, crm):
        entries = await asyncio.wait_for(
            asyncio.gather(*(reads.get("Customer", "C-00001") for _ in range(32))), 10
        )
    assert crm.stats.calls == 1
    assert {entry.record.data["name"] for entry in entries if entry is not None} == {
        CUSTOMER_JSON["name"]
    }


async def test_concurrent_expiries_of_one_record_make_one_source_read(
    config: GatewayConfig, clock: Clock
) -> None:
    async with crm_replying(
        config, Reply(body=CUSTOMER), Reply(body=CUSTOMER, delay=0.3), clock=clock
    ) as (reads, crm):
        await reads.get("Customer", "C-00001")
        clock.advance(config.entities["Customer"].ttl + 1)
        entries = await asyncio.wait_for(
            asyncio.gather(*(reads.get("Customer", "C-00001") for _ in range(32))), 10
        )
    assert crm.stats.calls == 2
    assert all(entry is not None and entry.freshness.cached is False for entry in entries)


async def test_source_failing_under_a_shared_read_gives_every_waiter_stale_then_reads_again(
    config: GatewayConfig, clock: Clock
) -> None:
    failing = Reply(status=503, delay=0.2)
    async with crm_replying(
        config, Reply(body=CUSTOMER), failing, failing, failing, Reply(body=CUSTOMER), clock=clock
    ) as (reads, crm):
        await reads.get("Customer", "C-00001")
        clock.advance(5)
        stale = await asyncio.wait_for(
            asyncio.gather(*(reads.get("Customer", "C-00001", max_age=0) for _ in range(32))),
            10,
        )
        calls_while_failing = crm.stats.calls - 1
        again = await reads.get("Customer", "C-00001", max_age=0)
    assert all(
        e is not None and e.freshness.status(clock.now) is FreshnessStatus.STALE for e in stale
    )
    assert all(e is not None and "crm" in (e.freshness.error or "") for e in stale)
    # One read, tried again on the transport failure as any read is; never once per waiter.
    assert 1 <= calls_while_failing <= 3
    assert again is not None
    assert again.freshness.error is None
    assert not again.freshness.cached


async def test_source_failing_under_a_shared_read_with_nothing_cached_fails_every_waiter(
    config: GatewayConfig,
) -> None:
    async with crm_replying(config, Reply(status=503, delay=0.2)) as (reads, crm):
        results = await asyncio.wait_for(
            asyncio.gather(
                *(reads.get("Customer", "C-00001") for _ in range(32)), return_exceptions=True
            ),
            10,
        )
    assert all(isinstance(r, SourceFailed) and r.source == "crm" for r in results)
    assert crm.stats.calls <= 3


async def test_a_cancelled_reader_leaves_the_shared_read_to_the_others(
    config: GatewayConfig,
) -> None:
    async with crm_replying(config, Reply(body=CUSTOMER, delay=0.3)) as (reads, crm):
        first = asyncio.ensure_future(reads.get("Customer", "C-00001"))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(reads.get("Customer", "C-00001"))
        await asyncio.sleep(0.05)
        first.cancel()
        entry = await asyncio.wait_for(second, 10)
    assert entry is not None
    assert entry.record.data["name"] == CUSTOMER_JSON["name"]
    assert crm.stats.calls == 1

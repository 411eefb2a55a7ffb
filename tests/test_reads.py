"""The read path's cache and freshness: maxAge, SLA status, stale-if-error."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.config import GatewayConfig
from gateway.connectors import build_connectors
from gateway.errors import InvalidArgument, SourceFailed
from gateway.freshness import FreshnessStatus
from gateway.reads import Reads
from sources.connector import Connector
from sources.demo import CrmProcess, build_estate, seed_crm
from tests.factories import with_source


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


@pytest.fixture
def own_crm(tmp_path: Path) -> CrmProcess:
    seed_crm(tmp_path / "crm.db", build_estate(customers=20, skus=10))
    return CrmProcess.start(tmp_path / "crm.db")


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

"""The circuit breaker every connector call passes through (SourceStats.call)."""

from __future__ import annotations

import asyncio
import time

import pytest

from sources.breaker import Breaker, BreakerState
from sources.demo import CrmProcess
from sources.errors import SourceCircuitOpen, SourceRejected, SourceUnavailable
from sources.http import HttpConnector
from sources.records import FieldMapping
from sources.sql import SqlConnector, SqlEntity
from tests.sources.fake_http import Reply, fake_http
from tests.sources.test_http import CUSTOMER


def crm_connector(url: str, breaker: Breaker) -> HttpConnector:
    return HttpConnector("crm", url=url, timeout=1.0, entities=[CUSTOMER], breaker=breaker)


async def test_breaker_crm_stopped_opens_after_failures_and_calls_stop_reaching_it(
    own_crm: CrmProcess,
) -> None:
    source = crm_connector(own_crm.url, Breaker(failures=5, reset=60))
    try:
        assert await source.read("Customer", "C-00001") is not None
        own_crm.stop()
        failures: list[type[Exception]] = []
        for _ in range(20):
            with pytest.raises(SourceUnavailable) as failure:
                await source.read("Customer", "C-00001")
            failures.append(type(failure.value))
    finally:
        await source.close()

    assert failures == [SourceUnavailable] * 5 + [SourceCircuitOpen] * 15
    assert (source.stats.calls, source.stats.errors) == (1 + 5, 5)
    assert source.stats.breaker.state is BreakerState.OPEN
    assert source.stats.breaker.refused == 15


async def test_breaker_half_open_probe_closes_on_success_and_reopens_on_failure(
    own_crm: CrmProcess,
) -> None:
    breaker = Breaker(failures=1, reset=0.3)
    source = crm_connector(own_crm.url, breaker)
    try:
        own_crm.stop()
        with pytest.raises(SourceUnavailable):
            await source.read("Customer", "C-00001")
        await asyncio.sleep(0.35)
        assert breaker.state is BreakerState.HALF_OPEN
        with pytest.raises(SourceUnavailable) as probe:
            await source.read("Customer", "C-00001")
        assert type(probe.value) is SourceUnavailable  # the probe was sent, and failed
        assert breaker.state is BreakerState.OPEN
        own_crm.restart()
        await asyncio.sleep(0.35)  # past the reset, however long the restart took
        assert await source.read("Customer", "C-00001") is not None
        assert breaker.state is BreakerState.CLOSED
    finally:
        await source.close()
    assert source.stats.calls == 3


async def test_breaker_refusals_do_not_count_against_the_source() -> None:
    breaker = Breaker(failures=2, reset=60)
    with fake_http(Reply(status=400)) as url:
        source = crm_connector(url, breaker)
        try:
            for _ in range(5):
                with pytest.raises(SourceRejected):
                    await source.read_many("Customer", ["C-00001"])
        finally:
            await source.close()
    assert breaker.state is BreakerState.CLOSED
    assert source.stats.calls == 5


async def test_breaker_open_write_fails_fast_and_is_not_retried(own_crm: CrmProcess) -> None:
    source = crm_connector(own_crm.url, Breaker(failures=2, reset=60))
    try:
        own_crm.stop()
        for _ in range(2):
            with pytest.raises(SourceUnavailable):
                await source.read("Customer", "C-00001")
        calls = source.stats.calls
        started = time.perf_counter()
        with pytest.raises(SourceCircuitOpen, match="circuit open"):
            await source.update("Customer", "C-00001", {"segment": "smb"}, idempotency_key="k-1")
        elapsed = time.perf_counter() - started
    finally:
        await source.close()
    assert source.stats.calls == calls
    assert source.stats.breaker.refused == 1  # one attempt: the write's retries skip it
    assert elapsed < 0.1  # no backoff between attempts


async def test_breaker_open_sql_transaction_fails_fast_without_connecting() -> None:
    items = SqlEntity(name="Item", table="items", key="sku", fields=(FieldMapping("sku", "sku"),))
    # Nothing listens on port 1: each connect is refused at once.
    url = "postgresql+asyncpg://postgres@127.0.0.1:1/test"
    source = SqlConnector("erp", url=url, entities=[items], breaker=Breaker(failures=2))
    try:
        for _ in range(2):
            with pytest.raises(SourceUnavailable):
                await source.ping()
        with pytest.raises(SourceCircuitOpen):
            async with source.unit():
                pytest.fail("the unit of work must not start while the breaker is open")
    finally:
        await source.close()
    assert source.stats.calls == 2
    assert source.stats.by_operation == {"ping": 2}


async def test_breaker_half_open_lets_one_probe_through_at_a_time(own_crm: CrmProcess) -> None:
    breaker = Breaker(failures=1, reset=0.3)
    source = crm_connector(own_crm.url, breaker)
    try:
        own_crm.stop()
        with pytest.raises(SourceUnavailable):
            await source.read("Customer", "C-00001")
        own_crm.restart()
        await asyncio.sleep(0.35)
        probe, other = await asyncio.gather(
            source.read("Customer", "C-00001"),
            source.read("Customer", "C-00002"),
            return_exceptions=True,
        )
    finally:
        await source.close()
    assert not isinstance(probe, BaseException)
    assert probe is not None
    assert isinstance(other, SourceCircuitOpen)
    assert breaker.state is BreakerState.CLOSED

"""Source faults as GraphQL callers see them: stale-if-error, a named source, a named field."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from strawberry.types import ExecutionResult

from gateway.app import start
from gateway.config import BreakerConfig, GatewayConfig
from gateway.services import Services
from gateway.telemetry import configure_tracing
from sources.demo import CrmProcess, build_estate, seed_crm
from tests.factories import run_query, services_for, with_source
from tests.sources.fake_http import Reply, fake_http
from tests.sources.test_http import CUSTOMER_JSON


@pytest.fixture(autouse=True)
def tracing() -> None:
    """Tracing on, as the app sets it up: an error's trace id is the response's."""
    configure_tracing(otlp_endpoint=None)


@pytest.fixture
async def crm_services(
    config: GatewayConfig, database_url: str, tmp_path: Path
) -> AsyncIterator[tuple[Services, CrmProcess]]:
    seed_crm(tmp_path / "crm.db", build_estate())
    crm = CrmProcess.start(tmp_path / "crm.db")
    built = services_for(with_source(config, "crm", url=crm.url, timeout=1.0), database_url)
    await start(built)
    yield built, crm
    crm.stop()
    await built.close()


async def test_crm_stopped_serves_cached_customer_stale_and_the_rest_answers(
    crm_services: tuple[Services, CrmProcess],
) -> None:
    services, crm = crm_services
    await run_query(services, '{ customer(id: "C-00001") { name } }')
    crm.stop()
    result = await run_query(
        services,
        '{ cached: customer(id: "C-00001", maxAge: 0) { name freshness { status cached error } } '
        'uncached: customer(id: "C-00002") { name } '
        'inventoryItem(sku: "SKU-0001") { sku freshness { status } } }',
    )
    assert result.data is not None
    cached = result.data["cached"]
    assert cached["name"]
    assert cached["freshness"]["status"] == "STALE"
    assert cached["freshness"]["cached"] is True
    assert "crm" in cached["freshness"]["error"]
    assert result.data["uncached"] is None
    assert result.data["inventoryItem"]["freshness"]["status"] == "FRESH"
    assert result.errors is not None
    (error,) = result.errors
    assert error.path == ["uncached"]
    assert error.extensions is not None
    assert error.extensions.pop("traceId") == result.extensions["traceId"]
    assert error.extensions == {"code": "SOURCE_UNAVAILABLE", "source": "crm"}
    # The stale read's three attempts and this one's two open the CRM's breaker (5 failures).
    assert re.fullmatch(r"source 'crm' is unavailable( \(circuit open\))?", error.message)


@pytest.mark.parametrize(
    ("reply", "code", "field"),
    [
        (Reply(body=b"<html>maintenance</html>"), "SOURCE_DATA_ERROR", None),
        (
            Reply(body={"data": [CUSTOMER_JSON | {"updated_at": 42}]}),
            "SOURCE_DATA_ERROR",
            "Customer.updated_at",
        ),
        (Reply(status=503, body=b""), "SOURCE_UNAVAILABLE", None),
    ],
)
async def test_malformed_source_data_is_an_error_naming_source_and_field(
    config: GatewayConfig, database_url: str, reply: Reply, code: str, field: str | None
) -> None:
    with fake_http(reply) as url:
        services = services_for(with_source(config, "crm", url=url), database_url)
        await start(services)
        try:
            result = await run_query(services, '{ customer(id: "C-00001") { name } }')
        finally:
            await services.close()
    assert result.data == {"customer": None}
    assert result.errors is not None
    (error,) = result.errors
    expected = {"code": code, "source": "crm", **({"field": field} if field else {})}
    assert error.extensions is not None
    assert re.fullmatch(r"[0-9a-f]{32}", error.extensions.pop("traceId"))
    assert error.extensions == expected
    assert "Traceback" not in error.message


async def test_source_failure_detail_goes_to_the_log_and_to_operators_only(
    config: GatewayConfig, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    broken = config.entities["Order"].model_copy(update={"table": "no_such_table"})
    config = config.model_copy(update={"entities": {**config.entities, "Order": broken}})
    services = services_for(config, database_url)
    await start(services)
    try:
        with caplog.at_level(logging.WARNING, logger="gatehouse.sources"):
            result = await run_query(services, '{ order(id: "SO-100001") { id } }')
        sources = "{ sources { name lastError } }"
        operator = await run_query(services, sources, principal="olivia")
        compliance = await run_query(services, sources, principal="carla")
    finally:
        await services.close()
    assert result.errors is not None
    (error,) = result.errors
    assert error.message == "source 'erp' is unavailable"
    assert error.extensions is not None
    assert error.extensions["traceId"] == result.extensions["traceId"]
    assert "no such table" in " ".join(str(getattr(r, "detail", "")) for r in caplog.records)

    def last_error(answer: ExecutionResult) -> str:
        assert answer.data is not None
        (erp,) = [s for s in answer.data["sources"] if s["name"] == "erp"]
        return str(erp["lastError"])

    assert "no such table" in last_error(operator)
    assert last_error(compliance) == "source 'erp' is unavailable"


async def test_sources_show_the_crm_breaker_open_after_failures_then_closed(
    config: GatewayConfig, database_url: str, tmp_path: Path
) -> None:
    seed_crm(tmp_path / "crm.db", build_estate())
    crm = CrmProcess.start(tmp_path / "crm.db")
    breaker = BreakerConfig(failures=2, reset=0.5)
    config = with_source(config, "crm", url=crm.url, timeout=1.0, breaker=breaker)
    services = services_for(config, database_url)
    await start(services)
    sources = "{ sources { name breaker refusedCalls } }"
    try:
        closed = await run_query(services, sources)
        crm.stop()
        for _ in range(3):
            await run_query(services, '{ customer(id: "C-00001") { name } }')
        opened = await run_query(services, sources)
        crm.restart()
        await asyncio.sleep(0.6)
        probing = await run_query(services, sources)
        await run_query(services, '{ customer(id: "C-00001") { name } }')
        recovered = await run_query(services, sources)
    finally:
        crm.stop()
        await services.close()

    def crm_breaker(answer: ExecutionResult) -> dict[str, object]:
        assert answer.data is not None
        (found,) = [s for s in answer.data["sources"] if s["name"] == "crm"]
        return {key: found[key] for key in ("breaker", "refusedCalls")}

    assert crm_breaker(closed) == {"breaker": "CLOSED", "refusedCalls": 0}
    # the first read's third attempt and the two reads after it were refused
    assert crm_breaker(opened) == {"breaker": "OPEN", "refusedCalls": 3}
    assert crm_breaker(probing) == {"breaker": "HALF_OPEN", "refusedCalls": 3}
    assert crm_breaker(recovered) == {"breaker": "CLOSED", "refusedCalls": 3}

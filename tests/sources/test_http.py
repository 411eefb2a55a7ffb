"""The HTTP connector against the real CRM process, and a fake server for what it never does."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from gateway.demo import DemoEstate
from sources.demo import CrmProcess
from sources.errors import (
    InvalidPosition,
    SourceDataError,
    SourceError,
    SourceRejected,
    SourceTimeout,
    SourceUnavailable,
)
from sources.http import HttpConnector, HttpEntity
from sources.records import ChildMapping, FieldMapping, content_version
from tests.sources.fake_http import Reply, fake_http

# The Customer mapping as gateway/demo/gatehouse.toml declares it.
CUSTOMER = HttpEntity(
    name="Customer",
    key="id",
    fields=(
        *(FieldMapping(name, name) for name in ("id", "name", "email", "phone", "region")),
        *(FieldMapping(name, name) for name in ("segment", "etag")),
        FieldMapping("updated_at", "updated_at", type="datetime"),
    ),
    children=(
        ChildMapping(
            "contacts",
            at="contacts",
            parent_key="",
            fields=tuple(FieldMapping(name, name) for name in ("name", "email", "role")),
        ),
    ),
    one="/api/customers/{key}",
    many="/api/customers",
    list="/api/customers",
    updated_at="updated_at",
    version="etag",
)
CUSTOMER_JSON: dict[str, Any] = {
    "id": "C-00001",
    "name": "Nordlicht Bakery GmbH",
    "email": "info@nordlicht.de",
    "phone": "+49 30 1234567",
    "region": "EU-NORTH",
    "segment": "smb",
    "contacts": [{"name": "Anna Müller", "email": "anna@nordlicht.de", "role": "Owner"}],
    "updated_at": "2025-01-02T03:04:05+00:00",
    "etag": "abc123",
}


def connector(url: str, *, timeout: float = 5.0, **changes: Any) -> HttpConnector:
    """A CRM connector at `url`, its Customer mapping changed by `changes`."""
    entity = dataclasses.replace(CUSTOMER, **changes)
    return HttpConnector("crm", url=url, timeout=timeout, entities=[entity])


def ids(first: int, count: int) -> list[str]:
    return [f"C-{number:05d}" for number in range(first, first + count)]


@pytest.fixture
async def crm(estate: DemoEstate) -> AsyncIterator[HttpConnector]:
    """A connector to the session's CRM process."""
    source = connector(estate.crm.url)
    yield source
    await source.close()


@pytest.fixture
async def served(request: pytest.FixtureRequest) -> AsyncIterator[HttpConnector]:
    """A connector to a fake server giving the Reply in the test's `reply` parameter."""
    reply, timeout = request.param if isinstance(request.param, tuple) else (request.param, 5.0)
    with fake_http(reply) as url:
        source = connector(url, timeout=timeout)
        yield source
        await source.close()


# --- against the real CRM ------------------------------------------------------------------


async def test_read_known_customer_returns_it_with_contacts_in_one_call(
    crm: HttpConnector,
) -> None:
    record = await crm.read("Customer", "C-00001")

    assert record is not None
    assert record.key == record.data["id"] == "C-00001"
    assert record.data["contacts"]
    assert all(set(contact) == {"name", "email", "role"} for contact in record.data["contacts"])
    assert isinstance(record.updated_at, datetime)
    assert record.updated_at.tzinfo is not None
    assert crm.stats.calls == 1


async def test_read_unknown_id_returns_none(crm: HttpConnector) -> None:
    assert await crm.read("Customer", "C-99999") is None
    assert crm.stats.errors == 0


async def test_read_key_with_url_characters_returns_none(crm: HttpConnector) -> None:
    assert await crm.read("Customer", "C-00001#") is None


@pytest.mark.parametrize(("max_batch", "calls"), [(100, 2), (120, 1), (500, 1)])
async def test_read_many_120_ids_calls_once_per_max_batch(
    estate: DemoEstate, max_batch: int, calls: int
) -> None:
    source = connector(estate.crm.url, max_batch=max_batch)
    try:
        found = await source.read_many("Customer", [*ids(1, 119), "C-99999"])
    finally:
        await source.close()

    assert sorted(found) == ids(1, 119)
    assert source.stats.calls == calls


async def test_page_three_pages_walk_in_id_order_without_overlap(crm: HttpConnector) -> None:
    keys: list[str] = []
    after = None
    for _ in range(3):
        page = await crm.page("Customer", filters={}, search=None, limit=25, after=after)
        assert page.has_more
        assert len(page.positions) == len(page.records) == 25
        keys += [record.key for record in page.records]
        after = page.positions[-1]

    assert keys == ids(1, 75)
    assert crm.stats.calls == 3


async def test_page_limit_500_returns_a_page(crm: HttpConnector) -> None:
    page = await crm.page("Customer", filters={}, search=None, limit=500, after=None)
    assert len(page.records) == 300


async def test_page_search_part_of_name_finds_customer(crm: HttpConnector) -> None:
    known = await crm.read("Customer", "C-00042")
    assert known is not None
    part = known.data["name"].split(" ")[0][1:].upper()

    page = await crm.page("Customer", filters={}, search=part, limit=100, after=None)

    assert "C-00042" in [record.key for record in page.records]
    assert all(part.lower() in str(record.data).lower() for record in page.records)


async def test_read_version_is_the_crm_etag(crm: HttpConnector, estate: DemoEstate) -> None:
    async with httpx.AsyncClient(base_url=estate.crm.url) as client:
        raw = (await client.get("/api/customers/C-00007")).json()

    record = await crm.read("Customer", "C-00007")

    assert record is not None
    assert record.version == raw["etag"]
    assert record.version != content_version(record.data)


@pytest.mark.parametrize(
    "after",
    [
        "abc",
        "-1",
        "1.5",
        pytest.param(
            "²",
        ),
    ],
)
async def test_page_after_not_an_offset_raises_invalid_position(
    crm: HttpConnector, after: str
) -> None:
    with pytest.raises(InvalidPosition):
        await crm.page("Customer", filters={}, search=None, limit=10, after=after)
    assert crm.stats.calls == 0


async def test_read_crm_stopped_then_restarted_fails_then_recovers(own_crm: CrmProcess) -> None:
    source = connector(own_crm.url, timeout=2)
    try:
        assert await source.read("Customer", "C-00001") is not None
        own_crm.stop()
        with pytest.raises(SourceUnavailable) as failure:
            await source.read("Customer", "C-00001")
        assert failure.value.source == "crm"
        assert source.stats.healthy is False

        own_crm.restart()
        assert await source.read("Customer", "C-00001") is not None
        assert source.stats.healthy is True
    finally:
        await source.close()


# --- against a fake server ------------------------------------------------------------------


@pytest.mark.parametrize("served", [Reply(body=b"<html>oops</html>")], indirect=True)
async def test_read_body_not_json_raises_data_error(served: HttpConnector) -> None:
    with pytest.raises(SourceDataError, match="not JSON"):
        await served.read("Customer", "C-00001")
    assert served.stats.errors == 1


@pytest.mark.parametrize(
    ("served", "field"),
    [
        (Reply(body=CUSTOMER_JSON | {"updated_at": 42}), "Customer.updated_at"),
        (Reply(body=CUSTOMER_JSON | {"name": ["a"]}), "Customer.name"),
        (Reply(body=CUSTOMER_JSON | {"contacts": [{"email": {}}]}), "Customer.contacts.email"),
        pytest.param(
            Reply(body=CUSTOMER_JSON | {"contacts": "Anna"}),
            "Customer.contacts",
        ),
    ],
    indirect=["served"],
)
async def test_read_field_of_wrong_type_raises_data_error_naming_it(
    served: HttpConnector, field: str
) -> None:
    with pytest.raises(SourceDataError) as failure:
        await served.read("Customer", "C-00001")
    assert failure.value.field == field
    assert field in str(failure.value)


@pytest.mark.parametrize(
    ("served", "error"),
    [
        (Reply(status=500, body={"error": "boom"}), SourceUnavailable),
        (Reply(status=503, body=b""), SourceUnavailable),
        (Reply(status=403, body={"error": "forbidden"}), SourceRejected),
    ],
    indirect=["served"],
)
async def test_read_many_failing_answer_raises_matching_error(
    served: HttpConnector, error: type[SourceError]
) -> None:
    with pytest.raises(error) as failure:
        await served.read_many("Customer", ["C-00001"])
    assert failure.value.source == "crm"
    assert served.stats.errors == 1
    assert served.stats.healthy is False


@pytest.mark.parametrize(
    "served", [Reply(body={"data": [CUSTOMER_JSON | {"updated_at": 42}]})], indirect=True
)
async def test_read_many_malformed_record_counts_as_error(served: HttpConnector) -> None:
    with pytest.raises(SourceDataError):
        await served.read_many("Customer", ["C-1"])
    assert served.stats.errors == 1
    assert served.stats.healthy is False


@pytest.mark.parametrize("served", [(Reply(body=CUSTOMER_JSON, delay=2), 0.3)], indirect=True)
async def test_read_slow_answer_raises_timeout(served: HttpConnector) -> None:
    with pytest.raises(SourceTimeout):
        await served.read("Customer", "C-00001")
    assert served.stats.seconds < 1.5

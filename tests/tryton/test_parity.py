"""One set of behaviour tests, run against both estates: the demo's (SQL ERP and HTTP CRM)
and Tryton's (a real Tryton ERP over PostgreSQL). Same GraphQL, same policy, same answers;
only the data each estate was seeded with differs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.actions.store import Status
from gateway.app import start
from gateway.demo import DemoEstate
from gateway.services import Services
from sources.demo import CrmProcess, build_estate, create_erp, seed_crm
from sources.tryton_estate.server import TrytonServer
from tests.factories import (
    as_principal,
    left_in_flight,
    run_query,
    services_for,
    submit,
    with_source,
)
from tests.tryton.conftest import ServerFactory
from tests.tryton.estate import governed_tryton


@dataclass(frozen=True)
class Subject:
    """An estate under test: the gateway over it, its seeded keys, a way to take it down."""

    name: str
    services: Services
    sku: str
    location: str
    customer: str  # one with an e-mail on record and no open credit trouble
    outage: Callable[[], AbstractContextManager[None]]  # the system of record down, then back


@pytest.fixture(params=["demo", pytest.param("tryton", marks=pytest.mark.postgres)])
async def subject(
    request: pytest.FixtureRequest,
    estate: DemoEstate,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Subject]:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'gatehouse.db'}"
    if request.param == "demo":
        async with _demo(estate, tmp_path, database_url) as subject:
            yield subject
        return
    servers: ServerFactory = request.getfixturevalue("tryton_servers")
    server = servers()
    async with governed_tryton(server, database_url, monkeypatch) as services:
        yield Subject("tryton", services, "SKU-1004", "WH", "C-00005", _killed(server))


class _DemoSubject:
    """The demo estate over its own ERP file and CRM process."""

    def __init__(self, estate: DemoEstate, folder: Path, database_url: str) -> None:
        self._estate, self._folder, self._database_url = estate, folder, database_url
        self._services: Services | None = None
        self._crm: CrmProcess | None = None

    async def __aenter__(self) -> Subject:
        erp_url = f"sqlite+aiosqlite:///{self._folder / 'erp.db'}"
        seeded = build_estate()
        await create_erp(erp_url, seeded)
        seed_crm(self._folder / "crm.db", seeded)
        self._crm = CrmProcess.start(self._folder / "crm.db")
        config = with_source(self._estate.config(), "erp", url=erp_url, timeout=2.0)
        config = with_source(config, "crm", url=self._crm.url, timeout=1.0)
        self._services = services_for(config, self._database_url)
        await start(self._services)
        return Subject("demo", self._services, "SKU-0001", "WH-BER", "C-00005", self._down)

    async def __aexit__(self, *exc: object) -> None:
        if self._services is not None:
            await self._services.close()
        if self._crm is not None:
            self._crm.stop()

    @contextmanager
    def _down(self) -> Iterator[None]:
        assert self._crm is not None
        self._crm.stop()
        try:
            yield
        finally:
            self._crm = CrmProcess.start(self._folder / "crm.db", port=self._crm.port)


def _demo(estate: DemoEstate, folder: Path, database_url: str) -> _DemoSubject:
    return _DemoSubject(estate, folder, database_url)


def _killed(server: TrytonServer) -> Callable[[], AbstractContextManager[None]]:
    @contextmanager
    def down() -> Iterator[None]:
        server.kill()
        try:
            yield
        finally:
            server.restart()

    return down


async def stock(subject: Subject) -> int:
    entry = await subject.services.reads.get("InventoryItem", subject.sku, max_age=0)
    assert entry is not None
    (level,) = [lv for lv in entry.record.data["levels"] if lv["location"] == subject.location]
    return int(level["on_hand"])


def adjust(subject: Subject, delta: int) -> dict[str, Any]:
    return {"sku": subject.sku, "location": subject.location, "delta": delta, "reason": "count"}


# ---- reads ----------------------------------------------------------------------------------

CUSTOMER = """
query($id: ID!) { customer(id: $id) { id name email freshness { system status version } } }
"""


async def test_parity_read_customer_with_freshness_and_pii_masked(subject: Subject) -> None:
    granted = await run_query(subject.services, CUSTOMER, variables={"id": subject.customer})
    masked = await run_query(
        subject.services, CUSTOMER, principal="support-bot", variables={"id": subject.customer}
    )

    assert granted.errors is None, granted.errors
    assert granted.data is not None
    customer = granted.data["customer"]
    assert customer["id"] == subject.customer
    assert "@" in customer["email"]
    assert customer["freshness"]["status"] == "FRESH"
    assert customer["freshness"]["version"]
    assert masked.data is not None
    assert masked.data["customer"]["email"] != customer["email"]
    assert masked.extensions is not None
    assert "customer.email" in str(masked.extensions.get("masked"))


# ---- writes: policy, dry run, approval, conflict, replay --------------------------------


async def test_parity_adjust_allowed_within_limit_applied(subject: Subject) -> None:
    before = await stock(subject)

    result = await submit(
        subject.services, "inventory.adjust", adjust(subject, 5), principal="restock-bot"
    )

    assert result.status is Status.APPLIED, result
    assert await stock(subject) == before + 5


async def test_parity_adjust_denied_to_storefront(subject: Subject) -> None:
    result = await submit(
        subject.services, "inventory.adjust", adjust(subject, 5), principal="storefront"
    )

    assert result.status is Status.DENIED


async def test_parity_adjust_over_limit_reviewed_then_approved(subject: Subject) -> None:
    before = await stock(subject)

    pending = await submit(
        subject.services, "inventory.adjust", adjust(subject, 150), principal="restock-bot"
    )
    assert pending.status is Status.PENDING_APPROVAL, pending
    assert pending.action is not None
    assert await stock(subject) == before
    approved = await subject.services.writes.approve(
        pending.action.id, as_principal(subject.services, "finn"), "pallet checked"
    )

    assert approved.status is Status.APPLIED, approved
    assert await stock(subject) == before + 150


async def test_parity_dry_run_shows_diff_changes_nothing(subject: Subject) -> None:
    before = await stock(subject)

    result = await submit(subject.services, "inventory.adjust", adjust(subject, 7), dry_run=True)

    assert result.status is Status.DRY_RUN
    assert result.action is not None
    assert result.action.diff is not None
    assert result.action.diff["after"]["on_hand"] == before + 7
    assert await stock(subject) == before


async def test_parity_stale_expected_version_conflict(subject: Subject) -> None:
    change = {"customer_id": subject.customer, "email": "parity@example.org"}

    result = await submit(
        subject.services, "customer.update_contact", change, expected_version="stale-version"
    )

    assert result.status is Status.CONFLICT


async def test_parity_idempotent_replay_applies_once(subject: Subject) -> None:
    before = await stock(subject)

    first = await submit(subject.services, "inventory.adjust", adjust(subject, 3), key="parity-1")
    again = await submit(subject.services, "inventory.adjust", adjust(subject, 3), key="parity-1")

    assert first.status is again.status is Status.APPLIED
    assert first.action is not None
    assert again.action is not None
    assert again.action.id == first.action.id
    assert await stock(subject) == before + 3


# ---- faults ---------------------------------------------------------------------------------


async def test_parity_source_down_failed_then_retried(subject: Subject) -> None:
    change = {"customer_id": subject.customer, "phone": "+32 2 555 09 09"}
    with subject.outage():
        failed = await submit(subject.services, "customer.update_contact", change)
        await asyncio.sleep(0)

    assert failed.status is Status.FAILED, failed
    assert failed.action is not None
    retried = await subject.services.writes.retry(
        failed.action.id, as_principal(subject.services, "olivia")
    )
    assert retried.status is Status.APPLIED, retried


async def test_parity_crash_after_effect_recovered_applied(subject: Subject) -> None:
    before = await stock(subject)
    action = await left_in_flight(
        subject.services, "inventory.adjust", adjust(subject, 2), key="crash-parity", effect=True
    )

    assert await subject.services.writes.recover_due() == 1

    found = await subject.services.writes.get(action.id)
    assert found is not None
    assert found.status is Status.APPLIED
    assert await stock(subject) == before + 2

"""Approvals: separation of duties, limits, races, expiry, binding to input and policy;
and failed executions that are retried."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy.ext.asyncio import create_async_engine

from gateway.actions.store import Status
from gateway.app import housekeeping
from gateway.config import GatewayConfig, PolicyConfig, WritesConfig
from gateway.errors import ActionError
from gateway.services import Services
from tests.actions.conftest import Backend, running
from tests.factories import as_principal, stock, submit

SKU, LOCATION = "SKU-0002", "WH-BER"
BIG_ADJUSTMENT = {"sku": SKU, "location": LOCATION, "delta": 150, "reason": "inbound pallet"}


async def pending_credit(services: Services) -> str:
    """A support-bot credit note of 60 on one of its customer's orders: needs one approver."""
    orders = await services.reads.page("Order", filters={"status": "delivered"}, first=1)
    order = orders.entries[0].record.data
    data = {
        "customer_id": order["customer_id"],
        "order_id": order["id"],
        "amount": "60.00",
        "reason": "damaged in transit",
    }
    result = await submit(services, "credit_note.issue", data, principal="support-bot")
    assert result.status is Status.PENDING_APPROVAL, result.errors
    assert result.action is not None
    assert set(result.approvers) == {"olivia", "finn"}
    return result.action.id


async def test_two_approvers_at_once_execute_exactly_once(governed: Services) -> None:
    action_id = await pending_credit(governed)
    outcomes = await asyncio.gather(
        governed.writes.approve(action_id, as_principal(governed, "olivia"), "ok"),
        governed.writes.approve(action_id, as_principal(governed, "finn"), "ok"),
        return_exceptions=True,
    )
    applied = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, ActionError)]
    assert [r.status for r in applied] == [Status.APPLIED]
    assert len(refused) == 1
    events, _ = await governed.audit.query(action_id=action_id, limit=20)
    assert [e.event for e in events].count("action.applied") == 1


@pytest.mark.parametrize(
    ("approver", "why"),
    [
        ("support-bot", "only humans approve"),
        ("sam", "requested this action"),
        ("carla", "approver role"),
    ],
)
async def test_approval_by_the_wrong_person_is_refused(
    governed: Services, approver: str, why: str
) -> None:
    action_id = await pending_credit(governed)
    with pytest.raises(ActionError, match=why) as refusal:
        await governed.writes.approve(action_id, as_principal(governed, approver), "ok")
    assert refusal.value.code == "APPROVAL_REFUSED"
    action = await governed.writes.get(action_id)
    assert action is not None
    assert action.status is Status.PENDING_APPROVAL


async def test_approval_above_the_approvers_limit_is_refused(governed: Services) -> None:
    orders = await governed.reads.page("Order", filters={"status": "delivered"}, first=50)
    order = max((e.record.data for e in orders.entries), key=lambda o: o["total"])
    amount = min(order["total"], 20000)
    assert amount > 10000, "the demo has a delivered order over 10000"
    data = {
        "customer_id": order["customer_id"],
        "order_id": order["id"],
        "amount": str(amount),
        "reason": "contract dispute",
    }
    pending = await submit(governed, "credit_note.issue", data, principal="sam")
    assert pending.status is Status.PENDING_APPROVAL
    assert pending.action is not None
    assert pending.action.approvals_required == 2
    with pytest.raises(ActionError, match="approval limit"):
        await governed.writes.approve(pending.action.id, as_principal(governed, "olivia"), "ok")


@pytest.mark.parametrize("end", ["rejected", "applied"])
async def test_approving_a_decided_action_is_a_clear_error(governed: Services, end: str) -> None:
    action_id = await pending_credit(governed)
    finn = as_principal(governed, "finn")
    if end == "rejected":
        rejected = await governed.writes.reject(action_id, finn, "not our fault")
        assert rejected.status is Status.REJECTED
    else:
        applied = await governed.writes.approve(action_id, finn, "fine")
        assert applied.status is Status.APPLIED
    with pytest.raises(ActionError, match=f"is {end.upper()}, not pending"):
        await governed.writes.approve(action_id, as_principal(governed, "olivia"), "late")


@pytest.fixture
async def short_lived(write_config: GatewayConfig, backend: Backend) -> AsyncIterator[Services]:
    """Services whose pending actions expire at once."""
    config = write_config.model_copy(update={"writes": WritesConfig(approval_ttl=0)})
    async with running(config, backend) as built:
        yield built


async def test_approving_an_expired_action_is_a_clear_error(short_lived: Services) -> None:
    pending = await submit(short_lived, "inventory.adjust", BIG_ADJUSTMENT, principal="restock-bot")
    assert pending.status is Status.PENDING_APPROVAL
    assert pending.action is not None
    with pytest.raises(ActionError, match="is EXPIRED"):
        await short_lived.writes.approve(pending.action.id, as_principal(short_lived, "finn"), "")
    events, _ = await short_lived.audit.query(action_id=pending.action.id, limit=5)
    assert [e.event for e in events] == [
        "action.pending_approval",
        "action.expired",
        "approval.refused",
    ]


async def test_pending_action_expires_on_time_with_nobody_looking(short_lived: Services) -> None:
    pending = await submit(short_lived, "inventory.adjust", BIG_ADJUSTMENT, principal="restock-bot")
    assert pending.action is not None
    chores = asyncio.create_task(housekeeping(short_lived, every=0.05))
    try:
        for _ in range(200):  # the trail is read without expiring anything itself
            events, _ = await short_lived.audit.query(action_id=pending.action.id, limit=5)
            if len(events) > 1:
                break
            await asyncio.sleep(0.05)
    finally:
        chores.cancel()
    assert [e.event for e in events] == ["action.pending_approval", "action.expired"]


async def test_concurrent_expiry_moves_an_action_once(short_lived: Services) -> None:
    pending = await submit(short_lived, "inventory.adjust", BIG_ADJUSTMENT, principal="restock-bot")
    assert pending.action is not None
    moved = await asyncio.gather(*(short_lived.writes.expire_due() for _ in range(4)))
    assert sum(moved) == 1
    events, _ = await short_lived.audit.query(action_id=pending.action.id, limit=5)
    assert [e.event for e in events] == ["action.pending_approval", "action.expired"]


async def test_approval_of_input_altered_in_the_database_is_refused(
    governed: Services, backend: Backend
) -> None:
    pending = await submit(governed, "inventory.adjust", BIG_ADJUSTMENT, principal="restock-bot")
    assert pending.action is not None
    before = await stock(governed, SKU, LOCATION)
    engine = create_async_engine(backend.database_url)
    async with engine.begin() as connection:
        await connection.execute(
            sqlalchemy.text(
                "UPDATE actions SET input = replace(input, '150', '9150') WHERE id = :id"
            ),
            {"id": pending.action.id},
        )
    await engine.dispose()
    with pytest.raises(ActionError, match="no longer matches") as refusal:
        await governed.writes.approve(pending.action.id, as_principal(governed, "finn"), "ok")
    assert refusal.value.code == "INPUT_CHANGED"
    assert await stock(governed, SKU, LOCATION) == before


@pytest.fixture
async def own_policy(
    write_config: GatewayConfig, backend: Backend, repo_root: Path, tmp_path: Path
) -> AsyncIterator[tuple[Services, Path]]:
    """Services over a copy of the policy files that the test may edit."""
    shutil.copytree(repo_root / "policies", tmp_path / "policies")
    config = write_config.model_copy(update={"policy": PolicyConfig(dir=tmp_path / "policies")})
    async with running(config, backend) as built:
        yield built, tmp_path / "policies" / "policy.csv"


async def test_approval_under_an_older_policy_is_refused_then_decided_again(
    own_policy: tuple[Services, Path],
) -> None:
    services, policy_file = own_policy
    pending = await submit(services, "inventory.adjust", BIG_ADJUSTMENT, principal="restock-bot")
    assert pending.action is not None
    text = policy_file.read_text()
    policy_file.write_text(text.replace("need a human approver", "need an approver"))
    finn = as_principal(services, "finn")
    with pytest.raises(ActionError, match="policy changed") as refusal:
        await services.writes.approve(pending.action.id, finn, "ok")
    assert refusal.value.code == "POLICY_CHANGED"
    reloads, _ = await services.audit.query(outcome="RELOADED", limit=5)
    assert [e.event for e in reloads] == ["policy.reloaded"]
    again = await services.writes.approve(pending.action.id, finn, "ok under the new policy")
    assert again.status is Status.APPLIED


async def test_erp_unavailable_during_execution_fails_cleanly_then_retry_applies(
    governed: Services, backend: Backend
) -> None:
    before = await stock(governed, SKU, LOCATION)
    data = {"sku": SKU, "location": LOCATION, "delta": 25, "reason": "inbound"}
    async with _erp_write_lock(backend):
        failed = await submit(governed, "inventory.adjust", data)
    assert failed.status is Status.FAILED, failed.errors
    assert failed.errors[0].code in ("SOURCE_TIMEOUT", "SOURCE_UNAVAILABLE")
    assert "erp" in failed.errors[0].message
    assert await stock(governed, SKU, LOCATION) == before
    assert failed.action is not None
    queue, _ = await governed.writes.page(
        status=Status.FAILED, principal=None, visible_to=None, limit=10, after=None
    )
    assert [a.id for a in queue] == [failed.action.id]
    retried = await governed.writes.retry(failed.action.id, as_principal(governed, "olivia"))
    assert retried.status is Status.APPLIED
    assert (await stock(governed, SKU, LOCATION))["on_hand"] == before["on_hand"] + 25


class _erp_write_lock:
    """Another client holding the ERP's write lock on stock, as a long batch job would."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.sqlite: sqlite3.Connection | None = None
        self.engine = None if backend.name == "sqlite" else create_async_engine(backend.erp_url)
        self.connection: sqlalchemy.ext.asyncio.AsyncConnection | None = None

    async def __aenter__(self) -> None:
        if self.engine is None:
            path = self.backend.erp_url.split("///", 1)[1]
            self.sqlite = sqlite3.connect(path, isolation_level=None)
            self.sqlite.execute("BEGIN EXCLUSIVE")
            return
        self.connection = await self.engine.connect()
        await self.connection.execute(sqlalchemy.text("BEGIN"))
        await self.connection.execute(sqlalchemy.text("LOCK TABLE stock_levels IN EXCLUSIVE MODE"))

    async def __aexit__(self, *_: object) -> None:
        if self.sqlite is not None:
            self.sqlite.execute("ROLLBACK")
            self.sqlite.close()
        if self.connection is not None:
            await self.connection.rollback()
            await self.connection.close()
        if self.engine is not None:
            await self.engine.dispose()

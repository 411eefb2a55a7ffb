"""inventory.adjust: policy tiers, stock never negative, approval, idempotency, failures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import sqlalchemy

from gateway.actions.store import Status
from gateway.config import GatewayConfig, WritesConfig
from gateway.errors import IdempotencyKeyReused
from gateway.services import Services
from tests.actions.conftest import Backend, running
from tests.factories import as_principal, erp_connector, stock, submit

SKU, LOCATION = "SKU-0001", "WH-AMS"


def adjust(delta: int, sku: str = SKU, location: str = LOCATION) -> dict[str, object]:
    return {"sku": sku, "location": location, "delta": delta, "reason": "cycle count"}


async def test_adjust_within_agent_limit_is_applied_and_audited(governed: Services) -> None:
    before = await stock(governed, SKU, LOCATION)
    result = await submit(governed, "inventory.adjust", adjust(40), principal="restock-bot")
    assert result.status is Status.APPLIED, result.errors
    assert result.action is not None
    assert result.action.rule == "RESTOCK_WITHIN_LIMIT"
    after = await stock(governed, SKU, LOCATION)
    assert after["on_hand"] == before["on_hand"] + 40
    events, _ = await governed.audit.query(action_id=result.action.id, limit=10)
    assert [e.event for e in events] == ["action.applied"]
    assert events[0].principal == "restock-bot"
    assert events[0].on_behalf_of == "olivia"
    assert events[0].payload["decision"]["rule"] == "RESTOCK_WITHIN_LIMIT"
    assert events[0].payload["diff"]["after"]["on_hand"] == after["on_hand"]
    assert (await governed.audit.verify()).ok


async def test_adjust_costs_the_erp_one_read_and_one_transaction(governed: Services) -> None:
    erp = erp_connector(governed)
    before = dict(erp.stats.by_operation)
    result = await submit(governed, "inventory.adjust", adjust(3), principal="olivia")
    assert result.status is Status.APPLIED, result.errors
    made = {op: n - before.get(op, 0) for op, n in erp.stats.by_operation.items()}
    assert {op: n for op, n in made.items() if n} == {"transaction": 1, "read": 1}


async def test_adjust_over_agent_limit_waits_for_a_human_approver(governed: Services) -> None:
    before = await stock(governed, SKU, LOCATION)
    pending = await submit(governed, "inventory.adjust", adjust(150), principal="restock-bot")
    assert pending.status is Status.PENDING_APPROVAL
    assert pending.action is not None
    assert pending.approvers == ("finn",)  # olivia owns the agent, so she may not approve
    assert await stock(governed, SKU, LOCATION) == before

    approved = await governed.writes.approve(
        pending.action.id, as_principal(governed, "finn"), "counted twice"
    )
    assert approved.status is Status.APPLIED
    assert (await stock(governed, SKU, LOCATION))["on_hand"] == before["on_hand"] + 150
    events, _ = await governed.audit.query(action_id=pending.action.id, limit=10)
    assert [e.event for e in events] == [
        "action.pending_approval",
        "action.approved",
        "action.applied",
    ]


async def test_adjust_below_reserved_is_invalid_and_changes_nothing(governed: Services) -> None:
    before = await stock(governed, SKU, LOCATION)
    result = await submit(governed, "inventory.adjust", adjust(-(before["on_hand"] + 1)))
    assert result.status is Status.INVALID
    assert result.errors[0].field == "delta"
    assert "never goes below zero" in result.errors[0].message
    assert await stock(governed, SKU, LOCATION) == before


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"sku": SKU, "location": LOCATION, "delta": "lots", "reason": "x y z"}, "delta"),
        ({"sku": SKU, "location": LOCATION, "delta": 5}, "reason"),
        ({"sku": "", "location": LOCATION, "delta": 5, "reason": "recount"}, "sku"),
        ({"sku": SKU, "location": LOCATION, "delta": 10**7, "reason": "recount"}, "delta"),
        ({"sku": SKU, "location": LOCATION, "delta": 1, "reason": "ok!", "x": 1}, "x"),
        (adjust(5, sku="SKU-9999"), "sku"),
        (adjust(5, location="WH-XXX"), "location"),
        (adjust(0), "delta"),
    ],
)
async def test_adjust_bad_input_is_invalid_naming_the_field(
    governed: Services, data: dict[str, object], field: str
) -> None:
    result = await submit(governed, "inventory.adjust", data)
    assert result.status is Status.INVALID
    assert field in [error.field for error in result.errors]
    assert result.action is not None
    events, _ = await governed.audit.query(action_id=result.action.id, limit=5)
    assert [e.outcome for e in events] == ["INVALID"]


async def test_adjust_dry_run_shows_diff_and_freshness_and_changes_nothing(
    governed: Services,
) -> None:
    before = await stock(governed, SKU, LOCATION)
    result = await submit(
        governed, "inventory.adjust", adjust(150), principal="restock-bot", dry_run=True
    )
    assert result.status is Status.DRY_RUN
    assert result.action is not None
    assert result.action.decision == "review"
    assert result.approvers == ("finn",)
    assert result.action.diff == {
        "before": {
            **before,
            "location": LOCATION,
            "available": before["on_hand"] - before["reserved"],
        },
        "after": {
            "on_hand": before["on_hand"] + 150,
            "reserved": before["reserved"],
            "location": LOCATION,
            "available": before["on_hand"] + 150 - before["reserved"],
        },
    }
    assert result.freshness is not None
    assert result.freshness.system == "erp"
    assert result.freshness.cached is False
    assert await stock(governed, SKU, LOCATION) == before


async def test_adjust_stale_expected_version_is_conflict(governed: Services) -> None:
    record = await governed.reads.connector("InventoryItem").read("InventoryItem", SKU)
    assert record is not None
    first = await submit(governed, "inventory.adjust", adjust(5), expected_version=record.version)
    assert first.status is Status.APPLIED
    before = await stock(governed, SKU, LOCATION)
    second = await submit(governed, "inventory.adjust", adjust(5), expected_version=record.version)
    assert second.status is Status.CONFLICT
    assert second.errors[0].field == "expectedVersion"
    assert await stock(governed, SKU, LOCATION) == before


async def test_adjust_same_key_same_input_executes_once(governed: Services) -> None:
    before = await stock(governed, SKU, LOCATION)
    first = await submit(governed, "inventory.adjust", adjust(7), key="k-1")
    again = await submit(governed, "inventory.adjust", adjust(7), key="k-1")
    assert first.status is again.status is Status.APPLIED
    assert first.action is not None
    assert again.action is not None
    assert again.action.id == first.action.id
    assert (await stock(governed, SKU, LOCATION))["on_hand"] == before["on_hand"] + 7


async def test_adjust_same_key_other_input_is_refused(governed: Services) -> None:
    await submit(governed, "inventory.adjust", adjust(7), key="k-2")
    with pytest.raises(Exception, match="used before with a different input"):
        await submit(governed, "inventory.adjust", adjust(8), key="k-2")


async def test_adjust_concurrent_same_key_executes_once(governed: Services) -> None:
    before = await stock(governed, SKU, LOCATION)
    results = await asyncio.gather(
        *(submit(governed, "inventory.adjust", adjust(3), key="k-race") for _ in range(8))
    )
    assert {r.status for r in results} == {Status.APPLIED}
    assert len({r.action.id for r in results if r.action}) == 1
    assert (await stock(governed, SKU, LOCATION))["on_hand"] == before["on_hand"] + 3


async def test_adjust_concurrent_same_key_other_input_applies_one_refuses_other(
    governed: Services,
) -> None:
    # Both read in an open ERP transaction while their claims race: the loser's rolls back.
    before = await stock(governed, SKU, LOCATION)
    results = await asyncio.gather(
        *(submit(governed, "inventory.adjust", adjust(n), key="k-mixed") for n in (3, 4)),
        return_exceptions=True,
    )
    applied = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, IdempotencyKeyReused)]
    assert len(applied) == len(refused) == 1
    assert applied[0].status is Status.APPLIED
    assert applied[0].action is not None
    delta = applied[0].action.input["delta"]
    assert (await stock(governed, SKU, LOCATION))["on_hand"] == before["on_hand"] + delta


async def test_adjust_whose_key_cannot_be_claimed_changes_nothing_and_shows_no_input(
    governed: Services,
) -> None:
    # The gateway's own database refuses the claim, which runs while the ERP transaction
    # reads: the ERP rolls back, and its connector is not blamed for the failure.
    before = await stock(governed, SKU, LOCATION)
    erp = governed.connectors["erp"]
    errors = erp.stats.errors
    cascade = " CASCADE" if governed.engine.dialect.name == "postgresql" else ""
    async with governed.engine.begin() as connection:
        await connection.execute(sqlalchemy.text(f"DROP TABLE actions{cascade}"))
    secret = {**adjust(6), "reason": "call Jane at +44 20 7946 0000"}
    with pytest.raises(sqlalchemy.exc.DBAPIError, match="actions") as raised:
        await submit(governed, "inventory.adjust", secret, key="k-lost-table")
    assert await stock(governed, SKU, LOCATION) == before
    assert erp.stats.errors == errors
    # The error may be logged: it shows the statement, never the input it carried.
    assert "7946" not in str(raised.value)


@pytest.fixture
async def forgetful(write_config: GatewayConfig, backend: Backend) -> AsyncIterator[Services]:
    """Services that hold idempotency keys for no time at all."""
    config = write_config.model_copy(update={"writes": WritesConfig(idempotency_ttl=0)})
    async with running(config, backend) as built:
        yield built


async def test_adjust_key_past_its_keep_period_is_claimed_afresh(forgetful: Services) -> None:
    before = await stock(forgetful, SKU, LOCATION)
    first = await submit(forgetful, "inventory.adjust", adjust(2), key="k-old")
    second = await submit(forgetful, "inventory.adjust", adjust(3), key="k-old")
    assert first.status is second.status is Status.APPLIED
    assert first.action is not None
    assert second.action is not None
    assert second.action.id != first.action.id
    assert (await stock(forgetful, SKU, LOCATION))["on_hand"] == before["on_hand"] + 5
    # The first action keeps the key it was sent with, for the record; it holds it no more.
    stored = await forgetful.writes.get(first.action.id)
    assert stored is not None
    assert (stored.idempotency_key, stored.key_held_until) == ("k-old", None)


async def test_adjust_dry_run_then_submit_with_the_same_key_is_one_write(
    governed: Services,
) -> None:
    before = await stock(governed, SKU, LOCATION)
    dry = await submit(governed, "inventory.adjust", adjust(4), key="plan-1", dry_run=True)
    real = await submit(governed, "inventory.adjust", adjust(4), key="plan-1")
    again = await submit(governed, "inventory.adjust", adjust(4), key="plan-1")
    assert (dry.status, real.status, again.status) == (
        Status.DRY_RUN,
        Status.APPLIED,
        Status.APPLIED,
    )
    assert real.action is not None
    assert again.action is not None
    assert again.action.id == real.action.id
    assert (await stock(governed, SKU, LOCATION))["on_hand"] == before["on_hand"] + 4

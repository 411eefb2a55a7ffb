"""Crash safety: in-flight actions a dead process left behind are recovered, or in doubt.

A process that dies leaves its claimed action in flight (RECEIVED or EXECUTING) with a
lease that nobody renews. These tests make that state with the real parts (the claim
statement, the action's own implementation run in the ERP's unit of work) and a lease
already lapsed, then let recovery, a replay or an operator settle it. The SIGKILL test
(tests/test_crash.py) does the same with real processes.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from gateway.actions.store import Status
from gateway.database import actions
from gateway.errors import ActionError
from gateway.services import Services
from sources.demo import CrmProcess
from sources.errors import SourceRejected
from tests.factories import erp_rows, erp_tables, left_in_flight, run_query, submit

ADJUST = {"sku": "SKU-0001", "location": "WH-BER", "delta": 3, "reason": "cycle count"}


async def on_hand(services: Services) -> int:
    levels = erp_tables(services)["stock_levels"]
    query = select(levels.c.on_hand).where(
        levels.c.sku == ADJUST["sku"], levels.c.location == ADJUST["location"]
    )
    (row,) = await erp_rows(services, query)
    return int(row.on_hand)


async def events_of(services: Services, action_id: str) -> list[tuple[str, str]]:
    events, _ = await services.audit.query(action_id=action_id, limit=50)
    return [(e.event, e.outcome) for e in events]


async def test_recover_in_flight_action_whose_effect_committed_is_applied_once(
    governed: Services,
) -> None:
    before = await on_hand(governed)
    action = await left_in_flight(governed, "inventory.adjust", ADJUST, effect=True)

    assert await governed.writes.recover_due() == 1

    found = await governed.writes.get(action.id)
    assert found is not None
    assert found.status is Status.APPLIED
    assert found.result is not None
    assert found.result["on_hand"] == before + 3
    assert found.lease_until is None
    assert await events_of(governed, action.id) == [("action.recovered", "APPLIED")]
    replay = await submit(governed, "inventory.adjust", ADJUST, key="crash-1")
    assert replay.status is Status.APPLIED
    assert replay.action is not None
    assert replay.action.id == action.id
    assert await on_hand(governed) == before + 3  # once, however often it is replayed


async def test_recover_in_flight_action_without_effect_fails_and_its_key_retries_it(
    governed: Services,
) -> None:
    before = await on_hand(governed)
    action = await left_in_flight(governed, "inventory.adjust", ADJUST, effect=False)

    assert await governed.writes.recover_due() == 1

    found = await governed.writes.get(action.id)
    assert found is not None
    assert found.status is Status.FAILED
    assert found.error is not None
    assert "nothing was changed" in found.error
    assert await on_hand(governed) == before
    resent = await submit(governed, "inventory.adjust", ADJUST, key="crash-1")
    assert resent.status is Status.APPLIED
    assert resent.action is not None
    assert resent.action.id == action.id  # the same action, retried: not a second one
    assert await on_hand(governed) == before + 3
    assert await events_of(governed, action.id) == [
        ("action.recovered", "FAILED"),
        ("action.retried", "EXECUTING"),
        ("action.applied", "APPLIED"),
    ]


async def test_second_attempt_of_a_journaled_action_cannot_commit(governed: Services) -> None:
    before = await on_hand(governed)
    action = await left_in_flight(governed, "inventory.adjust", ADJUST, effect=True)

    implementation = governed.catalog.get("inventory.adjust")
    assert implementation is not None
    data = implementation.Input.model_validate(ADJUST)

    async def again() -> None:
        async with governed.catalog.source("inventory.adjust").unit() as unit:
            plan = await implementation.plan(data, unit)
            await implementation.execute(data, plan, unit, action_id=action.id)

    with pytest.raises(SourceRejected):
        await again()
    assert await on_hand(governed) == before + 3  # the first attempt's effect, once


async def test_replay_of_key_held_by_dead_process_takes_over_at_once(governed: Services) -> None:
    action = await left_in_flight(governed, "inventory.adjust", ADJUST, effect=True)

    started = time.monotonic()
    replay = await submit(governed, "inventory.adjust", ADJUST, key="crash-1")

    assert time.monotonic() - started < governed.config.writes.lease
    assert replay.status is Status.APPLIED
    assert replay.action is not None
    assert replay.action.id == action.id
    assert await events_of(governed, action.id) == [("action.recovered", "APPLIED")]


async def test_replay_of_key_held_by_live_process_waits_at_most_the_lease(
    governed: Services,
) -> None:
    action = await left_in_flight(governed, "inventory.adjust", ADJUST, effect=False)
    live = datetime.now(UTC) + timedelta(minutes=5)
    async with governed.engine.begin() as connection:
        await connection.execute(
            actions.update().where(actions.c.id == action.id).values(lease_until=live)
        )
    governed.writes.leases.seconds = 0.5  # as if configured `lease = "500ms"`

    started = time.monotonic()
    with pytest.raises(ActionError, match="still running") as raised:
        await submit(governed, "inventory.adjust", ADJUST, key="crash-1")

    assert raised.value.code == "IDEMPOTENCY_IN_PROGRESS"
    assert 0.5 <= time.monotonic() - started < 3


async def test_leases_renew_pushes_held_actions_on(governed: Services) -> None:
    action = await left_in_flight(governed, "inventory.adjust", ADJUST, effect=False)
    leases = governed.writes.leases

    leases.hold(action.id)
    assert await leases.renew() == 1
    assert await governed.writes.recover_due() == 0  # alive again: nothing to recover

    found = await governed.writes.get(action.id)
    assert found is not None
    assert found.status is Status.RECEIVED
    leases.release(action.id)


QUERY_IN_DOUBT = """
query { actions(status: IN_DOUBT) { edges { node { id status } } } }
"""
RESOLVE = """
mutation($id: ID!, $applied: Boolean!) {
  resolveAction(id: $id, applied: $applied, note: "checked the ERP by hand") {
    status action { id status error }
  }
}
"""


async def test_recover_action_that_cannot_tell_is_in_doubt_until_an_operator_resolves(
    governed_acme: Services,
) -> None:
    data = {"sku": "SKU-0001", "mode": "ok"}
    action = await left_in_flight(governed_acme, "item.unreliable", data, effect=False)

    assert await governed_acme.writes.recover_due() == 0  # nothing settled: it is in doubt

    found = await governed_acme.writes.get(action.id)
    assert found is not None
    assert found.status is Status.IN_DOUBT
    listed = await run_query(governed_acme, QUERY_IN_DOUBT, principal="olivia")
    assert listed.errors is None
    assert listed.data is not None
    assert [e["node"]["id"] for e in listed.data["actions"]["edges"]] == [action.id]
    refused = await run_query(
        governed_acme, RESOLVE, principal="carla", variables={"id": action.id, "applied": True}
    )
    assert refused.errors is not None
    assert "operator role" in refused.errors[0].message
    resolved = await run_query(
        governed_acme, RESOLVE, principal="olivia", variables={"id": action.id, "applied": False}
    )
    assert resolved.errors is None, resolved.errors
    assert resolved.data is not None
    assert resolved.data["resolveAction"]["status"] == "FAILED"
    twice = await run_query(
        governed_acme, RESOLVE, principal="olivia", variables={"id": action.id, "applied": True}
    )
    assert twice.errors is not None
    assert "only IN_DOUBT actions are resolved" in twice.errors[0].message
    assert await events_of(governed_acme, action.id) == [
        ("action.in_doubt", "IN_DOUBT"),
        ("action.resolve_refused", "IN_DOUBT"),
        ("action.resolved", "FAILED"),
        ("action.resolve_refused", "FAILED"),
    ]


CONTACT = {"customer_id": "C-00002", "email": "crash@example.org"}


async def test_recover_crm_action_is_in_doubt_while_crm_is_down_then_recovered(
    governed_crm: Services, own_crm: CrmProcess
) -> None:
    action = await left_in_flight(
        governed_crm, "customer.update_contact", CONTACT, principal="support-bot", effect=False
    )
    own_crm.stop()

    await governed_crm.writes.recover_due()
    found = await governed_crm.writes.get(action.id)
    assert found is not None
    assert found.status is Status.IN_DOUBT

    own_crm.restart()
    assert await governed_crm.writes.recover_due() == 1  # the sweep looks again, and can tell

    found = await governed_crm.writes.get(action.id)
    assert found is not None
    assert found.status is Status.APPLIED
    assert await events_of(governed_crm, action.id) == [
        ("action.in_doubt", "IN_DOUBT"),
        ("action.recovered", "APPLIED"),
    ]


async def test_same_client_key_from_two_principals_applies_both_changes(
    governed_crm: Services, own_crm: CrmProcess
) -> None:
    first = await submit(
        governed_crm,
        "customer.update_contact",
        {"customer_id": "C-00003", "email": "first@example.org"},
        principal="storefront",
        key="shared-key",
    )
    second = await submit(
        governed_crm,
        "customer.update_contact",
        {"customer_id": "C-00003", "email": "second@example.org"},
        principal="olivia",
        key="shared-key",
    )

    assert first.status is second.status is Status.APPLIED
    assert first.action is not None
    assert second.action is not None
    assert first.action.id != second.action.id
    assert first.action.result != second.action.result  # two versions: two real changes
    customer = await governed_crm.reads.connector("Customer").read("Customer", "C-00003")
    assert customer is not None
    assert customer.data["email"] == "second@example.org"


@pytest.mark.parametrize("mode", ["raise", "hang", "malformed"])
async def test_broken_implementation_fails_cleanly_and_key_stays_free(
    governed_acme: Services, mode: str
) -> None:
    data = {"sku": "SKU-0002", "mode": mode}
    items = erp_tables(governed_acme)["items"]
    name_of = select(items.c.name).where(items.c.sku == "SKU-0002")
    (before,) = await erp_rows(governed_acme, name_of)

    failed = await asyncio.wait_for(
        submit(governed_acme, "item.unreliable", data, key=f"broken-{mode}"), timeout=20
    )

    assert failed.status is Status.FAILED
    assert failed.action is not None
    assert failed.errors[0].code in ("SOURCE_ERROR", "SOURCE_TIMEOUT")
    assert failed.errors[0].message.startswith("source 'erp'")
    assert "jane.doe" not in failed.errors[0].message  # the exception's text stays inside
    assert await erp_rows(governed_acme, name_of) == [before]  # nothing half-applied
    again = await asyncio.wait_for(
        submit(governed_acme, "item.unreliable", data, key=f"broken-{mode}"), timeout=20
    )
    assert again.action is not None
    assert again.action.id == failed.action.id
    assert ("action.retried", "EXECUTING") in await events_of(governed_acme, failed.action.id)

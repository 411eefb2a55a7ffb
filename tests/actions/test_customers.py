"""customer.update_contact: a PATCH to the real CRM, masked in the audit, bound to a version."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from gateway.actions.store import Status
from gateway.outcomes import WriteResult
from gateway.services import Services
from sources.demo import CrmProcess
from tests.factories import as_principal, submit

CUSTOMER = "C-00001"


def crm_customer(crm: CrmProcess, customer: str = CUSTOMER) -> dict[str, Any]:
    """The customer as the CRM itself answers, bypassing the gateway."""
    response = httpx.get(f"{crm.url}/api/customers/{customer}", timeout=5)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    assert response.headers["etag"] == f'"{body["etag"]}"'
    return body


def change(**fields: Any) -> dict[str, Any]:
    return {"customer_id": CUSTOMER, **fields}


async def outcomes(services: Services, action_id: str) -> list[tuple[str, str]]:
    events, _ = await services.audit.query(action_id=action_id, limit=20)
    return [(e.event, e.outcome) for e in events]


def field_names(result: WriteResult) -> list[str | None]:
    return [error.field for error in result.errors]


async def test_update_contact_by_support_bot_is_applied_and_masked_in_audit(
    governed_crm: Services, own_crm: CrmProcess
) -> None:
    before = crm_customer(own_crm)
    email = "billing@example-customer.eu"
    assert before["email"] != email

    result = await submit(
        governed_crm,
        "customer.update_contact",
        change(email=email, phone="+49 30 1234567"),
        principal="support-bot",
    )

    assert result.status is Status.APPLIED, result.errors
    assert result.action is not None
    assert result.action.rule == "SUPPORT_UPDATES_CONTACTS"
    after = crm_customer(own_crm)
    assert (after["email"], after["phone"]) == (email, "+49 30 1234567")
    assert after["etag"] != before["etag"]
    assert after["name"] == before["name"]
    assert after["contacts"] == before["contacts"]
    assert result.action.result == {"version": after["etag"]}
    events, _ = await governed_crm.audit.query(action_id=result.action.id, limit=10)
    assert [(e.event, e.principal, e.on_behalf_of) for e in events] == [
        ("action.applied", "support-bot", "sam")
    ]
    payload = events[0].payload
    assert payload["input"] == {
        "customer_id": CUSTOMER,
        "email": "***",
        "phone": "***",
        "contacts": None,
    }
    assert payload["diff"] == {
        "before": {"email": "***", "phone": "***"},
        "after": {"email": "***", "phone": "***"},
    }
    assert email not in str(payload)
    assert before["email"] not in str(payload)


async def test_update_contact_list_is_applied(governed_crm: Services, own_crm: CrmProcess) -> None:
    contacts = [{"name": "Ada Lovelace", "email": "ada@example.org", "role": "Accounts Payable"}]
    result = await submit(
        governed_crm,
        "customer.update_contact",
        change(contacts=contacts),
        principal="storefront",
    )
    assert result.status is Status.APPLIED, result.errors
    assert crm_customer(own_crm)["contacts"] == contacts


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (change(email="not-an-email"), "email"),
        (change(phone="call me maybe"), "phone"),
        (change(), "input"),  # nothing to change: the whole input is at fault
        (change(contacts=[{"name": "X", "email": "nope", "role": "Boss"}]), "contacts.0.email"),
        (change(email="ok@example.org", name="New Name"), "name"),
        ({"customer_id": "C-99999", "email": "ok@example.org"}, "customerId"),
    ],
)
async def test_update_contact_bad_input_is_invalid_naming_the_field_and_changes_nothing(
    governed_crm: Services, own_crm: CrmProcess, data: dict[str, Any], field: str
) -> None:
    before = crm_customer(own_crm)
    result = await submit(governed_crm, "customer.update_contact", data, principal="support-bot")
    assert result.status is Status.INVALID
    assert field in field_names(result), result.errors
    assert crm_customer(own_crm) == before
    assert result.action is not None
    assert await outcomes(governed_crm, result.action.id) == [("action.invalid", "INVALID")]


async def test_update_contact_nothing_to_change_says_which_fields(governed_crm: Services) -> None:
    result = await submit(governed_crm, "customer.update_contact", change())
    assert result.status is Status.INVALID
    assert "email, phone, contacts" in result.errors[0].message


async def test_update_contact_current_expected_version_is_applied(
    governed_crm: Services, own_crm: CrmProcess
) -> None:
    etag = crm_customer(own_crm)["etag"]
    result = await submit(
        governed_crm,
        "customer.update_contact",
        change(email="current@example.org"),
        expected_version=etag,
    )
    assert result.status is Status.APPLIED, result.errors
    assert crm_customer(own_crm)["email"] == "current@example.org"


async def test_update_contact_stale_expected_version_is_conflict_and_changes_nothing(
    governed_crm: Services, own_crm: CrmProcess
) -> None:
    stale = crm_customer(own_crm)["etag"]
    first = await submit(governed_crm, "customer.update_contact", change(email="first@example.org"))
    assert first.status is Status.APPLIED
    before = crm_customer(own_crm)

    second = await submit(
        governed_crm,
        "customer.update_contact",
        change(email="second@example.org"),
        expected_version=stale,
    )

    assert second.status is Status.CONFLICT
    assert field_names(second) == ["expectedVersion"]
    assert before["etag"] in second.errors[0].message
    assert crm_customer(own_crm) == before
    assert second.action is not None
    assert await outcomes(governed_crm, second.action.id) == [("action.conflict", "CONFLICT")]


async def test_update_contact_same_key_twice_patches_once(
    governed_crm: Services, own_crm: CrmProcess
) -> None:
    original = crm_customer(own_crm)
    data = change(email="once@example.org")

    first = await submit(governed_crm, "customer.update_contact", data, key="contact-1")
    once = crm_customer(own_crm)
    again = await submit(governed_crm, "customer.update_contact", data, key="contact-1")

    assert first.status is again.status is Status.APPLIED
    assert first.action is not None
    assert again.action is not None
    assert again.action.id == first.action.id
    assert once["etag"] != original["etag"]
    assert once["updated_at"] != original["updated_at"]
    assert crm_customer(own_crm) == once  # the second request changed nothing
    assert await outcomes(governed_crm, first.action.id) == [
        ("action.applied", "APPLIED"),
        ("action.replayed", "APPLIED"),
    ]


async def test_update_contact_crm_down_fails_then_retry_applies(
    governed_crm: Services, own_crm: CrmProcess
) -> None:
    before = crm_customer(own_crm)
    own_crm.stop()

    failed = await submit(
        governed_crm,
        "customer.update_contact",
        change(email="after-outage@example.org"),
        principal="support-bot",
    )

    assert failed.status is Status.FAILED
    assert failed.action is not None
    assert "crm" in failed.errors[0].message
    assert failed.action.error is not None
    assert "crm" in failed.action.error
    own_crm.restart()
    assert crm_customer(own_crm) == before

    retried = await governed_crm.writes.retry(
        failed.action.id, as_principal(governed_crm, "support-bot")
    )

    assert retried.status is Status.APPLIED, retried.errors
    assert retried.action is not None
    assert retried.action.id == failed.action.id
    assert crm_customer(own_crm)["email"] == "after-outage@example.org"
    assert await outcomes(governed_crm, failed.action.id) == [
        ("action.failed", "FAILED"),
        ("action.retried", "EXECUTING"),
        ("action.applied", "APPLIED"),
    ]

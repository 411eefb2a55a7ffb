"""The action page: one action's whole life and its audit events; who may see it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.actions.store import Action
from gateway.config import PrincipalKind
from gateway.console.access import Page, Viewer
from gateway.console.history import shown_input
from gateway.console.sessions import ConsoleSession
from gateway.principals import Principal
from gateway.services import Services
from tests.console.flows import Console, csrf_token
from tests.factories import as_principal, submit


def test_action_page_shows_decision_approvals_diff_and_audit_events(console: Console) -> None:
    action_id = console.pending_restock(delta=160)
    with console.signed_in("finn") as finn:
        token = csrf_token(finn.get("/console/approvals").text)
        finn.post(
            f"/console/actions/{action_id}/approve", data={"csrf_token": token, "comment": "ok"}
        )
        response = finn.get(f"/console/actions/{action_id}")
    page = response.text
    assert response.status_code == 200
    assert "Adjust inventory" in page
    assert '<span class="badge good" title="APPLIED">Applied</span>' in page
    assert "RESTOCK_OVER_LIMIT" in page
    assert '<th scope="row">On hand</th>' in page
    for event in ("action.pending_approval", "action.approved", "action.applied"):
        assert f"<code>{event}</code>" in page
    assert "Result from the system of record" in page


def test_action_page_for_pending_action_offers_the_forms_to_an_approver(console: Console) -> None:
    action_id = console.pending_restock()
    with console.signed_in("finn") as finn:
        page = finn.get(f"/console/actions/{action_id}").text
    assert f'action="/console/actions/{action_id}/approve"' in page


def test_action_page_for_compliance_shows_no_forms(console: Console) -> None:
    action_id = console.pending_restock()
    with console.signed_in("carla") as carla:
        response = carla.get(f"/console/actions/{action_id}")
    assert response.status_code == 200
    assert "/approve" not in response.text
    assert "carla does not have the approver role" in response.text


@pytest.mark.parametrize("action_id", ["no-such-action", "x" * 64])
def test_action_page_unknown_id_is_404(console: Console, action_id: str) -> None:
    with console.signed_in("finn") as finn:
        assert finn.get(f"/console/actions/{action_id}").status_code == 404


def test_action_page_of_someone_elses_action_is_404_for_a_reader(console: Console) -> None:
    action_id = console.pending_restock()
    with console.signed_in("sam") as sam:  # neither approver nor compliance, nor its requester
        response = sam.get(f"/console/actions/{action_id}")
    assert response.status_code == 404
    assert "restock-bot" not in response.text


async def _contact_change(services: Services) -> Action:
    """A dry-run change of a customer's e-mail, a `pii` field, as the storefront."""
    result = await submit(
        services,
        "customer.update_contact",
        {"customer_id": "C-00001", "email": "new.person@example.com"},
        principal="storefront",
        dry_run=True,
    )
    assert result.action is not None
    return result.action


async def test_action_input_for_viewer_without_pii_grant_is_masked(services: Services) -> None:
    action = await _contact_change(services)
    now = datetime.now(UTC)
    stranger = Principal(id="pat", kind=PrincipalKind.HUMAN, display_name="Pat")
    session = ConsoleSession("pat", "csrf", now, now)
    viewer = Viewer(stranger, session, "token", frozenset({Page.AUDIT}))
    shown = shown_input(services, viewer, action)
    assert shown["email"] == "***"
    assert shown["customer_id"] == "C-00001"


async def test_action_input_for_viewer_with_pii_grant_is_whole(services: Services) -> None:
    action = await _contact_change(services)
    now = datetime.now(UTC)
    carla = as_principal(services, "carla")
    viewer = Viewer(carla, ConsoleSession("carla", "csrf", now, now), "token", frozenset())
    assert shown_input(services, viewer, action)["email"] == "new.person@example.com"

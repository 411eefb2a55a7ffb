"""The action page: one action's whole life and its audit events; who may see it."""

from __future__ import annotations

import re
import sqlite3
from datetime import UTC, datetime

import pytest

from gateway.actions.store import Action
from gateway.config import PrincipalKind
from gateway.console import changes
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


def _erp_stock(console: Console, sku: str, location: str) -> int:
    erp = console.database.parent / "erp.db"
    with sqlite3.connect(erp) as connection:
        row = connection.execute(
            "SELECT on_hand FROM stock_levels WHERE sku = ? AND location = ?", (sku, location)
        ).fetchone()
    return int(row[0])


def _set_erp_stock(console: Console, sku: str, location: str, on_hand: int) -> None:
    """Someone changes the stock in the ERP itself, behind the gateway's back."""
    erp = console.database.parent / "erp.db"
    with sqlite3.connect(erp) as connection:
        connection.execute(
            "UPDATE stock_levels SET on_hand = ? WHERE sku = ? AND location = ?",
            (on_hand, sku, location),
        )


def test_action_page_when_record_unchanged_says_it_was_read_again(console: Console) -> None:
    action_id = console.pending_restock(delta=140, sku="SKU-0004")
    with console.signed_in("finn") as finn:
        page = finn.get(f"/console/actions/{action_id}").text
    assert "The record is as the requester saw it" in page
    assert "Read again from erp just now" in page
    assert "“Before” as erp held it when the action was planned" in page
    assert f'action="/console/actions/{action_id}/approve"' in page


def test_action_page_when_record_moved_shows_now_and_what_approving_would_apply(
    console: Console,
) -> None:
    sku, location = "SKU-0003", "WH-BER"
    seen = _erp_stock(console, sku, location)
    action_id = console.pending_restock(delta=200, sku=sku)
    _set_erp_stock(console, sku, location, seen + 30)
    with console.signed_in("finn") as finn:
        page = finn.get(f"/console/actions/{action_id}").text
    section = page[
        page.index('id="read-again"') : page.index("</section>", page.index("read-again"))
    ]
    assert "The record has changed since this was requested" in section
    on_hand = re.search(r'<th scope="row">On hand</th>(.*?)</tr>', section, re.S)
    assert on_hand is not None
    cells = re.findall(r"<td[^>]*>([^<]*)", on_hand.group(1))
    expected = [seen + 30, seen + 230, seen, seen + 200]  # now, if approved, requested, asked
    assert [c.strip() for c in cells] == [str(n) for n in expected]
    assert 'class="moved"' in section
    # Approving applies the relative change to what the record holds now, as the page said.
    with console.signed_in("finn") as finn:
        token = csrf_token(finn.get(f"/console/actions/{action_id}").text)
        approved = finn.post(f"/console/actions/{action_id}/approve", data={"csrf_token": token})
    assert approved.status_code == 303
    assert _erp_stock(console, sku, location) == seen + 230


def test_action_page_for_contact_change_shows_new_email_to_approver_granted_pii(
    console: Console,
) -> None:
    data = console.graphql(
        "storefront",
        'mutation { updateCustomerContact(input: {customerId: "C-00002", '
        'email: "new.buyer@example.com"}) { status action { id } } }',
    )
    action_id = data["updateCustomerContact"]["action"]["id"]
    with console.signed_in("finn") as finn:
        page = finn.get(f"/console/actions/{action_id}").text
    row = re.search(r'<th scope="row">E-mail</th>(.*?)</tr>', page, re.S)
    assert row is not None
    assert "not kept (personal data)" in row.group(1)
    assert "new.buyer@example.com" in row.group(1)
    change = page[page.index("<h2>The change</h2>") : page.index("<h2>Details</h2>")]
    assert "***" not in change
    assert "<pre>" not in change  # the input is a list of labelled fields, not JSON
    assert "<dt>E-mail</dt><dd>new.buyer@example.com</dd>" in change


async def test_change_rows_for_viewer_without_pii_grant_hide_both_sides(
    services: Services,
) -> None:
    action = await _contact_change(services)
    seen = changes.Seen(frozenset({"email", "phone", "contacts"}), False, None)
    (email,) = [row for row in changes.rows(action, seen) if row.label == "E-mail"]
    assert (email.before, email.after) == (changes.HIDDEN, changes.HIDDEN)


async def test_change_rows_for_viewer_with_pii_grant_show_the_new_value(
    services: Services,
) -> None:
    action = await _contact_change(services)
    seen = changes.Seen(frozenset({"email", "phone", "contacts"}), True, None)
    (email,) = [row for row in changes.rows(action, seen) if row.label == "E-mail"]
    assert (email.before, email.after) == (changes.NOT_KEPT, "new.person@example.com")


def test_action_page_of_rejected_action_shows_the_reason_as_a_reason(console: Console) -> None:
    action_id = console.pending_restock()
    with console.signed_in("finn") as finn:
        token = csrf_token(finn.get(f"/console/actions/{action_id}").text)
        finn.post(
            f"/console/actions/{action_id}/reject",
            data={"csrf_token": token, "reason": "no pallet arrived today"},
        )
        page = finn.get(f"/console/actions/{action_id}").text
    assert '<dt>Reason for rejecting</dt><dd class="reason">“no pallet arrived today”</dd>' in page
    assert "bad-text" not in page
    assert "<dt>Error</dt>" not in page


@pytest.mark.parametrize("path", ["/console/nothing-here", "/console/actions/x/y/z"])
def test_unknown_console_url_is_an_html_page_not_json(console: Console, path: str) -> None:
    with console.signed_in("finn") as finn:
        response = finn.get(path)
        posted = finn.post(path, data={})
    with console.client() as stranger:
        signed_out = stranger.get(path)
    for answer in (response, posted, signed_out):
        assert answer.status_code == 404
        assert answer.headers["content-type"].startswith("text/html")
        assert "No such page" in answer.text
        assert '"detail"' not in answer.text
    assert 'href="/console/approvals"' in response.text  # signed in: the navigation is there
    assert 'href="/console/login"' in signed_out.text


def test_action_url_too_long_is_an_html_page(console: Console) -> None:
    with console.signed_in("finn") as finn:
        response = finn.get(f"/console/actions/{'x' * 65}")
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/html")
    assert "That address is not right" in response.text

"""The approvals inbox: what an approver sees, the forms, separation of duties, CSRF."""

from __future__ import annotations

import re

import pytest

from tests.console.flows import Console, csrf_token


def _card(html: str, action_id: str) -> str:
    """One action's card on the inbox page."""
    start = html.index(f'id="action-{action_id}"')
    end = html.find("</article>", start)
    return html[start:end]


def test_inbox_as_approver_shows_request_with_rule_diff_and_forms(console: Console) -> None:
    action_id = console.pending_restock(delta=150)
    with console.signed_in("finn") as finn:
        response = finn.get("/console/approvals?sort=newest")
    assert response.status_code == 200
    card = _card(response.text, action_id)
    assert "Waiting for your decision" in card
    assert re.search(
        r"Requested by <strong>restock-bot</strong>.*on behalf of <strong>olivia", card
    )
    assert "RESTOCK_OVER_LIMIT" in card
    assert "need a human approver" in card
    assert '<th scope="row">On hand</th>' in card
    assert f'action="/console/actions/{action_id}/approve"' in card
    assert f'action="/console/actions/{action_id}/reject"' in card


def test_inbox_lists_soonest_deadline_first_and_newest_first_when_asked(
    console: Console,
) -> None:
    older, newer = console.pending_restock(), console.pending_restock()
    with console.signed_in("finn") as finn:
        by_deadline = finn.get("/console/approvals").text
        by_age = finn.get("/console/approvals?sort=newest").text
    assert by_deadline.index(f"action-{older}") < by_deadline.index(f"action-{newer}")
    assert by_age.index(f"action-{newer}") < by_age.index(f"action-{older}")


def test_inbox_for_agents_owner_offers_no_approve_form_and_says_why(console: Console) -> None:
    action_id = console.pending_restock()
    with console.signed_in("olivia") as olivia:
        card = _card(olivia.get("/console/approvals?sort=newest").text, action_id)
    assert "/approve" not in card
    assert "/reject" not in card
    assert "You can't decide this one: olivia requested this action" in card
    assert "<strong>finn</strong>" in card  # who can


@pytest.mark.parametrize("principal", ["carla", "sam"])
def test_inbox_for_non_approver_is_403(console: Console, principal: str) -> None:
    with console.signed_in(principal) as client:
        response = client.get("/console/approvals")
    assert response.status_code == 403
    assert "Not available to you" in response.text
    assert 'href="/console/approvals"' not in response.text  # not in the navigation either


def test_approve_as_approver_applies_and_goes_to_action_page(console: Console) -> None:
    action_id = console.pending_restock()
    with console.signed_in("finn") as finn:
        token = csrf_token(finn.get("/console/approvals").text)
        response = finn.post(
            f"/console/actions/{action_id}/approve",
            data={"csrf_token": token, "comment": "pallet on the dock"},
        )
        assert response.status_code == 303
        assert response.headers["location"] == f"/console/actions/{action_id}?done=approved"
        page = finn.get(response.headers["location"]).text
    assert console.status_of(action_id) == "APPLIED"
    assert "Your approval was recorded." in page
    assert "pallet on the dock" in page


@pytest.mark.parametrize("token", [None, "", "forged-token"])
def test_approve_without_right_csrf_token_is_403_and_changes_nothing(
    console: Console, token: str | None
) -> None:
    action_id = console.pending_restock()
    with console.signed_in("finn") as finn:  # signing in is audited too: count after it
        events = _action_events(console, action_id)
        data = {"comment": "ok"} | ({} if token is None else {"csrf_token": token})
        response = finn.post(f"/console/actions/{action_id}/approve", data=data)
    assert response.status_code == 403
    assert "Nothing was changed" in response.text
    assert console.status_of(action_id) == "PENDING_APPROVAL"
    assert _action_events(console, action_id) == events


def _action_events(console: Console, action_id: str) -> int:
    """How many audit events name the action."""
    return int(
        console.sql("SELECT count(*) FROM audit_events WHERE action_id = ?", action_id)[0][0]
    )


def test_approve_with_another_sessions_token_is_403(console: Console) -> None:
    action_id = console.pending_restock()
    with console.signed_in("olivia") as olivia, console.signed_in("finn") as finn:
        others = csrf_token(olivia.get("/console/sources").text)
        response = finn.post(f"/console/actions/{action_id}/approve", data={"csrf_token": others})
    assert response.status_code == 403
    assert console.status_of(action_id) == "PENDING_APPROVAL"


def test_approve_posted_by_agents_owner_shows_server_refusal_not_traceback(
    console: Console,
) -> None:
    action_id = console.pending_restock()
    with console.signed_in("olivia") as olivia:
        token = csrf_token(olivia.get("/console/approvals").text)
        response = olivia.post(f"/console/actions/{action_id}/approve", data={"csrf_token": token})
    assert response.status_code == 409
    assert "Could not approve this action" in response.text
    assert "APPROVAL_REFUSED" in response.text
    assert "Traceback" not in response.text
    assert console.status_of(action_id) == "PENDING_APPROVAL"


def test_approve_twice_shows_not_pending_message(console: Console) -> None:
    action_id = console.pending_restock()
    with console.signed_in("finn") as finn:
        token = csrf_token(finn.get("/console/approvals").text)
        finn.post(f"/console/actions/{action_id}/approve", data={"csrf_token": token})
        again = finn.post(f"/console/actions/{action_id}/approve", data={"csrf_token": token})
    assert again.status_code == 409
    assert "Could not approve this action" in again.text


def test_reject_without_reason_is_400_and_stays_pending(console: Console) -> None:
    action_id = console.pending_restock()
    with console.signed_in("finn") as finn:
        token = csrf_token(finn.get("/console/approvals").text)
        response = finn.post(
            f"/console/actions/{action_id}/reject", data={"csrf_token": token, "reason": " "}
        )
    assert response.status_code == 400
    assert "Say why you reject it" in response.text
    assert console.status_of(action_id) == "PENDING_APPROVAL"


def test_reject_with_reason_rejects_and_records_it(console: Console) -> None:
    action_id = console.pending_restock()
    with console.signed_in("finn") as finn:
        token = csrf_token(finn.get("/console/approvals").text)
        response = finn.post(
            f"/console/actions/{action_id}/reject",
            data={"csrf_token": token, "reason": "no delivery expected today"},
        )
        page = finn.get(response.headers["location"]).text
    assert console.status_of(action_id) == "REJECTED"
    assert "no delivery expected today" in page
    assert "Rejected by an approver" in page


def test_approve_unknown_action_is_404(console: Console) -> None:
    with console.signed_in("finn") as finn:
        token = csrf_token(finn.get("/console/approvals").text)
        response = finn.post("/console/actions/no-such-action/approve", data={"csrf_token": token})
    assert response.status_code == 404


def test_approve_posted_without_session_goes_to_sign_in_and_changes_nothing(
    console: Console,
) -> None:
    action_id = console.pending_restock()
    with console.client() as client:
        response = client.post(f"/console/actions/{action_id}/approve", data={"comment": "x"})
    assert response.status_code == 303
    assert response.headers["location"] == "/console/login?next=%2Fconsole%2F"
    assert console.status_of(action_id) == "PENDING_APPROVAL"

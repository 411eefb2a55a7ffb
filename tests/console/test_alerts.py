"""The alerts page: open owner alerts, and notifications that could not be delivered, sent
again by an operator. Deliveries go to the session's inbox (a real SMTP and webhook process)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from gateway.demo import DemoEstate
from gateway.demo.inbox_process import InboxProcess
from tests.console.flows import Console, csrf_token


@pytest.fixture
def inbox(estate: DemoEstate) -> Iterator[InboxProcess]:
    inbox = estate.mailroom.inbox
    assert inbox is not None
    inbox.clear()
    yield inbox
    inbox.clear()


def _rejected_for_olivia(console: Console) -> str:
    """restock-bot asks, finn rejects: olivia (its owner) hears of it on ops-slack."""
    action_id = console.pending_restock()
    with console.signed_in("finn") as finn:
        token = csrf_token(finn.get(f"/console/actions/{action_id}").text)
        finn.post(
            f"/console/actions/{action_id}/reject",
            data={"csrf_token": token, "reason": "not this week"},
        )
    return action_id


def _until(check: object, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if callable(check) and check():
            return
        time.sleep(0.1)
    raise AssertionError("not in time")


def test_a_delivery_refused_with_410_is_listed_and_sent_again(
    console: Console, inbox: InboxProcess
) -> None:
    inbox.behave("ops-slack", [410])
    action_id = _rejected_for_olivia(console)
    with console.signed_in("sam") as sam:
        _until(
            lambda: (
                'Deliveries that failed <span class="muted">(1)' in sam.get("/console/alerts").text
            )
        )
        page = sam.get("/console/alerts").text
        assert "the receiver answered 410 Gone" in page
        assert f'href="/console/actions/{action_id}"' in page
        token = csrf_token(page)
        sent = sam.post("/console/alerts/channels/ops-slack/retry", data={"csrf_token": token})
        assert sent.status_code == 303
        assert "1 notification will be sent again." in sam.get(sent.headers["location"]).text
    hooks = inbox.wait_for_hooks("ops-slack", 2)  # the refused one, then the one taken
    assert "rejected" in hooks[1]["json"]["text"]


def test_the_alerts_page_is_for_operators_only(console: Console) -> None:
    with console.signed_in("carla") as carla:
        assert carla.get("/console/alerts").status_code == 403
        assert 'href="/console/alerts"' not in carla.get("/console/").text
    with console.signed_in("sam") as sam:
        page = sam.get("/console/alerts").text
    assert "<h1>Alerts</h1>" in page
    assert 'href="/console/alerts"' in page


def test_retry_without_csrf_token_is_refused(console: Console) -> None:
    with console.signed_in("sam") as sam:
        response = sam.post("/console/alerts/channels/ops-slack/retry", data={})
    assert response.status_code == 403

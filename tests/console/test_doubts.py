"""Actions in doubt in the console: the queue, then and now side by side, resolving."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from gateway.app import create_app, start
from gateway.config import ActionConfig, GatewayConfig
from gateway.demo import DemoEstate
from gateway.settings import Settings
from sources.demo import build_estate, create_erp
from tests.console.flows import Console, csrf_token
from tests.factories import left_in_flight, live_server, services_for, with_source

UNRELIABLE = ActionConfig(implementation="tests.acme.actions:Unreliable", source="erp")


@dataclass(frozen=True)
class InDoubt:
    """A live console over an estate where one write was left in doubt by a 'crash'."""

    console: Console
    action_id: str


async def _leave_in_doubt(config: GatewayConfig, database_url: str) -> str:
    """What a process that died while applying an approved write leaves: the ERP changed,
    the action in flight with its lease lapsed; recovery cannot tell (the implementation
    keeps no journal)."""
    services = services_for(config, database_url)
    await start(services)
    try:
        data = {"sku": "SKU-0001", "mode": "ok"}
        action = await left_in_flight(services, "item.unreliable", data, effect=True, approved=True)
        await services.writes.recover_due()
        return action.id
    finally:
        await services.close()


@pytest.fixture(scope="module")
def in_doubt(estate: DemoEstate, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InDoubt]:
    folder = tmp_path_factory.mktemp("doubts")
    erp_url = f"sqlite+aiosqlite:///{folder / 'erp.db'}"
    asyncio.run(create_erp(erp_url, build_estate()))
    database = folder / "gatehouse.db"
    database_url = f"sqlite+aiosqlite:///{database}"
    config = with_source(estate.config(), "erp", url=erp_url, timeout=2.0)
    config = config.model_copy(update={"actions": {**config.actions, "unreliable": UNRELIABLE}})
    action_id = asyncio.run(_leave_in_doubt(config, database_url))
    app = create_app(Settings(database_url=database_url), config)
    with live_server(app) as server:
        yield InDoubt(Console(url=server.url, keys=estate.keys, database=database), action_id)


def test_in_doubt_queue_lists_action_for_operator(in_doubt: InDoubt) -> None:
    with in_doubt.console.signed_in("olivia") as olivia:
        home = olivia.get("/console/approvals")
        queue = olivia.get("/console/in-doubt")
    assert 'href="/console/in-doubt"' in home.text  # in the navigation
    assert queue.status_code == 200
    assert f'id="action-{in_doubt.action_id}"' in queue.text
    assert "In doubt: a person must check the system" in queue.text


def test_in_doubt_page_shows_record_when_planned_asked_and_now(in_doubt: InDoubt) -> None:
    with in_doubt.console.signed_in("olivia") as olivia:
        page = olivia.get(f"/console/actions/{in_doubt.action_id}")
    assert page.status_code == 200
    section = page.text[page.text.index('id="in-doubt"') :]
    row = section[section.index('<th scope="row">Name</th>') :]
    row = row[: row.index("</tr>")]
    # planned against the seeded name, asked for "half-applied", and the ERP holds it now
    cells = [cell.split("<")[0] for cell in row.split("<td>")[1:]]
    assert cells[1:] == ["half-applied", "half-applied "]
    assert cells[0] not in ("half-applied", "—")
    assert "(differs from when planned)" in row
    assert f'action="/console/actions/{in_doubt.action_id}/resolve"' in section


def test_in_doubt_queue_shows_headline_and_labelled_change(in_doubt: InDoubt) -> None:
    with in_doubt.console.signed_in("olivia") as olivia:
        queue = olivia.get("/console/in-doubt").text
    card = queue[queue.index(f'id="action-{in_doubt.action_id}"') :]
    card = card[: card.index("</article>")]
    assert ", requested by " in card
    assert '<th scope="row">Name</th>' in card
    assert '<th scope="row">name</th>' not in card


def test_in_doubt_resolve_refused_to_non_operator(in_doubt: InDoubt) -> None:
    with in_doubt.console.signed_in("carla") as carla:
        queue = carla.get("/console/in-doubt")
        page = carla.get(f"/console/actions/{in_doubt.action_id}")
        posted = carla.post(
            f"/console/actions/{in_doubt.action_id}/resolve",
            data={"csrf_token": csrf_token(page.text), "applied": "yes", "note": "looked"},
        )
    assert queue.status_code == 403
    assert "An operator settles actions in doubt" in page.text
    assert posted.status_code == 403
    assert in_doubt.console.sql("SELECT status FROM actions WHERE id = ?", in_doubt.action_id) == [
        ("IN_DOUBT",)
    ]


def test_in_doubt_resolve_without_note_changes_nothing(in_doubt: InDoubt) -> None:
    with in_doubt.console.signed_in("olivia") as olivia:
        page = olivia.get(f"/console/actions/{in_doubt.action_id}")
        posted = olivia.post(
            f"/console/actions/{in_doubt.action_id}/resolve",
            data={"csrf_token": csrf_token(page.text), "applied": "yes", "note": ""},
        )
    assert posted.status_code == 400
    assert "how you checked" in posted.text
    assert in_doubt.console.sql("SELECT status FROM actions WHERE id = ?", in_doubt.action_id) == [
        ("IN_DOUBT",)
    ]


def test_in_doubt_resolved_by_operator_is_applied_audited_and_not_twice(
    in_doubt: InDoubt,
) -> None:
    action_id = in_doubt.action_id
    with in_doubt.console.signed_in("olivia") as olivia:
        token = csrf_token(olivia.get(f"/console/actions/{action_id}").text)
        form = {"csrf_token": token, "applied": "yes", "note": "the ERP shows the new name"}
        done = olivia.post(f"/console/actions/{action_id}/resolve", data=form)
        shown = olivia.get(done.headers["location"])
        again = olivia.post(f"/console/actions/{action_id}/resolve", data=form)
    assert done.status_code == 303
    assert f"You resolved action {action_id}" in shown.text
    assert f'id="action-{action_id}"' not in shown.text  # no longer in the queue
    assert again.status_code == 409
    assert "Could not resolve this action" in again.text
    assert in_doubt.console.sql("SELECT status FROM actions WHERE id = ?", action_id) == [
        ("APPLIED",)
    ]
    events = in_doubt.console.sql(
        "SELECT event, principal FROM audit_events WHERE action_id = ? ORDER BY seq", action_id
    )
    assert ("action.resolved", "olivia") in events
    assert events[-1] == ("action.resolve_refused", "olivia")


def test_in_doubt_operator_sees_no_other_actions(in_doubt: InDoubt) -> None:
    other = in_doubt.console.pending_restock()
    with in_doubt.console.signed_in("sam") as sam:  # an operator, neither approver nor auditor
        queue = sam.get("/console/in-doubt")
        elsewhere = sam.get(f"/console/actions/{other}")
    assert queue.status_code == 200
    assert elsewhere.status_code == 404

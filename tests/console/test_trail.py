"""The audit trail page: compliance only, filters, paging, chain status, downloads."""

from __future__ import annotations

import asyncio
import csv
import html
import io
import json
import re
from collections.abc import Iterator

import pytest

from gateway.app import create_app
from gateway.audit import EXPORT_COLUMNS, AuditTrail
from gateway.console import trail
from gateway.database import create_engine
from gateway.demo import DemoEstate
from gateway.settings import Settings
from tests.console.flows import Console, csrf_token
from tests.factories import live_server


@pytest.fixture(autouse=True)
def _activity(console: Console) -> None:
    """Events by an agent (a pending restock) and by a person (finn's approval)."""
    console.pending_restock()
    with console.signed_in("finn") as finn:
        finn.get("/console/approvals")
    console.graphql(
        "finn",
        'mutation { adjustInventory(input: {sku: "SKU-0002", location: "WH-BER", delta: 5, '
        'reason: "recount"}) { status } }',
    )


def _export(console: Console, query: str) -> str:
    with console.signed_in("carla") as carla:
        response = carla.get(f"/console/audit/export?{query}")
    assert response.status_code == 200, response.text
    return response.text


def _trail_export(console: Console, **filters: str) -> str:
    async def run() -> str:
        engine = create_engine(f"sqlite+aiosqlite:///{console.database}")
        out = io.StringIO()
        try:
            await AuditTrail(engine).export(out, format="csv", **filters)  # type: ignore[arg-type]
        finally:
            await engine.dispose()
        return out.getvalue()

    return asyncio.run(run())


def test_audit_as_compliance_shows_events_and_intact_chain(console: Console) -> None:
    with console.signed_in("carla") as carla:
        response = carla.get("/console/audit")
    assert response.status_code == 200
    assert "The trail is intact." in response.text
    assert "<code>action.pending_approval</code>" in response.text


@pytest.mark.parametrize("principal", ["finn", "olivia", "sam"])
def test_audit_for_anyone_but_compliance_is_403(console: Console, principal: str) -> None:
    with console.signed_in(principal) as client:
        assert client.get("/console/audit").status_code == 403
        assert client.get("/console/audit/export?format=csv").status_code == 403


def test_audit_filter_by_agents_shows_only_agents(console: Console) -> None:
    with console.signed_in("carla") as carla:
        page = carla.get("/console/audit?principal_kind=agent").text
    assert "restock-bot" in page
    assert '<br><span class="muted">Person' not in page
    assert '<option value="agent" selected>' in page


def test_audit_events_newest_first(console: Console) -> None:
    with console.signed_in("carla") as carla:
        seqs = _seqs(carla.get("/console/audit").text)
    assert seqs == sorted(seqs, reverse=True)
    assert seqs[0] == console.sql("SELECT max(seq) FROM audit_events")[0][0]


def test_audit_paging_goes_older_then_newer_again(
    console: Console, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trail, "PAGE_SIZE", 2)  # the server runs in this process
    console.pending_restock(), console.pending_restock(), console.pending_restock()
    with console.signed_in("carla") as carla:
        first = carla.get("/console/audit?outcome=PENDING_APPROVAL").text
        second = carla.get(_link(first, "next")).text
        third = carla.get(_link(second, "next")).text
        back = carla.get(_link(third, "prev")).text
        again = carla.get(_link(back, "prev")).text
    pending = [
        seq
        for (seq,) in console.sql(
            "SELECT seq FROM audit_events WHERE outcome = 'PENDING_APPROVAL' ORDER BY seq DESC"
        )
    ]
    assert "outcome=PENDING_APPROVAL" in _link(first, "next")
    assert [_seqs(p) for p in (first, second, third)] == [pending[:2], pending[2:4], pending[4:6]]
    assert _seqs(back) == pending[2:4]
    assert _seqs(again) == pending[:2]
    assert 'rel="prev"' not in first
    assert 'rel="prev"' not in again


def _link(page: str, rel: str) -> str:
    found = re.search(rf'href="([^"]+)" rel="{rel}"', page)
    assert found is not None, f"no {rel} link"
    return html.unescape(found.group(1))


def test_audit_approved_event_shows_the_status_now_beside_the_one_then(
    console: Console,
) -> None:
    action_id = console.pending_restock(delta=140)
    with console.signed_in("finn") as finn:
        page = finn.get(f"/console/actions/{action_id}")
        finn.post(
            f"/console/actions/{action_id}/approve",
            data={"csrf_token": csrf_token(page.text), "comment": "ok"},
        )
    with console.signed_in("carla") as carla:
        events = carla.get(f"/console/audit?action_id={action_id}").text
    approved = re.search(r"<code>action.approved</code>.*?</tr>", events, re.S)
    assert approved is not None
    assert 'Then</span> <span class="badge wait" title="EXECUTING">' in approved.group(0)
    assert 'Now</span> <span class="badge good" title="APPLIED">' in approved.group(0)
    applied = re.search(r"<code>action.applied</code>.*?</tr>", events, re.S)
    assert applied is not None
    assert "Now</span>" not in applied.group(0)  # the same status: said once


def test_audit_filter_by_action_shows_only_its_events_and_exports_them(
    console: Console,
) -> None:
    action_id = console.pending_restock(delta=130)
    with console.signed_in("carla") as carla:
        page = carla.get(f"/console/audit?action_id={action_id}").text
    (count,) = console.sql("SELECT count(*) FROM audit_events WHERE action_id = ?", action_id)[0]
    assert len(_seqs(page)) == count
    text = _export(console, f"format=jsonl&action_id={action_id}")
    assert {json.loads(line)["action_id"] for line in text.splitlines()} == {action_id}


def _seqs(page: str) -> list[int]:
    return [int(seq) for seq in re.findall(r"<tr>\s*<td>(\d+)</td>", page)]


def test_audit_bad_date_is_400_with_message(console: Console) -> None:
    with console.signed_in("carla") as carla:
        response = carla.get("/console/audit?since=yesterday")
    assert response.status_code == 400
    assert "From: &#39;yesterday&#39; is not a date" in response.text


def test_audit_export_csv_is_what_audit_export_writes(console: Console) -> None:
    with console.signed_in("carla") as carla:  # signing in, then downloading, are audited
        written = _trail_export(console)
        response = carla.get("/console/audit/export?format=csv")
    assert response.text == written


def test_audit_export_filtered_csv_keeps_only_matching_rows(console: Console) -> None:
    text = _export(console, "format=csv&principal_kind=agent&outcome=PENDING_APPROVAL")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(rows[0]) == EXPORT_COLUMNS
    assert {(r["principal_kind"], r["outcome"]) for r in rows} == {("agent", "PENDING_APPROVAL")}
    assert set(text.splitlines()[1:]) <= set(_trail_export(console).splitlines())


def test_audit_export_jsonl_by_principal_and_kind(console: Console) -> None:
    text = _export(console, "format=jsonl&principal=finn&action_kind=inventory.adjust")
    records = [json.loads(line) for line in text.splitlines()]
    assert records
    assert {(r["principal"], r["action_kind"]) for r in records} == {("finn", "inventory.adjust")}


def test_audit_export_names_a_downloadable_file(console: Console) -> None:
    with console.signed_in("carla") as carla:
        response = carla.get("/console/audit/export?format=jsonl")
    assert response.headers["content-disposition"].startswith('attachment; filename="gatehouse')
    assert response.headers["content-type"].startswith("application/x-ndjson")


def test_audit_export_unknown_format_is_refused(console: Console) -> None:
    with console.signed_in("carla") as carla:
        response = carla.get("/console/audit/export?format=xml")
    # 422 as FastAPI answers a bad parameter; 400 where the console answers it with a page
    assert response.status_code in (400, 422)
    assert "content-disposition" not in response.headers


@pytest.fixture
def tampered(estate: DemoEstate, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """A gateway of its own, whose audit trail someone edits behind its back."""
    database = tmp_path_factory.mktemp("tampered") / "gatehouse.db"
    app = create_app(Settings(database_url=f"sqlite+aiosqlite:///{database}"), estate.config())
    with live_server(app) as server:
        yield Console(url=server.url, keys=estate.keys, database=database)


def test_audit_page_with_edited_event_says_trail_was_tampered_with(tampered: Console) -> None:
    tampered.graphql(
        "restock-bot",
        'mutation { adjustInventory(input: {sku: "SKU-0001", location: "WH-BER", delta: 150, '
        'reason: "inbound"}, dryRun: true) { status } }',
    )
    tampered.sql("UPDATE audit_events SET outcome = 'APPLIED' WHERE seq = 1")
    trail._verified.clear()  # as if a minute had passed
    with tampered.signed_in("carla") as carla:
        page = carla.get("/console/audit").text
    assert "The trail has been tampered with." in page
    assert "seq=1" in page

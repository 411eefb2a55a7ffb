"""The action ledger: one row per action, totals, search, filters, paging both ways,
downloads (audited), compliance only, never personal data."""

from __future__ import annotations

import csv
import html
import io
import json
import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.actions.ledger import LEDGER_COLUMNS, Cursor, Entry, Money, money_of, written
from gateway.actions.store import Status
from gateway.console import ledger
from gateway.demo import CONFIG_TEMPLATE, DemoEstate
from gateway.services import Services
from tests.console.flows import Console, csrf_token

EMAIL = "ledger.secret@example.com"


def _decide(console: Console, approver: str, action_id: str, verdict: str, text: str) -> None:
    """Approve (with a comment) or reject (with a reason) from the action's page."""
    field = "comment" if verdict == "approve" else "reason"
    with console.signed_in(approver) as client:
        page = client.get(f"/console/actions/{action_id}")
        response = client.post(
            f"/console/actions/{action_id}/{verdict}",
            data={"csrf_token": csrf_token(page.text), field: text},
        )
    assert response.status_code == 303, response.text


def _credit_note(console: Console, amount: str) -> str:
    """A credit note by support-bot over its 50 alone: waits for a human."""
    orders = console.graphql("finn", "{ orders(first: 1) { edges { node { id customerId } } } }")[
        "orders"
    ]["edges"]
    order = orders[0]["node"]
    data = console.graphql(
        "support-bot",
        f'mutation {{ issueCreditNote(input: {{customerId: "{order["customerId"]}", '
        f'orderId: "{order["id"]}", amount: "{amount}", reason: "late delivery"}}) '
        "{ status action { id } } }",
    )["issueCreditNote"]
    assert data["status"] == "PENDING_APPROVAL", data
    action_id: str = data["action"]["id"]
    return action_id


def _contact_change(console: Console) -> str:
    data = console.graphql(
        "support-bot",
        f'mutation {{ updateCustomerContact(input: {{customerId: "C-00012", email: "{EMAIL}"}}) '
        "{ status action { id } } }",
    )["updateCustomerContact"]
    assert data["status"] == "APPLIED", data
    action_id: str = data["action"]["id"]
    return action_id


@pytest.fixture(scope="module")
def actions(console: Console) -> dict[str, str]:
    """An agent's restock approved by finn, another rejected by finn, a credit note
    approved by olivia, a contact change applied at once, and one restock still waiting."""
    approved = console.pending_restock(delta=160, sku="SKU-0007")
    _decide(console, "finn", approved, "approve", "Pallet counted on the dock")
    rejected = console.pending_restock(delta=170, sku="SKU-0008")
    _decide(console, "finn", rejected, "reject", "No such delivery expected")
    credit = _credit_note(console, "60.00")
    _decide(console, "olivia", credit, "approve", "Goodwill agreed with the customer")
    return {
        "approved": approved,
        "rejected": rejected,
        "credit": credit,
        "contact": _contact_change(console),
        "pending": console.pending_restock(delta=180, sku="SKU-0009"),
    }


def _ledger(console: Console, query: str = "", principal: str = "carla") -> httpx.Response:
    with console.signed_in(principal) as client:
        return client.get(f"/console/ledger?{query}")


def _row(page: str, action_id: str) -> str:
    found = re.search(rf'<tr id="action-{action_id}">(.*?)</tr>', page, re.S)
    assert found is not None, f"no row for {action_id}"
    return found.group(1)


def _row_ids(page: str) -> list[str]:
    return re.findall(r'<tr id="action-([0-9a-f-]{36})">', page)


def _export(console: Console, query: str) -> str:
    with console.signed_in("carla") as carla:
        response = carla.get(f"/console/ledger/export?{query}")
    assert response.status_code == 200, response.text
    return response.text


def test_ledger_row_shows_requester_for_whom_approver_comment_and_final_status(
    console: Console, actions: dict[str, str]
) -> None:
    row = _row(_ledger(console).text, actions["approved"])
    assert "restock-bot" in row
    assert "olivia" in row
    assert "finn" in row
    assert "approved" in row
    assert "Pallet counted on the dock" in row
    assert "RESTOCK_OVER_LIMIT" in row
    assert 'title="APPLIED"' in row
    assert f'href="/console/audit?action_id={actions["approved"]}"' in row


def test_ledger_rejected_row_shows_who_rejected_and_why(
    console: Console, actions: dict[str, str]
) -> None:
    row = _row(_ledger(console).text, actions["rejected"])
    assert "finn" in row
    assert "rejected" in row
    assert "No such delivery expected" in row
    assert 'title="REJECTED"' in row


def test_ledger_credit_note_row_shows_amount_with_currency(
    console: Console, actions: dict[str, str]
) -> None:
    row = _row(_ledger(console).text, actions["credit"])
    assert re.search(r"60\.00 [A-Z]{3}<", row), row


def test_ledger_rows_newest_first(console: Console, actions: dict[str, str]) -> None:
    ids = _row_ids(_ledger(console).text)
    order = [ids.index(actions[name]) for name in ("pending", "credit", "approved")]
    assert order == sorted(order)


def test_ledger_totals_count_by_status_and_sum_money_by_currency(
    console: Console, actions: dict[str, str]
) -> None:
    page = _ledger(console, "kind=credit_note.issue").text
    counts = dict(console.sql("SELECT status, count(*) FROM actions GROUP BY status"))
    credits = console.sql("SELECT count(*) FROM actions WHERE kind = 'credit_note.issue'")
    assert f"{credits[0][0]} action" in page
    total = _ledger(console).text
    assert f"{sum(counts.values())} actions in this view" in total
    sums = re.search(r'<table class="sums">(.*?)</table>', page, re.S)
    assert sums is not None
    assert re.search(r"60\.00 [A-Z]{3}</td>", sums.group(1)), sums.group(1)


def test_ledger_search_by_target_action_id_and_trace_id(
    console: Console, actions: dict[str, str]
) -> None:
    (trace,) = console.sql("SELECT trace_id FROM actions WHERE id = ?", actions["rejected"])[0]
    assert _row_ids(_ledger(console, "q=sku-0008").text) == [actions["rejected"]]
    assert _row_ids(_ledger(console, f"q={actions['approved']}").text) == [actions["approved"]]
    assert _row_ids(_ledger(console, f"q={trace.upper()}").text) == [actions["rejected"]]


def test_ledger_search_with_like_wildcards_matches_them_literally(
    console: Console, actions: dict[str, str]
) -> None:
    page = _ledger(console, "q=%25").text  # "%" would match every target if not escaped
    assert _row_ids(page) == []
    assert "No actions match these filters." in page


def test_ledger_agent_filter_still_shows_who_approved(
    console: Console, actions: dict[str, str]
) -> None:
    page = _ledger(console, "who=restock-bot").text
    ids = _row_ids(page)
    assert actions["approved"] in ids
    assert actions["credit"] not in ids
    assert "finn" in _row(page, actions["approved"])


def test_ledger_filter_by_person_an_agent_acted_for(
    console: Console, actions: dict[str, str]
) -> None:
    ids = _row_ids(_ledger(console, "who=olivia").text)
    assert actions["approved"] in ids  # restock-bot's, on olivia's behalf


def test_ledger_filter_by_approver_kind_and_status(
    console: Console, actions: dict[str, str]
) -> None:
    by_finn = _row_ids(_ledger(console, "approver=finn").text)
    assert {actions["approved"], actions["rejected"]} <= set(by_finn)
    assert actions["credit"] not in by_finn
    rejected = _row_ids(_ledger(console, "status=REJECTED&kind=inventory.adjust").text)
    assert actions["rejected"] in rejected
    assert actions["approved"] not in rejected


def test_ledger_date_range_excludes_other_days(console: Console, actions: dict[str, str]) -> None:
    assert _row_ids(_ledger(console, "until=2020-01-01").text) == []
    assert actions["approved"] in _row_ids(_ledger(console, "since=2020-01-01").text)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("since=yesterday", "From: &#39;yesterday&#39; is not a date"),
        ("status=SHIPPED", "Status: &#39;SHIPPED&#39; is not a status"),
        ("after=12.not-an-id", "is not a place in the ledger"),
        ("before=abc", "is not a place in the ledger"),
    ],
)
def test_ledger_bad_filter_is_400_with_message(console: Console, query: str, message: str) -> None:
    response = _ledger(console, query)
    assert response.status_code == 400
    assert message in response.text


def test_ledger_both_directions_at_once_is_400(console: Console, actions: dict[str, str]) -> None:
    token = Cursor.parse(f"1.{actions['approved']}").token()
    response = _ledger(console, f"after={token}&before={token}")
    assert response.status_code == 400


def test_ledger_pages_older_then_newer_again(
    console: Console, actions: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger, "PAGE_SIZE", 2)  # the server runs in this process
    with console.signed_in("carla") as carla:
        first = carla.get("/console/ledger").text
        older_link = _link(first, "next")
        assert _link_or_none(first, "prev") is None
        second = carla.get(older_link).text
        third = carla.get(_link(second, "next")).text
        back = carla.get(_link(third, "prev")).text
        again = carla.get(_link(back, "prev")).text
    everyone = [row[0] for row in console.sql("SELECT id FROM actions ORDER BY created_at DESC")]
    assert _row_ids(first) == everyone[:2]
    assert _row_ids(second) == everyone[2:4]
    assert _row_ids(third) == everyone[4:6]
    assert _row_ids(back) == everyone[2:4]
    assert _row_ids(again) == everyone[:2]
    assert _link_or_none(again, "prev") is None


def _link_or_none(page: str, rel: str) -> str | None:
    found = re.search(rf'href="([^"]+)" rel="{rel}"', page)
    return None if found is None else html.unescape(found.group(1))


def _link(page: str, rel: str) -> str:
    link = _link_or_none(page, rel)
    assert link is not None, f"no {rel} link"
    return link


def test_ledger_export_csv_has_a_row_per_action_with_approvals(
    console: Console, actions: dict[str, str]
) -> None:
    rows = list(csv.DictReader(io.StringIO(_export(console, "format=csv"))))
    assert tuple(rows[0]) == LEDGER_COLUMNS
    assert len(rows) == console.sql("SELECT count(*) FROM actions")[0][0]
    credit = next(r for r in rows if r["action_id"] == actions["credit"])
    assert (credit["amount"], credit["status"], credit["requester"]) == (
        "60.00",
        "APPLIED",
        "support-bot",
    )
    assert credit["on_behalf_of"] == "sam"
    assert re.fullmatch(r"[A-Z]{3}", credit["currency"])
    (verdict,) = json.loads(credit["approvals"])
    assert verdict["approver"] == "olivia"
    assert verdict["counts"] is True
    assert verdict["comment"] == "Goodwill agreed with the customer"


def test_ledger_export_jsonl_follows_the_filters(console: Console, actions: dict[str, str]) -> None:
    text = _export(console, "format=jsonl&who=restock-bot&status=REJECTED")
    records = [json.loads(line) for line in text.splitlines()]
    assert [r["action_id"] for r in records if r["action_id"] == actions["rejected"]]
    assert {(r["requester"], r["status"]) for r in records} == {("restock-bot", "REJECTED")}
    assert records[0]["approvals"][0]["verdict"] == "reject"


def test_ledger_export_is_audited_with_who_what_filter_and_rows(
    console: Console, actions: dict[str, str]
) -> None:
    text = _export(console, "format=jsonl&kind=inventory.adjust")
    (principal, outcome, payload) = console.sql(
        "SELECT principal, outcome, payload FROM audit_events WHERE event = 'audit.exported' "
        "ORDER BY seq DESC LIMIT 1"
    )[0]
    assert (principal, outcome) == ("carla", "EXPORTED")
    assert json.loads(payload) == {
        "export": "ledger",
        "format": "jsonl",
        "filters": {"kind": "inventory.adjust"},
        "rows": len(text.splitlines()),
    }


def test_events_export_is_audited_too(console: Console, actions: dict[str, str]) -> None:
    with console.signed_in("carla") as carla:
        text = carla.get("/console/audit/export?format=csv&principal_kind=agent").text
    (payload,) = console.sql(
        "SELECT payload FROM audit_events WHERE event = 'audit.exported' ORDER BY seq DESC LIMIT 1"
    )[0]
    recorded = json.loads(payload)
    assert recorded["export"] == "events"
    assert recorded["filters"] == {"principal_kind": "agent"}
    assert recorded["rows"] == len(list(csv.reader(io.StringIO(text)))) - 1


def test_ledger_and_export_never_show_personal_data(
    console: Console, actions: dict[str, str]
) -> None:
    # carla is granted personal data; the ledger shows none to anyone all the same
    assert actions["contact"] in _ledger(console).text
    assert EMAIL not in _ledger(console, f"q={actions['contact']}").text
    for fmt in ("csv", "jsonl"):
        text = _export(console, f"format={fmt}")
        assert actions["contact"] in text
        assert EMAIL not in text
    record = json.loads(_export(console, f"format=jsonl&q={actions['contact']}"))
    assert record["input"]["email"] == "***"


@pytest.mark.parametrize("text", ['=HYPERLINK("http://x.example")', "+1", "-1", "@SUM(A1)"])
def test_ledger_csv_cell_that_starts_like_a_formula_is_opened_as_text(text: str) -> None:
    # Targets and texts come from agents: a spreadsheet must not run one as a formula.
    record = dict.fromkeys(LEDGER_COLUMNS, None) | {"target": text, "approvals": []}
    csv_text = written([record], "csv")
    (row,) = list(csv.DictReader(io.StringIO(csv_text)))
    assert row["target"] == f"'{text}"
    assert row["approvals"] == "[]"
    assert json.loads(written([record], "jsonl"))["target"] == text  # JSON as it is


def _cli(estate: DemoEstate, console: Console, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "audit", "ledger", "--config", str(CONFIG_TEMPLATE),
         "--database-url", f"sqlite+aiosqlite:///{console.database}", *args],
        env={**estate.environ(), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_cli_ledger_writes_the_rows_the_console_downloads_and_is_audited(
    console: Console, actions: dict[str, str], estate: DemoEstate
) -> None:
    downloaded = _export(console, "format=jsonl&who=restock-bot")
    done = _cli(estate, console, "--format", "jsonl", "--who", "restock-bot")
    assert done.returncode == 0, done.stderr
    assert done.stdout == downloaded
    assert done.stderr.strip() == f"gatehouse: exported {len(downloaded.splitlines())} actions"
    (channel, payload) = console.sql(
        "SELECT channel, payload FROM audit_events WHERE event = 'audit.exported' "
        "ORDER BY seq DESC LIMIT 1"
    )[0]
    recorded = json.loads(payload)
    assert (channel, recorded["export"], recorded["filters"]) == (
        "cli",
        "ledger",
        {"who": "restock-bot"},
    )
    assert recorded["rows"] == len(downloaded.splitlines())


def test_cli_ledger_bad_date_exit_2_one_line(console: Console, estate: DemoEstate) -> None:
    done = _cli(estate, console, "--format", "csv", "--since", "last week")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "gatehouse: --since: 'last week' is not an ISO 8601 date or time"
    ]


def test_cli_ledger_missing_database_file_exit_2_creates_nothing(
    estate: DemoEstate, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere.db"
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "audit", "ledger", "--format", "csv",
         "--config", str(CONFIG_TEMPLATE), "--database-url", f"sqlite+aiosqlite:///{missing}"],
        env={**estate.environ(), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == f"gatehouse: no database file at {missing}"
    assert not missing.exists()


@pytest.mark.parametrize("principal", ["finn", "olivia", "sam"])
def test_ledger_for_anyone_but_compliance_is_403(console: Console, principal: str) -> None:
    with console.signed_in(principal) as client:
        assert client.get("/console/ledger").status_code == 403
        assert client.get("/console/ledger/export?format=csv").status_code == 403
        assert 'href="/console/ledger"' not in client.get("/console/").text


def test_ledger_signed_out_goes_to_sign_in(console: Console) -> None:
    with console.client() as client:
        response = client.get("/console/ledger?who=finn")
    assert response.status_code == 303
    assert response.headers["location"].startswith("/console/login?next=")


def test_ledger_linked_from_the_nav_and_the_audit_page(console: Console) -> None:
    with console.signed_in("carla") as carla:
        audit = carla.get("/console/audit").text
    assert audit.count('href="/console/ledger"') >= 2  # the navigation and the page


def test_cursor_token_round_trips_to_the_microsecond() -> None:
    found = Cursor.parse(f"1764537056123457.{uuid.uuid4()}")
    assert Cursor.parse(found.token()) == found
    assert found.created_at.microsecond == 123457


def _entry(kind: str, values: dict[str, Any], **more: Any) -> Entry:
    now = datetime.now(UTC)
    return Entry(
        **{
            "id": str(uuid.uuid4()),
            "created_at": now,
            "updated_at": now,
            "expires_at": None,
            "kind": kind,
            "status": Status.APPLIED,
            "principal": "support-bot",
            "on_behalf_of": "sam",
            "channel": "graphql",
            "target": "C-00001",
            "input": values,
            "input_digest": "d",
            "diff": None,
            "result": None,
            "decision": "allow",
            "rule": "R",
            "reason": "r",
            "policy_version": "p",
            "approvals_required": 0,
            "trace_id": uuid.uuid4().hex,
            **more,
        }
    )


CREDIT = {"customer_id": "C-00001", "order_id": "SO-100001", "reason": "late"}


async def test_money_of_input_its_kind_no_longer_reads_is_none(services: Services) -> None:
    catalog = services.catalog
    assert money_of(_entry("credit_note.issue", {**CREDIT, "amount": "lots"}), catalog) is None
    assert money_of(_entry("retired.kind", {"amount": "5.00"}), catalog) is None


async def test_money_of_takes_currency_from_input_else_the_diff(services: Services) -> None:
    catalog = services.catalog
    diff = {"before": {"currency": "EUR"}, "after": {"currency": "EUR"}}
    credit = _entry("credit_note.issue", {**CREDIT, "amount": "12.50"}, diff=diff)
    assert money_of(credit, catalog) == Money(Decimal("12.50"), "EUR")
    payment = {"customer_id": "C-1", "amount": "3.00", "currency": "CHF", "reference": "x"}
    assert money_of(_entry("payment.record", payment), catalog) == Money(Decimal("3.00"), "CHF")
    unknown = _entry("credit_note.issue", {**CREDIT, "amount": "1.00"})
    assert money_of(unknown, catalog) == Money(Decimal("1.00"), None)

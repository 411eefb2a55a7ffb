"""`ledger(...)`: the action ledger over GraphQL, for compliance. One estate of its own per
module (ERP file, CRM process, gateway database) holds actions made through the real write
path: an agent's restock approved and another rejected, credit notes approved and pending,
a contact change carrying personal data, a restock still waiting."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gateway.actions import ledger
from gateway.actions.store import Status
from gateway.app import start
from gateway.config import GatewayConfig, PolicyConfig, PrincipalConfig, PrincipalKind
from gateway.demo import DemoEstate
from gateway.pagination import encode_cursor
from gateway.services import Services
from sources.demo import CrmProcess, build_estate, create_erp, seed_crm
from tests.factories import as_principal, run_query, services_for, submit, with_source

EMAIL = "ledger.graphql.secret@example.com"
AUDITOR = "audra"  # reads the audit trail, is not granted personal data
REPO = Path(__file__).resolve().parents[2]

ENTRIES = """
query Ledger($filter: LedgerFilter, $first: Int, $after: String, $last: Int, $before: String) {
  ledger(filter: $filter, first: $first, after: $after, last: $last, before: $before) {
    edges { cursor node { id kind mutation status requester onBehalfOf channel target
      amount { amount currency }
      decision { outcome rule reason policyVersion approvalsRequired }
      approvals { approver verdict comment at counted }
      createdAt settledAt expiresAt traceId input } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}
"""
TOTALS = """
query Totals($filter: LedgerFilter) {
  ledger(filter: $filter) { totals { count byStatus { status count }
    sums { status kind currency amount actions } } }
}
"""


@dataclass(frozen=True)
class Made:
    """The module's estate and the actions made in it, by name."""

    config: GatewayConfig
    database_url: str
    actions: dict[str, str]
    currency: str  # of the order the approved credit note is on

    @property
    def newest_first(self) -> list[str]:
        """The action ids in the order they were requested, newest first."""
        return list(reversed(self.actions.values()))


def _with_auditor(config: GatewayConfig, folder: Path) -> GatewayConfig:
    """The config with a principal who may read the audit trail without personal data."""
    shutil.copytree(REPO / "policies", folder / "policies")
    with (folder / "policies" / "policy.csv").open("a") as policy:
        policy.write(
            "p, role:auditor, audit, read, True, allow, allow, READ_AUDIT_ONLY, "
            "Auditors read the audit trail\n"
        )
    auditor = PrincipalConfig(
        kind=PrincipalKind.HUMAN, display_name="Audra Kim, External auditor", roles=["auditor"]
    )
    return config.model_copy(
        update={
            "policy": PolicyConfig(dir=folder / "policies"),
            "principals": {**config.principals, AUDITOR: auditor},
        }
    )


@pytest.fixture(scope="module")
def made(estate: DemoEstate, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Made]:
    """The estate's actions, made once: the tests only read them."""
    folder = tmp_path_factory.mktemp("graphql-ledger")
    erp_url = f"sqlite+aiosqlite:///{folder / 'erp.db'}"
    asyncio.run(create_erp(erp_url, build_estate()))
    seed_crm(folder / "crm.db", build_estate())
    with CrmProcess.start(folder / "crm.db") as crm:
        config = with_source(estate.config(), "erp", url=erp_url, timeout=2.0)
        config = _with_auditor(with_source(config, "crm", url=crm.url, timeout=2.0), folder)
        database_url = f"sqlite+aiosqlite:///{folder / 'gatehouse.db'}"
        yield asyncio.run(_make(config, database_url))


async def _make(config: GatewayConfig, database_url: str) -> Made:
    services = services_for(config, database_url)
    await start(services)
    try:
        orders = await _orders_to_credit(services)
        actions = {"approved": await _restock(services, 160, "SKU-0007")}
        await _decide(services, "finn", actions["approved"], "Pallet counted on the dock")
        actions["rejected"] = await _restock(services, 170, "SKU-0008")
        await _decide(services, "finn", actions["rejected"], None)
        actions["credit"] = await _credit(services, orders[0], "60.00")
        await _decide(services, "olivia", actions["credit"], "Goodwill agreed")
        actions["contact"] = await _contact(services)
        actions["pending_credit"] = await _credit(services, orders[1], "70.00")
        actions["pending"] = await _restock(services, 180, "SKU-0009")
    finally:
        await services.close()
    return Made(config, database_url, actions, str(orders[0]["currency"]))


async def _orders_to_credit(services: Services) -> list[Mapping[str, Any]]:
    """Two delivered orders in one currency, each worth more than the credit notes."""
    page = await services.reads.page("Order", filters={"status": "delivered"}, first=100)
    found = [e.record.data for e in page.entries if e.record.data["total"] > Decimal(100)]
    currency = found[0]["currency"]
    return [order for order in found if order["currency"] == currency][:2]


async def _restock(services: Services, delta: int, sku: str) -> str:
    """A restock by restock-bot (for olivia) over its limit of 100: waits for a human."""
    data = {"sku": sku, "location": "WH-BER", "delta": delta, "reason": "inbound pallet"}
    return await _pending(services, "inventory.adjust", data, "restock-bot")


async def _credit(services: Services, order: Mapping[str, Any], amount: str) -> str:
    """A credit note by support-bot (for sam) over its 50 alone: waits for a human."""
    data = {
        "customer_id": order["customer_id"],
        "order_id": order["id"],
        "amount": amount,
        "reason": "late delivery",
    }
    return await _pending(services, "credit_note.issue", data, "support-bot")


async def _pending(services: Services, kind: str, data: dict[str, Any], principal: str) -> str:
    result = await submit(services, kind, data, principal=principal)
    assert result.status is Status.PENDING_APPROVAL, result.errors
    assert result.action is not None
    return result.action.id


async def _decide(services: Services, approver: str, action_id: str, comment: str | None) -> None:
    """Approve with `comment`, or reject when there is none."""
    who = as_principal(services, approver)
    if comment is None:
        result = await services.writes.reject(action_id, who, "No such delivery expected")
        assert result.status is Status.REJECTED, result.errors
    else:
        result = await services.writes.approve(action_id, who, comment)
        assert result.status is Status.APPLIED, result.errors


async def _contact(services: Services) -> str:
    data = {"customer_id": "C-00012", "email": EMAIL}
    result = await submit(services, "customer.update_contact", data, principal="support-bot")
    assert result.status is Status.APPLIED, result.errors
    assert result.action is not None
    return result.action.id


@pytest.fixture
async def services(made: Made) -> AsyncIterator[Services]:
    """Services over the module's estate (in place of tests/conftest.py's empty one)."""
    built = services_for(made.config, made.database_url)
    await start(built)
    yield built
    await built.close()


async def _ledger(services: Services, principal: str = "carla", **variables: Any) -> dict[str, Any]:
    result = await run_query(services, ENTRIES, principal=principal, variables=variables)
    assert result.errors is None, result.errors
    assert result.data is not None
    found: dict[str, Any] = result.data["ledger"]
    return found


async def _ids(services: Services, **filters: Any) -> list[str]:
    page = await _ledger(services, filter=filters)
    return [edge["node"]["id"] for edge in page["edges"]]


async def _node(services: Services, action_id: str, principal: str = "carla") -> dict[str, Any]:
    (edge,) = (await _ledger(services, principal, filter={"search": action_id}))["edges"]
    node: dict[str, Any] = edge["node"]
    return node


# ---- rows -------------------------------------------------------------------------------


async def test_ledger_newest_first_one_row_per_action(services: Services, made: Made) -> None:
    page = await _ledger(services)
    assert [edge["node"]["id"] for edge in page["edges"]] == made.newest_first
    assert page["pageInfo"]["hasNextPage"] is False
    assert page["pageInfo"]["hasPreviousPage"] is False


async def test_ledger_entry_of_agent_shows_for_whom_decision_and_who_approved(
    services: Services, made: Made
) -> None:
    node = await _node(services, made.actions["approved"])
    assert node["kind"] == "inventory.adjust"
    assert node["mutation"] == "adjustInventory"
    assert node["status"] == "APPLIED"
    assert (node["requester"], node["onBehalfOf"]) == ("restock-bot", "olivia")
    assert node["target"] == "InventoryItem:SKU-0007"
    assert node["decision"]["outcome"] == "review"
    assert node["decision"]["rule"] == "RESTOCK_OVER_LIMIT"
    assert node["decision"]["approvalsRequired"] == 1
    (approval,) = node["approvals"]
    assert approval["approver"] == "finn"
    assert approval["comment"] == "Pallet counted on the dock"
    assert approval["counted"] is True
    assert node["amount"] is None  # a restock carries no money
    assert node["settledAt"] is not None
    assert node["input"]["delta"] == 160


async def test_ledger_rejected_and_pending_entries_say_so(services: Services, made: Made) -> None:
    rejected = await _node(services, made.actions["rejected"])
    assert rejected["status"] == "REJECTED"
    assert [(a["approver"], a["comment"]) for a in rejected["approvals"]] == [
        ("finn", "No such delivery expected")
    ]
    pending = await _node(services, made.actions["pending"])
    assert pending["status"] == "PENDING_APPROVAL"
    assert pending["settledAt"] is None
    assert pending["expiresAt"] is not None
    assert pending["approvals"] == []


async def test_ledger_credit_note_amount_has_its_currency(services: Services, made: Made) -> None:
    node = await _node(services, made.actions["credit"])
    assert node["amount"] == {"amount": "60.00", "currency": made.currency}
    assert node["approvals"][0]["approver"] == "olivia"


# ---- paging -------------------------------------------------------------------------------


async def test_ledger_pages_older_then_newer_again_with_the_same_cursors(
    services: Services, made: Made
) -> None:
    everyone = made.newest_first
    forward = [await _ledger(services, first=2)]
    while forward[-1]["pageInfo"]["hasNextPage"]:
        after = forward[-1]["pageInfo"]["endCursor"]
        forward.append(await _ledger(services, first=2, after=after))
    assert [_page_ids(page) for page in forward] == [everyone[0:2], everyone[2:4], everyone[4:6]]
    assert [page["pageInfo"]["hasPreviousPage"] for page in forward] == [False, True, True]

    middle = await _ledger(services, last=2, before=forward[2]["pageInfo"]["startCursor"])
    newest = await _ledger(services, last=2, before=middle["pageInfo"]["startCursor"])
    assert middle == forward[1]
    assert _page_ids(newest) == everyone[0:2]
    assert newest["pageInfo"]["hasPreviousPage"] is False
    assert newest["pageInfo"]["hasNextPage"] is True
    assert newest["edges"] == forward[0]["edges"]


def _page_ids(page: dict[str, Any]) -> list[str]:
    return [edge["node"]["id"] for edge in page["edges"]]


# ---- filters ------------------------------------------------------------------------------


async def test_ledger_search_by_action_id_trace_id_and_part_of_target(
    services: Services, made: Made
) -> None:
    rejected = await _node(services, made.actions["rejected"])
    assert await _ids(services, search=made.actions["approved"]) == [made.actions["approved"]]
    assert await _ids(services, search=rejected["traceId"].upper()) == [made.actions["rejected"]]
    assert await _ids(services, search="sku-0008") == [made.actions["rejected"]]


async def test_ledger_who_is_requester_or_the_person_an_agent_acted_for(
    services: Services, made: Made
) -> None:
    restocks = [made.actions[name] for name in ("pending", "rejected", "approved")]
    assert await _ids(services, who="restock-bot") == restocks
    assert await _ids(services, who="olivia") == restocks  # restock-bot acts for olivia


async def test_ledger_approver_filter_shows_agents_actions_someone_approved(
    services: Services, made: Made
) -> None:
    assert await _ids(services, approver="finn") == [
        made.actions["rejected"],
        made.actions["approved"],
    ]
    assert await _ids(services, approver="olivia") == [made.actions["credit"]]


async def test_ledger_kind_status_and_period_filters(services: Services, made: Made) -> None:
    credits = [made.actions["pending_credit"], made.actions["credit"]]
    assert await _ids(services, kind="credit_note.issue") == credits
    assert await _ids(services, status="REJECTED") == [made.actions["rejected"]]
    assert await _ids(services, kind="credit_note.issue", status="PENDING_APPROVAL") == credits[:1]
    assert await _ids(services, until="2020-01-01T00:00:00Z") == []
    assert await _ids(services, since="2020-01-01T00:00:00+01:00") == made.newest_first


# ---- totals -------------------------------------------------------------------------------


async def _totals(services: Services, **filters: Any) -> dict[str, Any]:
    result = await run_query(services, TOTALS, principal="carla", variables={"filter": filters})
    assert result.errors is None, result.errors
    assert result.data is not None
    totals: dict[str, Any] = result.data["ledger"]["totals"]
    return totals


async def test_ledger_totals_count_by_status_of_the_whole_view(services: Services) -> None:
    totals = await _totals(services)
    assert totals["count"] == 6
    assert {row["status"]: row["count"] for row in totals["byStatus"]} == {
        "APPLIED": 3,
        "PENDING_APPROVAL": 2,
        "REJECTED": 1,
    }


async def test_ledger_sums_money_by_status_kind_and_currency(
    services: Services, made: Made
) -> None:
    totals = await _totals(services, kind="credit_note.issue")
    assert totals["count"] == 2
    by_status = {row["status"]: row for row in totals["sums"]}
    assert by_status["APPLIED"] == {
        "status": "APPLIED",
        "kind": "credit_note.issue",
        "currency": made.currency,
        "amount": "60.00",
        "actions": 1,
    }
    assert by_status["PENDING_APPROVAL"]["amount"] == "70.00"
    assert set(by_status) == {"APPLIED", "PENDING_APPROVAL"}


async def test_ledger_sums_null_when_the_view_is_too_big_to_sum(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger, "SUM_LIMIT", 5)  # the view holds 6 actions
    totals = await _totals(services)
    assert totals["count"] == 6
    assert totals["sums"] is None


# ---- personal data ------------------------------------------------------------------------


async def test_ledger_input_pii_masked_for_reviewer_not_granted_it(
    services: Services, made: Made
) -> None:
    node = await _node(services, made.actions["contact"], principal=AUDITOR)
    assert node["input"]["customer_id"] == "C-00012"
    assert node["input"]["email"] == "***"
    result = await run_query(services, ENTRIES, principal=AUDITOR)
    assert EMAIL not in str(result.data)


async def test_ledger_input_pii_shown_to_compliance_granted_it(
    services: Services, made: Made
) -> None:
    node = await _node(services, made.actions["contact"], principal="carla")
    assert node["input"]["email"] == EMAIL


# ---- refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize("principal", ["restock-bot", "olivia"])
async def test_ledger_forbidden_to_agents_and_people_without_audit_read(
    services: Services, principal: str
) -> None:
    result = await run_query(services, ENTRIES, principal=principal)
    assert result.data == {"ledger": None}
    assert result.errors is not None
    (error,) = result.errors
    assert error.extensions == {"code": "FORBIDDEN"}
    assert error.message == f"{principal} may not read the audit trail"


LEDGER_CURSOR = encode_cursor("ledger", f"1.{'0' * 8}-0000-0000-0000-{'0' * 12}")
BAD_ARGUMENTS = [
    ({"after": "not a cursor!"}, "after"),
    ({"after": encode_cursor("ledger", "12.not-an-id")}, "after"),
    ({"before": encode_cursor("ledger", "yesterday")}, "before"),
    ({"after": encode_cursor("Order", "SO-100001")}, "after"),
    ({"after": LEDGER_CURSOR, "before": LEDGER_CURSOR}, "before"),
    ({"last": 2}, "last"),
    ({"first": 2, "before": LEDGER_CURSOR}, "first"),
    ({"last": 0, "before": LEDGER_CURSOR}, "last"),
    ({"filter": {"since": "2026-11-23T10:00:00"}}, "filter.since"),
    ({"filter": {"until": "2026-11-23T10:00:00"}}, "filter.until"),
]


@pytest.mark.parametrize(
    ("variables", "argument"), BAD_ARGUMENTS, ids=[str(v) for v, _ in BAD_ARGUMENTS]
)
async def test_ledger_bad_argument_is_refused_naming_it(
    services: Services, variables: dict[str, Any], argument: str
) -> None:
    result = await run_query(services, ENTRIES, principal="carla", variables=variables)
    assert result.data == {"ledger": None}
    assert result.errors is not None
    (error,) = result.errors
    assert error.extensions == {"code": "BAD_ARGUMENT", "argument": argument}
    assert error.message.startswith(f"argument '{argument}': ")
    assert "Traceback" not in error.message

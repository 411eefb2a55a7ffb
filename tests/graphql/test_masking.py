"""Masking with records projected once per request: what each principal sees of one cached
record, and exactly which paths `extensions.masked` names, however the document is written."""

from __future__ import annotations

from typing import Any

from gateway.catalog import Catalog
from gateway.services import Services
from sources.actions import MASK
from tests.factories import run_query

MIXED = """
query Mixed($withPhone: Boolean!, $skipRegion: Boolean = true) {
  customer(id: "C-00001") {
    ...Identity
    mail: email
    email
    phone @include(if: $withPhone)
    region @skip(if: $skipRegion)
    contacts { role ... on Contact { email name } }
    maskedFields
    freshness { cached }
  }
}
fragment Identity on Customer { id name segment }
"""


async def _mixed(services: Services, principal: str, with_phone: bool = True) -> Any:
    result = await run_query(
        services, MIXED, principal=principal, variables={"withPhone": with_phone}
    )
    assert result.errors is None, result.errors
    return result


async def test_one_cached_record_is_masked_for_one_principal_and_not_the_other(
    services: Services,
) -> None:
    human = await _mixed(services, "olivia")  # reads the CRM and fills the cache
    agent = await _mixed(services, "support-bot")  # the same cached record
    again = await _mixed(services, "olivia")

    shown, masked = human.data["customer"], agent.data["customer"]
    assert masked["freshness"]["cached"] is True
    assert "@" in shown["email"]
    assert shown["mail"] == shown["email"]
    assert shown["phone"]
    assert all(c["email"] and c["name"] for c in shown["contacts"])
    assert shown["maskedFields"] == []
    assert "masked" not in (human.extensions or {})
    assert "region" not in shown
    assert "region" not in masked

    assert masked["id"] == shown["id"]
    assert masked["name"] == shown["name"]
    assert masked["segment"] == shown["segment"]
    assert (masked["email"], masked["mail"], masked["phone"]) == (None, None, None)
    assert all(c["email"] is None and c["name"] is None and c["role"] for c in masked["contacts"])
    contacts = [f"customer.contacts.{i}" for i in range(len(shown["contacts"]))]
    assert contacts
    assert agent.extensions["masked"] == sorted(
        [
            *(f"{c}.{f}" for c in contacts for f in ("email", "name")),
            "customer.email",
            "customer.mail",
            "customer.phone",
        ]
    )
    assert masked["maskedFields"] == ["email", "phone", "contacts.name", "contacts.email"]

    # The agent's view did not stick to the cached record.
    assert {**again.data["customer"], "freshness": None} == {**shown, "freshness": None}


async def test_masked_fields_left_out_by_a_directive_are_not_listed(services: Services) -> None:
    agent = await _mixed(services, "support-bot", with_phone=False)
    assert "phone" not in agent.data["customer"]
    assert "customer.phone" not in agent.extensions["masked"]
    assert "customer.email" in agent.extensions["masked"]


async def test_masked_paths_through_a_page_and_a_relationship(services: Services) -> None:
    query = "{ orders(first: 3) { edges { node { id customer { email name } } } } }"
    result = await run_query(services, query, principal="support-bot")
    assert result.errors is None, result.errors
    edges = result.data["orders"]["edges"]
    assert edges
    assert all(e["node"]["customer"]["email"] is None for e in edges)
    assert all(e["node"]["customer"]["name"] for e in edges)
    assert result.extensions["masked"] == [
        f"orders.edges.{i}.node.customer.email" for i in range(len(edges))
    ]


async def test_an_agents_audited_reads_are_the_fields_its_response_holds(
    services: Services,
) -> None:
    query = (
        '{ customer(id: "C-00001") { name balance { outstanding { amount } } } '
        'nobody: customer(id: "C-99999") { balance { creditLimit { amount } } } }'
    )
    result = await run_query(services, query, principal="support-bot")
    assert result.errors is None, result.errors
    (event,) = (await services.audit.query(limit=10))[0]
    # The unknown customer had no balance to read: its creditLimit was never shown.
    assert event.payload["fields"] == ["Balance.outstanding"]


def test_an_action_of_a_kind_no_longer_configured_is_shown_all_masked() -> None:
    # Nothing says which of its fields were personal: none is shown rather than any.
    stored = {"customer_id": "C-00001", "email": "new@example.com", "phone": None}
    assert Catalog({}).masked("customer.update_contact", stored) == {
        "customer_id": MASK,
        "email": MASK,
        "phone": None,
    }

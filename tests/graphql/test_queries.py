"""The root queries over the demo estate, through schema.execute with a real context."""

from __future__ import annotations

from decimal import Decimal

import pytest

from gateway.services import Services
from tests.factories import run_query, source_calls


async def test_customer_known_id_returns_crm_record_with_freshness(services: Services) -> None:
    result = await run_query(
        services,
        '{ customer(id: "C-00001") { id name email freshness { system status cached version '
        "fetchedAt ageSeconds warnAfterSeconds errorAfterSeconds } } }",
    )
    assert result.errors is None
    customer = result.data["customer"]
    assert customer["id"] == "C-00001"
    assert "@" in customer["email"]
    freshness = customer["freshness"]
    assert freshness["system"] == "crm"
    assert freshness["status"] == "FRESH"
    assert freshness["cached"] is False
    assert freshness["warnAfterSeconds"] == 600
    assert len(freshness["version"]) >= 8


async def test_orders_nested_page_costs_at_most_four_round_trips(services: Services) -> None:
    before = source_calls(services)
    result = await run_query(
        services,
        "{ orders(first: 50) { edges { node { id customer { name balance { outstanding "
        "{ amount } } } lines { item { name } } } } } }",
    )
    assert result.errors is None
    edges = result.data["orders"]["edges"]
    assert len(edges) == 50
    assert all(e["node"]["customer"]["name"] for e in edges)
    assert all(line["item"]["name"] for e in edges for line in e["node"]["lines"])
    assert source_calls(services) - before <= 4


async def test_unknown_ids_are_null_without_errors(services: Services) -> None:
    result = await run_query(
        services,
        '{ customer(id: "C-99999") { id } inventoryItem(sku: "NOPE") { sku } '
        'order(id: "SO-1") { id } balance(customerId: "C-99999") { customerId } }',
    )
    assert result.errors is None
    assert result.data == {
        "customer": None,
        "inventoryItem": None,
        "order": None,
        "balance": None,
    }


@pytest.mark.parametrize(
    ("query", "argument"),
    [
        ("{ customers(first: 0) { edges { cursor } } }", "first"),
        ("{ customers(first: 501) { edges { cursor } } }", "first"),
        ("{ inventory(first: -3) { edges { cursor } } }", "first"),
        ('{ customer(id: "C-00001", maxAge: -1) { id } }', "maxAge"),
        ('{ inventoryItem(sku: "SKU-0001", maxAge: -0.5) { sku } }', "maxAge"),
        ('{ orders(after: "not a cursor!") { edges { cursor } } }', "after"),
        ('{ inventory(after: "Z2gxOk9yZGVyOlNPLTEwMDAwMQ") { edges { cursor } } }', "after"),
    ],
)
async def test_bad_arguments_name_the_argument(
    services: Services, query: str, argument: str
) -> None:
    result = await run_query(services, query)
    assert result.errors is not None
    (error,) = result.errors
    assert error.extensions == {"code": "BAD_ARGUMENT", "argument": argument}
    assert f"'{argument}'" in error.message


async def test_pages_walk_every_item_once(services: Services) -> None:
    seen: list[str] = []
    after = None
    while True:
        result = await run_query(
            services,
            "query($after: String) { inventory(first: 60, after: $after) { edges { node "
            "{ sku } } pageInfo { hasNextPage endCursor } } }",
            variables={"after": after},
        )
        assert result.errors is None
        page = result.data["inventory"]
        seen += [edge["node"]["sku"] for edge in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert len(seen) == len(set(seen)) == 200


async def test_inventory_below_reorder_point_at_location_filters_on_levels(
    services: Services,
) -> None:
    result = await run_query(
        services,
        '{ inventory(location: "WH-BER", belowReorderPoint: true, first: 200) { edges { node '
        '{ sku levels(location: "WH-BER") { available reorderPoint belowReorderPoint } } } } }',
    )
    assert result.errors is None
    edges = result.data["inventory"]["edges"]
    assert edges, "the demo estate has items below their reorder point in Berlin"
    for edge in edges:
        (level,) = edge["node"]["levels"]
        assert level["belowReorderPoint"] is True
        assert level["available"] < level["reorderPoint"]


async def test_orders_by_customer_and_status_filter(services: Services) -> None:
    result = await run_query(
        services,
        "{ orders(status: DELIVERED, first: 100) { edges { node { status customerId } } } }",
    )
    assert result.errors is None
    assert {e["node"]["status"] for e in result.data["orders"]["edges"]} == {"DELIVERED"}
    customer_id = result.data["orders"]["edges"][0]["node"]["customerId"]
    result = await run_query(
        services,
        f'{{ orders(customerId: "{customer_id}") {{ edges {{ node {{ customerId }} }} }} }}',
    )
    assert {e["node"]["customerId"] for e in result.data["orders"]["edges"]} == {customer_id}


async def test_money_is_exact_decimal_strings(services: Services) -> None:
    result = await run_query(
        services,
        '{ order(id: "SO-100001") { total { amount currency } lines { quantity '
        "unitPrice { amount } lineTotal { amount } } } }",
    )
    assert result.errors is None
    order = result.data["order"]
    lines = order["lines"]
    for line in lines:
        assert Decimal(line["unitPrice"]["amount"]) * line["quantity"] == Decimal(
            line["lineTotal"]["amount"]
        )
    assert sum(Decimal(line["lineTotal"]["amount"]) for line in lines) == Decimal(
        order["total"]["amount"]
    )
    assert isinstance(order["total"]["amount"], str)


async def test_balance_available_credit_is_limit_less_outstanding(services: Services) -> None:
    result = await run_query(
        services,
        '{ customer(id: "C-00004") { balance { creditLimit { amount currency } outstanding '
        "{ amount } availableCredit { amount } freshness { system } } } }",
    )
    assert result.errors is None
    balance = result.data["customer"]["balance"]
    assert balance["freshness"]["system"] == "erp"
    limit, outstanding, available = (
        Decimal(balance[k]["amount"]) for k in ("creditLimit", "outstanding", "availableCredit")
    )
    assert available == limit - outstanding


async def test_pii_masked_for_agent_without_grant_and_paths_listed(services: Services) -> None:
    query = '{ customer(id: "C-00001") { name email contacts { email role } maskedFields } }'
    agent = await run_query(services, query, principal="support-bot")
    assert agent.errors is None
    customer = agent.data["customer"]
    assert customer["name"]
    assert customer["email"] is None
    assert all(c["email"] is None and c["role"] for c in customer["contacts"])
    assert "customer.email" in agent.extensions["masked"]
    assert "customer.contacts.0.email" in agent.extensions["masked"]
    assert {"email", "phone", "contacts.email", "contacts.name"} <= set(customer["maskedFields"])

    human = await run_query(services, query, principal="olivia")
    assert "@" in human.data["customer"]["email"]
    assert human.data["customer"]["maskedFields"] == []
    assert "masked" not in (human.extensions or {})


async def test_read_without_entity_grant_is_forbidden(services: Services) -> None:
    before = source_calls(services)
    result = await run_query(
        services, '{ customer(id: "C-00001") { id } }', principal="restock-bot"
    )
    assert result.data == {"customer": None}
    assert result.errors is not None
    assert result.errors[0].extensions == {"code": "FORBIDDEN"}
    assert source_calls(services) == before


async def test_nested_field_without_grant_is_forbidden_rest_answers(services: Services) -> None:
    result = await run_query(
        services,
        '{ customer(id: "C-00001") { name balance { outstanding { amount } } } }',
        principal="storefront",
    )
    assert result.data["customer"]["name"]
    assert result.data["customer"]["balance"] is None
    assert result.errors is not None
    assert result.errors[0].path == ["customer", "balance"]


async def test_query_deeper_than_ten_is_rejected_before_any_source_call(
    services: Services,
) -> None:
    deep = (
        "{ orders(first: 1) { edges { node { customer { orders(first: 1) { edges { node "
        "{ customer { orders(first: 1) { edges { node { id } } } } } } } } } } } }"
    )
    result = await run_query(services, deep)
    assert result.errors is not None
    assert result.errors[0].extensions["code"] == "QUERY_REJECTED"
    assert "depth" in result.errors[0].message
    assert source_calls(services) == 0


async def test_query_over_cost_budget_is_rejected_before_any_source_call(
    services: Services,
) -> None:
    costly = (
        "{ customers(first: 500) { edges { node { orders(first: 500) { edges { node "
        "{ lines { item { name } } } } } } } } }"
    )
    result = await run_query(services, costly)
    assert result.errors is not None
    assert result.errors[0].extensions["code"] == "QUERY_REJECTED"
    assert "cost" in result.errors[0].message
    assert source_calls(services) == 0


async def test_contracts_say_system_owner_sla_and_classification(services: Services) -> None:
    result = await run_query(
        services,
        "{ contracts { entity system owner warnAfterSeconds errorAfterSeconds "
        "fields { name system classification } } }",
    )
    assert result.errors is None
    contracts = {c["entity"]: c for c in result.data["contracts"]}
    assert set(contracts) == {"Customer", "InventoryItem", "Order", "Balance"}
    assert contracts["Customer"]["system"] == "crm"
    assert contracts["Balance"]["system"] == "erp"
    fields = {f["name"]: f for f in contracts["Customer"]["fields"]}
    assert fields["email"]["classification"] == "PII"
    assert fields["contacts.email"]["classification"] == "PII"


async def test_contracts_say_which_fields_are_required_and_their_range(services: Services) -> None:
    result = await run_query(services, "{ contracts { entity fields { name required min max } } }")
    assert result.errors is None
    contracts = {c["entity"]: c for c in result.data["contracts"]}
    fields = {f["name"]: f for f in contracts["InventoryItem"]["fields"]}
    assert fields["sku"] == {"name": "sku", "required": True, "min": None, "max": None}
    assert fields["levels.on_hand"] == {
        "name": "levels.on_hand",
        "required": False,
        "min": "0",
        "max": None,
    }
    assert fields["levels.available"]["min"] is None


async def test_sources_report_health_and_me_says_who(services: Services) -> None:
    result = await run_query(
        services,
        "{ sources(check: true) { name kind status calls lastError entities } "
        "me { id kind onBehalfOf roles } }",
        principal="restock-bot",
    )
    assert result.errors is None
    sources = {s["name"]: s for s in result.data["sources"]}
    assert sources["crm"]["status"] == "UP"
    assert sources["crm"]["kind"] == "http"
    assert sources["erp"]["status"] == "UP"
    assert "Balance" in sources["erp"]["entities"]
    assert result.data["me"] == {
        "id": "restock-bot",
        "kind": "agent",
        "onBehalfOf": "olivia",
        "roles": ["restocking-agent"],
    }


async def test_agent_reads_of_financial_fields_are_audited_without_values(
    services: Services,
) -> None:
    query = (
        '{ customer(id: "C-00001") { name email balance { outstanding { amount } '
        "creditLimit { amount } } } }"
    )
    result = await run_query(services, query, principal="support-bot")
    assert result.errors is None
    (event,) = (await services.audit.query(limit=10))[0]
    assert event.event == "read.classified"
    assert event.principal == "support-bot"
    assert event.on_behalf_of == "sam"
    assert event.payload["fields"] == ["Balance.credit_limit", "Balance.outstanding"]
    amount = result.data["customer"]["balance"]["outstanding"]["amount"]
    assert amount not in str(event.payload)

    await run_query(services, query, principal="olivia")  # humans' reads are not audited
    assert len((await services.audit.query(limit=10))[0]) == 1

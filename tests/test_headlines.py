"""Headlines: what an action would do in one line, for the console and notifications."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from gateway.actions.store import Action
from gateway.catalog import Bound, Catalog
from gateway.headlines import headline, names_for, subject
from gateway.services import Services
from sources.words import Names, money, quantity
from tests.acme.actions import RenameItem
from tests.factories import submit

SCREWS = "Wood screw 4.5x60 mm (box of 500)"
NAMES = Names(
    items={"SKU-0007": SCREWS, "SKU-0001": "Storage bin 30 l grey"},
    customers={"C-00001": "Nordlicht Handel GmbH"},
    currencies={"C-00001": "EUR"},
    order_customers={"SO-100001": "C-00001"},
)


async def _action(services: Services, kind: str, data: dict[str, Any], principal: str) -> Action:
    """An action of `kind` as the pipeline stores it (a dry run: nothing is written)."""
    result = await submit(services, kind, data, principal=principal, dry_run=True)
    assert result.action is not None, result
    return result.action


async def test_headline_of_restock_names_units_item_location_and_people(
    services: Services,
) -> None:
    action = await _action(
        services,
        "inventory.adjust",
        {"sku": "SKU-0007", "location": "WH-BER", "delta": 240, "reason": "inbound"},
        "restock-bot",
    )
    assert headline(action, services.catalog, NAMES) == (
        "+240 boxes of Wood screw 4.5x60 mm at WH-BER, requested by restock-bot for olivia"
    )
    assert subject(action, services.catalog, NAMES) == f"{SCREWS} (SKU-0007) at WH-BER"


async def test_headline_without_names_falls_back_to_keys(services: Services) -> None:
    action = await _action(
        services,
        "inventory.adjust",
        {"sku": "SKU-0007", "location": "WH-BER", "delta": -3, "reason": "broken boxes"},
        "olivia",
    )
    assert headline(action, services.catalog, Names()) == (
        "-3 units of SKU-0007 at WH-BER, requested by olivia"
    )


@pytest.mark.parametrize(
    ("delta", "name", "words"),
    [
        (240, SCREWS, "+240 boxes of Wood screw 4.5x60 mm"),
        (1, SCREWS, "+1 box of Wood screw 4.5x60 mm"),
        (-20, "Wall plug 8 mm (pack of 100)", "-20 packs of Wall plug 8 mm"),
        (5, "Storage bin 30 l grey", "+5 units of Storage bin 30 l grey"),
    ],
)
def test_quantity_counts_in_the_items_packaging(delta: int, name: str, words: str) -> None:
    assert quantity(delta, "SKU-X", Names(items={"SKU-X": name})) == words


async def test_headline_of_credit_note_has_amount_currency_customer_and_order(
    services: Services,
) -> None:
    action = await _action(
        services,
        "credit_note.issue",
        {"customer_id": "C-00001", "order_id": "SO-100001", "amount": "1250.00", "reason": "late"},
        "support-bot",
    )
    assert headline(action, services.catalog, NAMES) == (
        "Credit note of 1,250.00 EUR to Nordlicht Handel GmbH (C-00001) on order SO-100001, "
        "requested by support-bot for sam"
    )


async def test_headline_of_contact_change_names_fields_never_their_values(
    services: Services,
) -> None:
    action = await _action(
        services,
        "customer.update_contact",
        {"customer_id": "C-00001", "email": "secret.person@example.com", "phone": "+49 30 1234"},
        "storefront",
    )
    words = headline(action, services.catalog, NAMES)
    assert words == (
        "New e-mail and phone for Nordlicht Handel GmbH (C-00001), requested by storefront"
    )
    assert "secret.person" not in words
    assert "1234" not in words


async def test_headline_of_unreadable_input_is_the_kinds_summary(services: Services) -> None:
    action = await _action(
        services,
        "inventory.adjust",
        {"sku": "SKU-0007", "location": "WH-BER", "delta": 240, "reason": "inbound"},
        "restock-bot",
    )
    broken = replace(action, input={"sku": "SKU-0007"})
    assert headline(broken, services.catalog, NAMES).startswith(
        "Adjust the on-hand stock of one item at one location: SKU-0007"
    )


def test_money_groups_thousands_and_names_currency() -> None:
    assert money("1234567.5", "EUR") == "1,234,567.50 EUR"
    assert money("12", None) == "12.00"
    assert money("not money", "EUR") == "not money"


async def test_names_for_reads_item_customer_and_account_currency(services: Services) -> None:
    restock = await _action(
        services,
        "inventory.adjust",
        {"sku": "SKU-0002", "location": "WH-BER", "delta": 240, "reason": "inbound"},
        "restock-bot",
    )
    cancel = replace(restock, kind="order.cancel", input={"order_id": "SO-100432", "reason": "x"})
    names = await names_for([restock, cancel], services.reads)
    assert names.items["SKU-0002"] == "Wood screw 5x80 mm (box of 500)"
    assert names.order_customers == {"SO-100432": "C-00101"}
    assert names.customers["C-00101"]
    assert names.currencies["C-00101"] == "EUR"
    assert headline(cancel, services.catalog, names).startswith(
        f"Cancel order SO-100432 of {names.customers['C-00101']} (C-00101)"
    )


async def test_headline_of_credit_note_without_account_read_uses_planned_currency(
    services: Services,
) -> None:
    action = await _action(
        services,
        "credit_note.issue",
        {"customer_id": "C-00101", "order_id": "SO-100432", "amount": "20.00", "reason": "late"},
        "support-bot",
    )
    assert action.diff is not None
    assert headline(action, services.catalog, Names()).startswith(
        "Credit note of 20.00 EUR to C-00101 on order SO-100432"
    )


async def test_another_estates_kind_says_its_own_headline(services: Services) -> None:
    # The wording is the contract's: the gateway knows no kind by name.
    stored = await _action(
        services,
        "inventory.adjust",
        {"sku": "SKU-0007", "location": "WH-BER", "delta": 1, "reason": "found"},
        "olivia",
    )
    renamed = replace(stored, kind="item.rename", input={"sku": "SKU-0007", "name": "Screws"})
    catalog = Catalog({"item.rename": Bound("rename", RenameItem(), services.connectors["erp"])})
    assert headline(renamed, catalog, NAMES) == (
        f"Rename {SCREWS} (SKU-0007) to Screws, requested by olivia"
    )

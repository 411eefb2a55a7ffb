"""The words an action's headline is made of: names instead of keys, amounts, quantities.

A contract says what its action would do in one line (`headline`), from its input and the
names the gateway read for it (items, customers and their currency, each order's customer).
The helpers here fall back to the key itself when a name could not be read, and never hold
personal data: only what the input says and the names of items and customer accounts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

# "Wood screw 4x30 mm (box of 500)": counted in boxes. Anything else is counted in units.
_PACKAGED = re.compile(r"^(?P<name>.*?)\s*\((?P<unit>box|pack|case|roll|bag|set) of [^)]*\)$")
_PLURAL = {"box": "boxes"}


@dataclass(frozen=True, slots=True)
class Names:
    """What headlines name instead of keys: items by SKU, customers and their account
    currency by id, each order's customer by order id."""

    items: Mapping[str, str] = field(default_factory=dict)
    customers: Mapping[str, str] = field(default_factory=dict)
    currencies: Mapping[str, str] = field(default_factory=dict)
    order_customers: Mapping[str, str] = field(default_factory=dict)


def item(sku: str, names: Names) -> str:
    """`Wood screw 4.5x60 mm (box of 500) (SKU-0001)`, or the SKU alone."""
    name = names.items.get(sku)
    return f"{name} ({sku})" if name else sku


def customer(customer_id: str, names: Names) -> str:
    """`Müller Handel GmbH (C-00001)`, or the id alone."""
    name = names.customers.get(customer_id)
    return f"{name} ({customer_id})" if name else customer_id


def order(order_id: str, names: Names) -> str:
    """`order SO-100001 of Müller Handel GmbH (C-00001)`, or without its customer."""
    owner = names.order_customers.get(order_id)
    return f"order {order_id} of {customer(owner, names)}" if owner else f"order {order_id}"


def money(amount: Any, currency: str | None) -> str:
    """`1,250.00 EUR`: thousands grouped, two decimals, the currency when known."""
    try:
        value = Decimal(str(amount))
    except InvalidOperation:
        return str(amount)
    shown = f"{value:,.2f}"
    return f"{shown} {currency}" if currency else shown


def quantity(delta: int, sku: str, names: Names) -> str:
    """`+240 boxes of Wood screw 4.5x60 mm`: signed, in the item's packaging when named."""
    name = names.items.get(sku)
    count = f"{delta:+d}"
    if name is None:
        return f"{count} units of {sku}"
    packaged = _PACKAGED.match(name)
    if packaged is None:
        return f"{count} units of {name}"
    unit = packaged["unit"]
    units = unit if abs(delta) == 1 else _PLURAL.get(unit, f"{unit}s")
    return f"{count} {units} of {packaged['name']}"

"""One line that says what an action would do, in the words of the business.

    names = await names_for(actions, reads)          item, customer and order names, read
                                                     through the gateway's reads (cached)
    headline(action, catalog, names)                 "+240 boxes of Wood screw 4.5x60 mm at
                                                     WH-BER, requested by restock-bot for olivia"
    subject(action, catalog, names)                  "Wood screw 4.5x60 mm (SKU-0001) at WH-BER"

The console's queue and action page use it, and so can notifications (e-mail, Slack): a
headline never holds personal data (no e-mail, phone or contact names), only what the
action's input says and the names of items and customer accounts. When a name cannot be
read (the system is down, the record is unknown), the key stands in for it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from gateway.actions.store import Action
from gateway.catalog import Catalog
from gateway.errors import GatehouseError
from gateway.reads import Entry, Reads
from sources.errors import SourceError

log = logging.getLogger("gatehouse.headlines")

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


async def names_for(actions: Iterable[Action], reads: Reads) -> Names:
    """The names `actions`' headlines need, read through `reads` (from cache when young)."""
    inputs = [a.input for a in actions]
    orders = _keys(inputs, "order_id")
    order_records = await _read(reads, "Order", orders)
    order_customers = {k: str(v["customer_id"]) for k, v in order_records.items()}
    customers = _keys(inputs, "customer_id") | set(order_customers.values())
    skus = _keys(inputs, "sku") | {
        str(line.get("sku")) for i in inputs for line in _lines(i) if line.get("sku")
    }
    customer_records = await _read(reads, "Customer", customers)
    balances = await _read(reads, "Balance", customers)
    item_records = await _read(reads, "InventoryItem", skus)
    return Names(
        items={k: str(v["name"]) for k, v in item_records.items() if v.get("name")},
        customers={k: str(v["name"]) for k, v in customer_records.items() if v.get("name")},
        currencies={k: str(v["currency"]) for k, v in balances.items() if v.get("currency")},
        order_customers=order_customers,
    )


def _keys(inputs: list[dict[str, Any]], name: str) -> set[str]:
    return {str(i[name]) for i in inputs if isinstance(i.get(name), str)}


def _lines(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    lines = data.get("lines")
    return [line for line in lines if isinstance(line, dict)] if isinstance(lines, list) else []


async def _read(reads: Reads, entity: str, keys: set[str]) -> dict[str, dict[str, Any]]:
    """The records of `keys` that could be read; a failing or unknown entity names nothing."""
    if not keys:
        return {}
    try:
        served = await reads.get_many(entity, sorted(keys))
    except KeyError:  # an estate without this entity: its actions are named by key
        return {}
    except (SourceError, GatehouseError) as error:  # a headline is never worth a failed page
        log.info("names unreadable", extra={"entity": entity, "error_code": error.code})
        return {}
    return {
        key: dict(entry.record.data)
        for key, entry in zip(sorted(keys), served, strict=True)
        if isinstance(entry, Entry)  # None (unknown) or SourceFailed name nothing
    }


def headline(action: Action, catalog: Catalog, names: Names) -> str:
    """What the action would do, then who asked and for whom."""
    try:
        what = _WHAT.get(action.kind, _generic)(action.input, names, action, catalog)
    except (KeyError, TypeError, ValueError):  # an input its kind no longer reads
        what = _generic(action.input, names, action, catalog)
    who = f"requested by {action.principal}"
    if action.on_behalf_of:
        who += f" for {action.on_behalf_of}"
    return f"{what}, {who}"


def subject(action: Action, catalog: Catalog, names: Names) -> str:
    """The record the action changes, named: an item at a location, a customer, an order."""
    data = action.input
    if "sku" in data and "location" in data:
        return f"{item(str(data['sku']), names)} at {data['location']}"
    if "order_id" in data and "customer_id" not in data:
        return f"order {data['order_id']}{_of(str(data['order_id']), names)}"
    if "customer_id" in data:
        return customer(str(data["customer_id"]), names)
    # Stored targets read "Entity:key" (InventoryItem:SKU-0001), and the entity is not
    # always the record's own (an order's target names its customer): the key alone.
    return action.target.partition(":")[2] or action.target


def item(sku: str, names: Names) -> str:
    """`Wood screw 4.5x60 mm (box of 500) (SKU-0001)`, or the SKU alone."""
    name = names.items.get(sku)
    return f"{name} ({sku})" if name else sku


def customer(customer_id: str, names: Names) -> str:
    """`Müller Handel GmbH (C-00001)`, or the id alone."""
    name = names.customers.get(customer_id)
    return f"{name} ({customer_id})" if name else customer_id


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


def _of(order_id: str, names: Names) -> str:
    owner = names.order_customers.get(order_id)
    return f" of {customer(owner, names)}" if owner else ""


Wording = Callable[[dict[str, Any], Names, Action, Catalog], str]


def _adjust(data: dict[str, Any], names: Names, action: Action, catalog: Catalog) -> str:
    return f"{quantity(int(data['delta']), str(data['sku']), names)} at {data['location']}"


def _credit(data: dict[str, Any], names: Names, action: Action, catalog: Catalog) -> str:
    who = str(data["customer_id"])
    amount = money(data["amount"], names.currencies.get(who) or _planned_currency(action))
    return f"Credit note of {amount} to {customer(who, names)} on order {data['order_id']}"


def _planned_currency(action: Action) -> str | None:
    """The currency the action's plan recorded, for when the account could not be read."""
    after = (action.diff or {}).get("after") or {}
    found = after.get("currency")
    return found if isinstance(found, str) else None


def _payment(data: dict[str, Any], names: Names, action: Action, catalog: Catalog) -> str:
    who = str(data["customer_id"])
    amount = money(data["amount"], data.get("currency") or names.currencies.get(who))
    return f"Payment of {amount} from {customer(who, names)}, reference {data['reference']}"


def _cancel(data: dict[str, Any], names: Names, action: Action, catalog: Catalog) -> str:
    order_id = str(data["order_id"])
    return f"Cancel order {order_id}{_of(order_id, names)}"


def _place(data: dict[str, Any], names: Names, action: Action, catalog: Catalog) -> str:
    lines = _lines(data)
    units = sum(int(line.get("quantity") or 0) for line in lines)
    what = (
        f"{units} units of {item(str(lines[0].get('sku')), names)}"
        if len(lines) == 1
        else f"{len(lines)} lines, {units} units"
    )
    return f"New order for {customer(str(data['customer_id']), names)}: {what}"


def _contact(data: dict[str, Any], names: Names, action: Action, catalog: Catalog) -> str:
    # Which fields change, never their values: those are personal data.
    changed = [
        label
        for name, label in (("email", "e-mail"), ("phone", "phone"), ("contacts", "contacts"))
        if data.get(name) is not None
    ]
    whose = customer(str(data["customer_id"]), names)
    return f"New {' and '.join(changed) or 'contact data'} for {whose}"


def _generic(data: dict[str, Any], names: Names, action: Action, catalog: Catalog) -> str:
    kind = catalog.get(action.kind)
    words = kind.summary.rstrip(".") if kind is not None else action.kind
    return f"{words}: {subject(action, catalog, names)}"


_WHAT: dict[str, Wording] = {
    "inventory.adjust": _adjust,
    "credit_note.issue": _credit,
    "payment.record": _payment,
    "order.cancel": _cancel,
    "order.place": _place,
    "customer.update_contact": _contact,
}

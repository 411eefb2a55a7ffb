"""One line that says what an action would do, in the words of the business.

    names = await names_for(actions, reads)          item, customer and order names, read
                                                     through the gateway's reads (cached)
    headline(action, catalog, names)                 "+240 boxes of Wood screw 4.5x60 mm at
                                                     WH-BER, requested by restock-bot for olivia"
    subject(action, catalog, names)                  "Wood screw 4.5x60 mm (SKU-0001) at WH-BER"

What an action would do is the action's own contract's wording (`headline`, with the words
of sources/words.py), or its summary and its record's name for a kind without one; who asked
and for whom is added here. The console's queue and action pages and the notifications use
it. A headline never holds personal data (no e-mail, phone or contact names), only what the
action's input says and the names of items and customer accounts. When a name cannot be
read (the system is down, the record is unknown), the key stands in for it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from gateway.actions.store import Action
from gateway.catalog import Catalog
from gateway.errors import GatehouseError
from gateway.reads import Entry, Reads
from sources.errors import SourceError
from sources.words import Names, customer, item, order

log = logging.getLogger("gatehouse.headlines")


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
    kind = catalog.get(action.kind)
    planned = (action.diff or {}).get("after") or {}
    try:
        what = kind.headline(action.input, names, planned) if kind is not None else None
    except (KeyError, TypeError, ValueError):  # an input its kind no longer reads
        what = None
    what = what or _generic(action, catalog, names)
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
        return order(str(data["order_id"]), names)
    if "customer_id" in data:
        return customer(str(data["customer_id"]), names)
    # Stored targets read "Entity:key" (InventoryItem:SKU-0001), and the entity is not
    # always the record's own (an order's target names its customer): the key alone.
    return action.target.partition(":")[2] or action.target


def _generic(action: Action, catalog: Catalog, names: Names) -> str:
    kind = catalog.get(action.kind)
    words = kind.summary.rstrip(".") if kind is not None else action.kind
    return f"{words}: {subject(action, catalog, names)}"

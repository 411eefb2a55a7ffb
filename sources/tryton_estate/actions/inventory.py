"""inventory.adjust in Tryton: a stock move between the warehouse's storage and its lost
and found location, done; Tryton's own stock rules apply.

    plan       the item's quantity in the warehouse (as the connector reads it), the
               product, the storage and lost-and-found locations
    execute    stock.move create (draft) -> ir.note on it: the action's mark -> do
    find       the note on one of the item's latest adjustments: its move done (applied),
               or draft (deleted: not applied)
"""

from __future__ import annotations

from typing import Any

from sources.actions import Effect, Plan, Problem
from sources.ordertocash import AdjustInventoryContract, AdjustInventoryInput
from sources.tryton.connector import TrytonConnector
from sources.tryton_estate.actions.tryton import mark, obeying, read_one

STOCK_NOT_NEGATIVE = "STOCK_NOT_NEGATIVE"
_CANDIDATES = 200  # adjustments of one item made since a crash, at the very most


class AdjustInventory(AdjustInventoryContract):
    """inventory.adjust: never below zero in the warehouse; a move Tryton records as done."""

    async def plan(self, data: AdjustInventoryInput, source: TrytonConnector) -> Plan:
        if data.delta == 0:
            return Plan.refused("delta must not be zero", "delta", "SHAPE")
        item = await source.read("InventoryItem", data.sku)
        if item is None:
            return Plan.refused(f"unknown SKU {data.sku}", "sku", "KNOWN_SKU")
        level = next((lv for lv in item.data["levels"] if lv["location"] == data.location), None)
        warehouse = await _warehouse(source, data.location)
        if level is None or warehouse is None:
            return Plan.refused(
                f"{data.location} is not a warehouse in Tryton", "location", "KNOWN_LOCATION", item
            )
        before = {k: level[k] for k in ("location", "on_hand", "available")}
        on_hand = level["on_hand"] + data.delta
        after = {**before, "on_hand": on_hand, "available": level["available"] + data.delta}
        product = await read_one(
            source, "product.product", [("code", "=", data.sku)], ["default_uom"]
        )
        assert product is not None  # the connector just read it
        plan = Plan(item.version, item, before, after, context={**warehouse, **product})
        if on_hand < 0:
            plan.problems.append(
                Problem(
                    f"stock of {data.sku} at {data.location} would fall to {on_hand}; "
                    "stock never goes below zero",
                    "delta",
                    STOCK_NOT_NEGATIVE,
                )
            )
        return plan

    async def execute(
        self, data: AdjustInventoryInput, plan: Plan, source: TrytonConnector, *, action_id: str
    ) -> dict[str, Any]:
        storage, lost = plan.context["storage_location"], plan.context["lost_found"]
        inward = data.delta > 0
        move = {
            "product": plan.context["id"],
            "unit": plan.context["default_uom"],
            "quantity": abs(data.delta),
            "from_location": lost if inward else storage,
            "to_location": storage if inward else lost,
            "company": source.rpc.context.get("company"),
        }
        (move_id,) = await obeying(source.rpc.create("stock.move", [move]), "delta")
        await source.rpc.create(
            "ir.note", [{"resource": f"stock.move,{move_id}", "message": mark(action_id)}]
        )
        await obeying(source.rpc.execute("stock.move", "do", [move_id]), "delta")
        return {"move": move_id, "on_hand": plan.after["on_hand"] if plan.after else None}

    async def find_effect(
        self,
        data: AdjustInventoryInput,
        source: TrytonConnector,
        *,
        action_id: str,
        based_on: str | None,
    ) -> Effect:
        move_id = await _marked_move(source, data, mark(action_id))
        if move_id is None:
            return Effect(applied=False)  # never marked: no move was done for it
        (move,) = await source.rpc.read("stock.move", [move_id], ["state"])
        if move["state"] == "done":
            return Effect(applied=True, result={"move": move_id})
        await source.rpc.delete("stock.move", [move_id])  # created, never done: undo it
        return Effect(applied=False)


async def _marked_move(
    source: TrytonConnector, data: AdjustInventoryInput, marked: str
) -> int | None:
    """The move bearing the action's note. Tryton searches notes only by their records, so
    the candidates are the item's latest adjustments in that warehouse."""
    warehouse = await _warehouse(source, data.location)
    product = await read_one(source, "product.product", [("code", "=", data.sku)], ["id"])
    if warehouse is None or product is None:
        return None
    lost = warehouse["lost_found"]
    moves = await source.rpc.search(
        "stock.move",
        [
            ("product", "=", product["id"]),
            ["OR", ("from_location", "=", lost), ("to_location", "=", lost)],
        ],
        limit=_CANDIDATES,
        order=[("id", "DESC")],
    )
    if not moves:
        return None
    resources = [f"stock.move,{move}" for move in moves]
    note = await read_one(
        source, "ir.note", [("resource", "in", resources), ("message", "=", marked)], ["resource"]
    )
    return None if note is None else int(str(note["resource"]).partition(",")[2])


async def _warehouse(source: TrytonConnector, code: str) -> dict[str, Any] | None:
    """The warehouse's storage location and a lost-and-found location to adjust against."""
    warehouse = await read_one(
        source,
        "stock.location",
        [("code", "=", code), ("type", "=", "warehouse")],
        ["storage_location", "lost_found_location"],
    )
    if warehouse is None:
        return None
    lost = warehouse["lost_found_location"]
    if lost is None:
        found = await read_one(source, "stock.location", [("type", "=", "lost_found")], ["id"])
        lost = None if found is None else found["id"]
    if lost is None:
        return None
    return {"storage_location": warehouse["storage_location"], "lost_found": lost}

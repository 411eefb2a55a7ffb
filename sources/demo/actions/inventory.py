"""Inventory actions: adjust the stock of one item at one location."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, update

from sources.actions import Invalid, Plan, Problem
from sources.demo.actions.erp import ErpAction, tables, utcnow
from sources.ordertocash import AdjustInventoryContract, AdjustInventoryInput
from sources.sql import SqlConnector

STOCK_NOT_NEGATIVE = "STOCK_NOT_NEGATIVE"


class AdjustInventory(AdjustInventoryContract, ErpAction):
    """inventory.adjust: stock never goes below zero, nor below what is reserved."""

    async def plan(self, data: AdjustInventoryInput, source: SqlConnector) -> Plan:
        if data.delta == 0:
            return Plan.refused("delta must not be zero", "delta", "SHAPE")
        record = await source.read("InventoryItem", data.sku)
        if record is None:
            return Plan.refused(f"unknown SKU {data.sku}", "sku", "KNOWN_SKU")
        level = next((lv for lv in record.data["levels"] if lv["location"] == data.location), None)
        if level is None:
            return Plan.refused(
                f"{data.sku} is not stocked at {data.location}",
                "location",
                "KNOWN_LOCATION",
                record,
            )
        before = {k: level[k] for k in ("location", "on_hand", "reserved", "available")}
        on_hand = level["on_hand"] + data.delta
        after = {**before, "on_hand": on_hand, "available": on_hand - level["reserved"]}
        plan = Plan(record.version, record, before, after)
        if on_hand < level["reserved"]:
            plan.problems.append(
                Problem(
                    f"stock of {data.sku} at {data.location} would fall to {on_hand} on hand, "
                    f"below the {level['reserved']} reserved; stock never goes below zero",
                    "delta",
                    STOCK_NOT_NEGATIVE,
                )
            )
        return plan

    async def execute(
        self, data: AdjustInventoryInput, plan: Plan, source: SqlConnector, *, action_id: str
    ) -> dict[str, Any]:
        levels = tables(source)["stock_levels"]
        statement = (
            update(levels)
            .where(
                and_(
                    levels.c.sku == data.sku,
                    levels.c.location == data.location,
                    # Relative, guarded update: concurrent adjustments all apply, and none
                    # can take stock below what is reserved.
                    levels.c.on_hand + data.delta >= levels.c.reserved,
                )
            )
            .values(on_hand=levels.c.on_hand + data.delta, updated_at=utcnow())
            .returning(levels.c.on_hand, levels.c.reserved)
        )
        async with source.transaction() as connection:
            row = (await connection.execute(statement)).first()
        if row is None:
            raise Invalid(
                [
                    Problem(
                        "stock changed since validation and would go below what is reserved",
                        "delta",
                        STOCK_NOT_NEGATIVE,
                    )
                ]
            )
        result = {"on_hand": row.on_hand, "available": row.on_hand - row.reserved}
        await source.record_effect(action_id, result)
        return result

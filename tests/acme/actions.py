"""Acme's governed actions on its ERP, written against `sources.actions` alone.

`RenameItem` is the README's example of a third-party action. `Unreliable` is an action
whose implementation misbehaves on request (raises, hangs, answers nonsense), so the tests
can show what the gateway does with an estate's broken code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, ClassVar, Literal

from pydantic import Field
from sqlalchemy import column, table, update

from sources.actions import ActionInput, Effect, Plan
from sources.sql import SqlConnector
from sources.words import Names, item

ITEMS = table("items", column("sku"), column("name"))


class RenameItemInput(ActionInput):
    """A new name for one item."""

    sku: str = Field(min_length=1, max_length=32, description="The item's SKU.")
    name: str = Field(min_length=1, max_length=120, description="Its new name.")


class RenameItem:
    """item.rename: give an item a new name in the ERP."""

    kind: ClassVar[str] = "item.rename"
    mutation: ClassVar[str] = "renameItem"
    entity: ClassVar[str] = "InventoryItem"
    summary: ClassVar[str] = "Rename an item in the ERP."
    Input: ClassVar[type[ActionInput]] = RenameItemInput
    pii_fields: ClassVar[frozenset[str]] = frozenset()
    creates: ClassVar[bool] = False

    def target(self, data: RenameItemInput) -> str:
        return data.sku

    def policy_input(self, data: RenameItemInput) -> dict[str, Any]:
        return {}

    def amount(self, data: RenameItemInput) -> Decimal | None:
        return None

    def touched(self, data: RenameItemInput, plan: Plan) -> list[tuple[str, str]]:
        return []

    def headline(
        self, data: Mapping[str, Any], names: Names, planned: Mapping[str, Any]
    ) -> str | None:
        return f"Rename {item(str(data['sku']), names)} to {data['name']}"

    async def plan(self, data: RenameItemInput, source: SqlConnector) -> Plan:
        item = await source.read("InventoryItem", data.sku)
        if item is None:
            return Plan.refused(f"unknown SKU {data.sku}", "sku", "KNOWN_SKU")
        return Plan(item.version, item, {"name": item.data["name"]}, {"name": data.name})

    async def execute(
        self, data: RenameItemInput, plan: Plan, source: SqlConnector, *, action_id: str
    ) -> dict[str, Any]:
        async with source.transaction() as connection:
            await connection.execute(
                update(ITEMS).where(ITEMS.c.sku == data.sku).values(name=data.name)
            )
        result = {"sku": data.sku, "name": data.name}
        await source.record_effect(action_id, result)  # in the same transaction
        return result

    async def find_effect(
        self, data: RenameItemInput, source: SqlConnector, *, action_id: str, based_on: str | None
    ) -> Effect | None:
        result = await source.journaled_effect(action_id)
        return Effect(applied=result is not None, result=result)


class UnreliableInput(ActionInput):
    """How the implementation should misbehave."""

    sku: str = Field(min_length=1, max_length=32)
    mode: str = Field(pattern="^(raise|hang|malformed|ok)$")


class Unreliable(RenameItem):
    """item.unreliable: renames the item, then misbehaves as told; cannot find its effect."""

    kind: ClassVar[str] = "item.unreliable"
    mutation: ClassVar[str] = "unreliableRename"
    summary: ClassVar[str] = "Rename an item, then misbehave as told."
    Input: ClassVar[type[ActionInput]] = UnreliableInput

    async def plan(self, data: Any, source: SqlConnector) -> Plan:
        return await super().plan(RenameItemInput(sku=data.sku, name="half-applied"), source)

    async def execute(self, data: Any, plan: Plan, source: SqlConnector, *, action_id: str) -> Any:
        async with source.transaction() as connection:  # a change that must not survive
            await connection.execute(
                update(ITEMS).where(ITEMS.c.sku == data.sku).values(name="half-applied")
            )
        if data.mode == "raise":
            raise RuntimeError("the implementation broke; customer jane.doe@example.com")
        if data.mode == "hang":
            await asyncio.sleep(3600)
        if data.mode == "malformed":
            return ["not", "a", "result"]
        return {"sku": data.sku}

    async def find_effect(
        self, data: Any, source: SqlConnector, *, action_id: str, based_on: str | None
    ) -> None:
        return None  # it keeps no journal: after a crash nothing can tell


class RenameInStyleInput(RenameItemInput):
    """A rename with a style picked from a fixed set, written as a Literal (GraphQL has none)."""

    style: Literal["upper", "lower"] = "upper"


class RenameInStyle(RenameItem):
    """item.rename_in_style: an action whose Input GraphQL cannot type, refused at start-up."""

    kind: ClassVar[str] = "item.rename_in_style"
    mutation: ClassVar[str] = "renameInStyle"
    Input: ClassVar[type[ActionInput]] = RenameInStyleInput
